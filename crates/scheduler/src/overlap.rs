//! What a new run of a job does while earlier runs of the same job are still
//! active (pending, running or paused): the job's `overlap` policy.

use serde::{Deserialize, Serialize};

/// A job's choice for a run that becomes due while another is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Drop the new run: the active one covers it.
    #[default]
    Skip,
    /// Keep the new run pending until the active ones finish.
    Queue,
    /// Cancel the active runs, then start the new one.
    CancelPrevious,
    /// Start the new run alongside the active ones.
    Allow,
}

/// What the scheduler does with a run that has just become due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverlapDecision {
    /// Start it now.
    Start,
    /// Do not create it; the schedule time is recorded as skipped.
    Skip,
    /// Create it pending; it starts once no earlier run of the job is active.
    Queue,
    /// Cancel every active run of the job, then start it.
    CancelPreviousThenStart,
}

/// Applies `policy` to a due run, given how many runs of the same job are
/// active. With none active every policy starts the run.
pub fn decide(policy: OverlapPolicy, active_runs_of_job: usize) -> OverlapDecision {
    if active_runs_of_job == 0 {
        return OverlapDecision::Start;
    }
    match policy {
        OverlapPolicy::Skip => OverlapDecision::Skip,
        OverlapPolicy::Queue => OverlapDecision::Queue,
        OverlapPolicy::CancelPrevious => OverlapDecision::CancelPreviousThenStart,
        OverlapPolicy::Allow => OverlapDecision::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: [OverlapPolicy; 4] =
        [OverlapPolicy::Skip, OverlapPolicy::Queue, OverlapPolicy::CancelPrevious, OverlapPolicy::Allow];

    #[test]
    fn every_policy_starts_when_nothing_is_active() {
        for policy in POLICIES {
            assert_eq!(decide(policy, 0), OverlapDecision::Start, "{policy:?}");
        }
    }

    #[test]
    fn each_policy_has_its_own_answer_when_runs_are_active() {
        for active in [1, 3] {
            assert_eq!(decide(OverlapPolicy::Skip, active), OverlapDecision::Skip);
            assert_eq!(decide(OverlapPolicy::Queue, active), OverlapDecision::Queue);
            assert_eq!(decide(OverlapPolicy::CancelPrevious, active), OverlapDecision::CancelPreviousThenStart);
            assert_eq!(decide(OverlapPolicy::Allow, active), OverlapDecision::Start);
        }
    }

    #[test]
    fn policies_are_written_in_snake_case() {
        #[derive(Deserialize)]
        struct Table {
            overlap: OverlapPolicy,
        }
        let names = ["skip", "queue", "cancel_previous", "allow"];
        for (name, policy) in names.into_iter().zip(POLICIES) {
            let table: Table = toml::from_str(&format!("overlap = \"{name}\"")).unwrap();
            assert_eq!(table.overlap, policy);
        }
        assert!(toml::from_str::<Table>("overlap = \"CancelPrevious\"").is_err());
    }
}
