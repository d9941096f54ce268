//! Dependencies between jobs: the graph built from every job's `depends_on`,
//! rejected when it has a cycle or names an unknown job, and the readiness of
//! a run given the runs of its upstream jobs for the same schedule time.
//!
//! The graph is checked whenever a job is submitted, so the scheduler only
//! ever plans over an acyclic graph. Everything is ordered by job name, so
//! errors and orders do not depend on the order the jobs were listed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

/// Why a set of jobs does not form a valid dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// Jobs depend on each other in a loop; each job in `path` depends on the
    /// next one, and the last is the first again (`a -> b -> a`).
    #[error("dependency cycle: {} (each job depends on the next)", path.join(" -> "))]
    Cycle { path: Vec<String> },
    /// A job depends on a job that does not exist.
    #[error("job `{job}` depends on `{upstream}`, which is not a known job")]
    UnknownUpstream { job: String, upstream: String },
    /// The same job name was given twice.
    #[error("job `{job}` is listed more than once")]
    DuplicateJob { job: String },
}

/// Jobs and their upstream jobs, known to be acyclic.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    /// Job names, sorted; a job's position is its index everywhere below.
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// Each job's upstream jobs, as listed, without repeats.
    upstream: Vec<Vec<String>>,
    /// Each job's downstream jobs, sorted by name.
    downstream: Vec<Vec<usize>>,
    /// Every job, each after all of its upstream jobs.
    topological_order: Vec<usize>,
}

impl DependencyGraph {
    /// Builds the graph from `(job, its upstream jobs)` pairs, one per job.
    ///
    /// Fails on a job listed twice, on an upstream job that is not listed, and
    /// on a cycle (a job depending on itself is a cycle of one). Cost:
    /// O((jobs + edges) · log jobs).
    pub fn build(jobs: impl IntoIterator<Item = (String, Vec<String>)>) -> Result<DependencyGraph, DagError> {
        let mut jobs: Vec<(String, Vec<String>)> = jobs.into_iter().collect();
        jobs.sort_by(|(left, _), (right, _)| left.cmp(right));
        if let Some(pair) = jobs.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(DagError::DuplicateJob { job: pair[0].0.clone() });
        }
        let index: HashMap<String, usize> =
            jobs.iter().enumerate().map(|(position, (name, _))| (name.clone(), position)).collect();

        let mut names = Vec::with_capacity(jobs.len());
        let mut upstream = Vec::with_capacity(jobs.len());
        let mut upstream_indices = Vec::with_capacity(jobs.len());
        for (job, listed) in jobs {
            let mut unique: Vec<String> = Vec::with_capacity(listed.len());
            let mut indices = Vec::with_capacity(listed.len());
            for name in listed {
                if unique.contains(&name) {
                    continue;
                }
                let Some(&position) = index.get(&name) else {
                    return Err(DagError::UnknownUpstream { job, upstream: name });
                };
                indices.push(position);
                unique.push(name);
            }
            names.push(job);
            upstream.push(unique);
            upstream_indices.push(indices);
        }

        if let Some(cycle) = find_cycle(&upstream_indices) {
            return Err(DagError::Cycle { path: cycle.into_iter().map(|position| names[position].clone()).collect() });
        }
        let mut downstream = vec![Vec::new(); names.len()];
        for (job, indices) in upstream_indices.iter().enumerate() {
            for &up in indices {
                downstream[up].push(job);
            }
        }
        let topological_order = topological_order(&upstream_indices, &downstream);
        Ok(DependencyGraph { names, index, upstream, downstream, topological_order })
    }

    /// The jobs `job` depends on, as listed in its `depends_on`; empty for a
    /// job without dependencies or not in the graph.
    pub fn upstream(&self, job: &str) -> &[String] {
        self.index.get(job).map_or(&[], |&position| &self.upstream[position])
    }

    /// The jobs that depend directly on `job`, sorted by name.
    pub fn downstream(&self, job: &str) -> Vec<&str> {
        self.index.get(job).map_or_else(Vec::new, |&position| {
            self.downstream[position].iter().map(|&down| self.names[down].as_str()).collect()
        })
    }

    /// Every job, each one after all of its upstream jobs; among jobs that
    /// could go in either order, by name.
    pub fn topological_order(&self) -> Vec<&str> {
        self.topological_order.iter().map(|&position| self.names[position].as_str()).collect()
    }
}

/// A cycle in the graph, as job indices where each depends on the next and
/// the last equals the first; the first one met by a depth-first search from
/// the jobs in index order.
fn find_cycle(upstream: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Visit {
        New,
        OnPath,
        Done,
    }
    let mut visit = vec![Visit::New; upstream.len()];
    for root in 0..upstream.len() {
        if visit[root] != Visit::New {
            continue;
        }
        // The current path, each job with the position of the next upstream edge to follow.
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        visit[root] = Visit::OnPath;
        while let Some((job, next_edge)) = path.last_mut() {
            let job = *job;
            let Some(&up) = upstream[job].get(*next_edge) else {
                visit[job] = Visit::Done;
                path.pop();
                continue;
            };
            *next_edge += 1;
            match visit[up] {
                Visit::New => {
                    visit[up] = Visit::OnPath;
                    path.push((up, 0));
                }
                Visit::OnPath => {
                    let start = path.iter().position(|&(on_path, _)| on_path == up).expect("a job on the path");
                    let mut cycle: Vec<usize> = path[start..].iter().map(|&(on_path, _)| on_path).collect();
                    cycle.push(up);
                    return Some(cycle);
                }
                Visit::Done => {}
            }
        }
    }
    None
}

/// Kahn's algorithm, taking the smallest index among ready jobs first.
fn topological_order(upstream: &[Vec<usize>], downstream: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting_on: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..upstream.len()).filter(|&job| waiting_on[job] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(upstream.len());
    while let Some(Reverse(job)) = ready.pop() {
        order.push(job);
        for &down in &downstream[job] {
            waiting_on[down] -= 1;
            if waiting_on[down] == 0 {
                ready.push(Reverse(down));
            }
        }
    }
    order
}

/// What a job does when an upstream run for the same schedule time failed or
/// was skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamFailurePolicy {
    /// Keep the run pending until the upstream run is retried and succeeds.
    #[default]
    Block,
    /// Skip the run (it ends as skipped), which in turn propagates downstream.
    Skip,
}

/// Where the upstream job's run for the same schedule time stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamState {
    Succeeded,
    Failed,
    /// Pending, running or paused.
    Active,
    /// Skipped by its own overlap, misfire or upstream policy.
    Skipped,
}

/// Whether a run may start, given its upstream runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// Every upstream run succeeded (or there is no upstream job).
    Ready,
    /// No upstream run failed, but these have not finished, or not started.
    Waiting { on: Vec<String> },
    /// These upstream runs failed or were skipped, and the policy is to block.
    Blocked { failed: Vec<String> },
    /// These upstream runs failed or were skipped, and the policy is to skip.
    Skip { failed: Vec<String> },
}

/// Decides whether a run may start, from the state of each upstream job's run
/// for the same schedule time (`None` when that run does not exist yet).
///
/// A failed or skipped upstream run decides at once, even while other
/// upstream runs are still active: the run can no longer have every upstream
/// succeed until that one is retried.
pub fn readiness(upstream_states: &[(String, Option<UpstreamState>)], policy: UpstreamFailurePolicy) -> Readiness {
    let names_where = |wanted: fn(Option<UpstreamState>) -> bool| -> Vec<String> {
        upstream_states.iter().filter(|(_, state)| wanted(*state)).map(|(job, _)| job.clone()).collect()
    };
    let failed = names_where(|state| matches!(state, Some(UpstreamState::Failed | UpstreamState::Skipped)));
    if !failed.is_empty() {
        return match policy {
            UpstreamFailurePolicy::Block => Readiness::Blocked { failed },
            UpstreamFailurePolicy::Skip => Readiness::Skip { failed },
        };
    }
    let unfinished = names_where(|state| matches!(state, None | Some(UpstreamState::Active)));
    if unfinished.is_empty() { Readiness::Ready } else { Readiness::Waiting { on: unfinished } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(edges: &[(&str, &[&str])]) -> Result<DependencyGraph, DagError> {
        DependencyGraph::build(
            edges.iter().map(|(job, upstream)| (job.to_string(), upstream.iter().map(|up| up.to_string()).collect())),
        )
    }

    #[test]
    fn answers_upstream_downstream_and_order() {
        let graph =
            graph(&[("report", &["orders", "customers"]), ("orders", &[]), ("customers", &[]), ("mail", &["report"])])
                .unwrap();
        assert_eq!(graph.upstream("report"), ["orders", "customers"]);
        assert!(graph.upstream("orders").is_empty());
        assert!(graph.upstream("nope").is_empty());
        assert_eq!(graph.downstream("orders"), ["report"]);
        assert_eq!(graph.downstream("report"), ["mail"]);
        assert!(graph.downstream("mail").is_empty());
        assert_eq!(graph.topological_order(), ["customers", "orders", "report", "mail"]);
    }

    #[test]
    fn reports_the_cycle_in_order() {
        let error = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]).unwrap_err();
        assert_eq!(error, DagError::Cycle { path: vec!["a".into(), "b".into(), "c".into(), "a".into()] });
        assert_eq!(error.to_string(), "dependency cycle: a -> b -> c -> a (each job depends on the next)");
        let itself = graph(&[("a", &["a"])]).unwrap_err();
        assert_eq!(itself, DagError::Cycle { path: vec!["a".into(), "a".into()] });
    }

    #[test]
    fn rejects_unknown_upstream_and_duplicates() {
        let unknown = graph(&[("a", &["ghost"])]).unwrap_err();
        assert_eq!(unknown, DagError::UnknownUpstream { job: "a".into(), upstream: "ghost".into() });
        assert_eq!(unknown.to_string(), "job `a` depends on `ghost`, which is not a known job");
        assert_eq!(graph(&[("a", &[]), ("a", &[])]).unwrap_err(), DagError::DuplicateJob { job: "a".into() });
    }

    #[test]
    fn a_repeated_upstream_counts_once() {
        let graph = graph(&[("a", &["b", "b"]), ("b", &[])]).unwrap();
        assert_eq!(graph.upstream("a"), ["b"]);
        assert_eq!(graph.downstream("b"), ["a"]);
    }

    fn states(entries: &[(&str, Option<UpstreamState>)]) -> Vec<(String, Option<UpstreamState>)> {
        entries.iter().map(|(job, state)| (job.to_string(), *state)).collect()
    }

    #[test]
    fn readiness_by_example() {
        use UpstreamState::*;
        let block = UpstreamFailurePolicy::Block;
        assert_eq!(readiness(&[], block), Readiness::Ready);
        assert_eq!(readiness(&states(&[("a", Some(Succeeded)), ("b", Some(Succeeded))]), block), Readiness::Ready);
        assert_eq!(
            readiness(&states(&[("a", Some(Succeeded)), ("b", Some(Active)), ("c", None)]), block),
            Readiness::Waiting { on: vec!["b".into(), "c".into()] }
        );
        let one_failed = states(&[("a", Some(Active)), ("b", Some(Failed)), ("c", Some(Skipped))]);
        assert_eq!(readiness(&one_failed, block), Readiness::Blocked { failed: vec!["b".into(), "c".into()] });
        assert_eq!(
            readiness(&one_failed, UpstreamFailurePolicy::Skip),
            Readiness::Skip { failed: vec!["b".into(), "c".into()] }
        );
    }

    /// Random graphs over `n` jobs as adjacency bits: `edges[i][j]` means job i depends on job j.
    fn any_graph() -> impl Strategy<Value = Vec<Vec<bool>>> {
        (1usize..9).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(prop::bool::weighted(0.2), n), n))
    }

    fn name(job: usize) -> String {
        format!("job{job}")
    }

    /// The `(job, upstream jobs)` pairs of a graph given as adjacency bits.
    fn jobs_from_bits(edges: &[Vec<bool>]) -> Vec<(String, Vec<String>)> {
        let upstream =
            |row: &[bool]| row.iter().enumerate().filter(|(_, edge)| **edge).map(|(up, _)| name(up)).collect();
        edges.iter().enumerate().map(|(job, row)| (name(job), upstream(row))).collect()
    }

    /// Brute force: a cycle exists iff some job reaches itself through the transitive closure.
    fn has_cycle(edges: &[Vec<bool>]) -> bool {
        let n = edges.len();
        let mut reach = edges.to_vec();
        for via in 0..n {
            for from in 0..n {
                for to in 0..n {
                    reach[from][to] |= reach[from][via] && reach[via][to];
                }
            }
        }
        (0..n).any(|job| reach[job][job])
    }

    fn any_states() -> impl Strategy<Value = Vec<(String, Option<UpstreamState>)>> {
        let state = prop::option::of(prop::sample::select(
            &[UpstreamState::Succeeded, UpstreamState::Failed, UpstreamState::Active, UpstreamState::Skipped][..],
        ));
        prop::collection::vec(state, 0..6)
            .prop_map(|states| states.into_iter().enumerate().map(|(job, state)| (name(job), state)).collect())
    }

    proptest! {
        #[test]
        fn cycle_detection_agrees_with_reachability(edges in any_graph()) {
            // Listed backwards: the answer does not depend on the order of the jobs.
            match DependencyGraph::build(jobs_from_bits(&edges).into_iter().rev()) {
                Ok(graph) => {
                    prop_assert!(!has_cycle(&edges));
                    let order = graph.topological_order();
                    prop_assert_eq!(order.len(), edges.len());
                    let position: HashMap<&str, usize> = order.iter().enumerate().map(|(at, job)| (*job, at)).collect();
                    for (job, row) in edges.iter().enumerate() {
                        for (up, edge) in row.iter().enumerate() {
                            let job_name = name(job);
                            let up_name = name(up);
                            prop_assert_eq!(*edge, graph.upstream(&job_name).contains(&up_name));
                            prop_assert_eq!(*edge, graph.downstream(&up_name).contains(&job_name.as_str()));
                            if *edge {
                                prop_assert!(position[up_name.as_str()] < position[job_name.as_str()]);
                            }
                        }
                    }
                }
                Err(DagError::Cycle { path }) => {
                    prop_assert!(has_cycle(&edges));
                    prop_assert!(path.len() >= 2);
                    prop_assert_eq!(path.first(), path.last());
                    let distinct: std::collections::HashSet<&String> = path[1..].iter().collect();
                    prop_assert_eq!(distinct.len(), path.len() - 1, "a simple cycle: {:?}", path);
                    let index = |job: &String| job.trim_start_matches("job").parse::<usize>().unwrap();
                    for pair in path.windows(2) {
                        prop_assert!(edges[index(&pair[0])][index(&pair[1])], "{} depends on {}", pair[0], pair[1]);
                    }
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }

        #[test]
        fn an_unknown_upstream_is_reported_before_any_cycle(edges in any_graph(), ghost_of in 0usize..9) {
            let n = edges.len();
            let mut jobs = jobs_from_bits(&edges);
            jobs[ghost_of % n].1.push("ghost".into());
            let expected = DagError::UnknownUpstream { job: name(ghost_of % n), upstream: "ghost".into() };
            prop_assert_eq!(DependencyGraph::build(jobs).unwrap_err(), expected);
        }

        #[test]
        fn readiness_is_ready_iff_every_upstream_succeeded(
            upstream in any_states(),
            policy in prop::sample::select(&[UpstreamFailurePolicy::Block, UpstreamFailurePolicy::Skip][..]),
        ) {
            let names_in = |wanted: &[Option<UpstreamState>]| -> Vec<String> {
                upstream.iter().filter(|(_, state)| wanted.contains(state)).map(|(job, _)| job.clone()).collect()
            };
            let failed = names_in(&[Some(UpstreamState::Failed), Some(UpstreamState::Skipped)]);
            let unfinished = names_in(&[None, Some(UpstreamState::Active)]);
            let all_succeeded = upstream.iter().all(|(_, state)| *state == Some(UpstreamState::Succeeded));
            let readiness = readiness(&upstream, policy);
            prop_assert_eq!(readiness == Readiness::Ready, all_succeeded);
            let expected = match (failed.is_empty(), unfinished.is_empty(), policy) {
                (true, true, _) => Readiness::Ready,
                (true, false, _) => Readiness::Waiting { on: unfinished },
                (false, _, UpstreamFailurePolicy::Block) => Readiness::Blocked { failed },
                (false, _, UpstreamFailurePolicy::Skip) => Readiness::Skip { failed },
            };
            prop_assert_eq!(readiness, expected);
        }
    }
}
