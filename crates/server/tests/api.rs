//! The REST API and the CLI client against a real `haul server` on an
//! ephemeral port: jobs submitted as TOML and JSON (and refused with located
//! errors), runs triggered, followed, paused, resumed, cancelled, retried and
//! backfilled, the OpenAPI document, the metrics and the probes.

mod common {
    pub mod server;
}

use std::process::Output;

use common::server::{Server, csv, files_job, output_ids};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn ids(runs: &Value) -> Vec<&str> {
    runs.as_array().unwrap().iter().map(|run| run["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn jobs_are_created_updated_shown_and_deleted_from_toml_and_json() {
    let server = Server::start();
    let spec = files_job(&server, "orders", "");

    let (status, created) = server.put_job(&spec, "application/toml").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["name"].as_str(), created["version"].as_u64()), (Some("orders"), Some(1)));
    assert_eq!(created["spec"], spec.as_str());
    let (status, updated) = server.put_job(&spec.replace("batch_size = 100", "batch_size = 50"), "text/plain").await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);

    let as_json = json!({
        "name": "customers",
        "source": { "type": "file", "path": server.path("in/customers/*.csv") },
        "sink": { "type": "file", "path": server.path("out/customers"), "format": "jsonl" },
    });
    let (status, created) = server.put_job(&as_json.to_string(), "application/json").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["spec"].as_str().unwrap().contains("[source]"), "stored as TOML: {created}");

    let (status, jobs) = server.get("/api/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let mut names: Vec<&str> = jobs.as_array().unwrap().iter().map(|job| job["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["customers", "orders"]);
    assert!(jobs[0].get("spec").is_none(), "the list leaves specs out: {jobs}");

    let (status, shown) = server.get("/api/v1/jobs/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown["spec"].as_str().unwrap().contains("batch_size = 50"), "{shown}");
    let (status, disabled) = server.post("/api/v1/jobs/orders/disable", None).await;
    assert_eq!((status, &disabled["enabled"]), (StatusCode::OK, &json!(false)));
    let (status, enabled) = server.post("/api/v1/jobs/orders/enable", None).await;
    assert_eq!((status, &enabled["enabled"]), (StatusCode::OK, &json!(true)));

    let (status, missing) = server.get("/api/v1/jobs/nothing").await;
    assert_eq!((status, missing), (StatusCode::NOT_FOUND, json!({ "error": "job nothing not found" })));
    let (status, error) = server.post("/api/v1/jobs/nothing/runs", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    let (status, deleted) = server.delete("/api/v1/jobs/customers").await;
    assert_eq!((status, deleted), (StatusCode::NO_CONTENT, Value::Null));
    let (_, jobs) = server.get("/api/v1/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_jobs_are_refused_with_their_location() {
    let server = Server::start();
    let spec = files_job(&server, "orders", "");

    let (status, error) = server.put_job(&spec.replace("parallelism", "paralelism"), "application/toml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(message.contains(":2:1: unknown field `paralelism`"), "{message}");

    let unknown_type = spec.replacen("type = \"file\"", "type = \"fiel\"", 1);
    let (status, error) = server.put_job(&unknown_type, "application/toml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("unknown source type `fiel`"), "{error}");

    let (status, error) = server.put_job(&spec.replace("name = \"orders\"\n", ""), "application/toml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("needs a `name`"), "{error}");

    let (status, error) = server.put_job("{\"name\": ", "application/json").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("invalid JSON"), "{error}");

    let (status, error) = server.put_job(&spec, "application/xml").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{error}");
    assert!(error["error"].as_str().unwrap().contains("`application/xml`"), "{error}");

    // Dependencies must name jobs and keep them a DAG.
    let (status, error) =
        server.put_job(&files_job(&server, "report", "depends_on = [\"nowhere\"]"), "application/toml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("`nowhere`, which is not a known job"), "{error}");
    server.apply(&spec).await;
    server.apply(&files_job(&server, "report", "depends_on = [\"orders\"]")).await;
    let (status, error) =
        server.put_job(&files_job(&server, "orders", "depends_on = [\"report\"]"), "application/toml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("cycle"), "{error}");
    let (status, error) = server.delete("/api/v1/jobs/orders").await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(error["error"].as_str().unwrap().contains("dependency of report"), "{error}");
    let (_, orders) = server.get("/api/v1/jobs/orders").await;
    assert_eq!(orders["version"], 1, "a refused update changes nothing");
}

#[tokio::test]
async fn a_triggered_run_succeeds_with_its_shards_counters_and_events() {
    let server = Server::start();
    server.write("in/orders/a.csv", &csv(1, 300));
    server.write("in/orders/b.csv", &csv(301, 200));
    server.apply(&files_job(&server, "orders", "")).await;

    let (status, queued) = server.post("/api/v1/jobs/orders/runs", Some(json!({ "priority": 7 }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!((queued["job"].as_str(), queued["trigger"].as_str()), (Some("orders"), Some("manual")));
    assert_eq!(queued["priority"], 7);
    let id = queued["id"].as_str().unwrap();

    let detail = server.wait_for_run(id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", server.logs());
    assert_eq!(output_ids(&server.path("out/orders")), (1..=500).collect::<Vec<_>>());
    assert_eq!(detail["totals"]["records_read"], 500, "{detail}");
    assert_eq!(detail["totals"]["records_written"], 500, "{detail}");
    let shards = detail["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "one shard per file: {detail}");
    let written: u64 = shards.iter().map(|shard| shard["counters"]["records_written"].as_u64().unwrap()).sum();
    assert_eq!(written, 500);
    assert!(shards.iter().all(|shard| shard["state"] == "succeeded" && shard["error"].is_null()), "{detail}");
    let kinds: Vec<&str> = detail["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"running") && kinds.last() == Some(&"succeeded"), "{kinds:?}");
    assert!(detail["started_at"].is_string() && detail["finished_at"].is_string(), "{detail}");

    let shard_id = shards[0]["id"].as_str().unwrap();
    let encoded: String = url_segment(shard_id);
    let (status, shard) = server.get(&format!("/api/v1/runs/{id}/shards/{encoded}")).await;
    assert_eq!(status, StatusCode::OK, "{shard}");
    assert_eq!(shard, shards[0]);
    let (status, _) = server.get(&format!("/api/v1/runs/{id}/shards/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/api/v1/runs/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A finished run cannot be paused, resumed or cancelled, nor retried when it did not fail.
    for action in ["pause", "resume", "cancel", "retry"] {
        let (status, error) = server.post(&format!("/api/v1/runs/{id}/{action}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {error}");
        assert!(error["error"].is_string(), "{error}");
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn url_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn runs_pause_resume_and_cancel_and_refuse_illegal_transitions() {
    let server = Server::start();
    server.write("in/slow/a.csv", &csv(1, 20_000));
    server
        .apply(&files_job(&server, "slow", "checkpoint_interval = \"100ms\"\n[rate_limit]\nrecords_per_second = 1000"))
        .await;
    let id = server.trigger("slow").await;
    server.wait_for_run(&id, &["running"]).await;

    let (status, error) = server.post(&format!("/api/v1/runs/{id}/resume"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(error["error"].as_str().unwrap().contains("not paused"), "{error}");

    let (status, paused) = server.post(&format!("/api/v1/runs/{id}/pause"), None).await;
    assert_eq!((status, paused["state"].as_str()), (StatusCode::OK, Some("paused")), "{paused}");
    let (status, error) = server.post(&format!("/api/v1/runs/{id}/pause"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");

    let (status, resumed) = server.post(&format!("/api/v1/runs/{id}/resume"), None).await;
    assert_eq!((status, resumed["state"].as_str()), (StatusCode::OK, Some("running")), "{resumed}");
    let (status, cancelled) = server.post(&format!("/api/v1/runs/{id}/cancel"), None).await;
    assert_eq!((status, cancelled["state"].as_str()), (StatusCode::OK, Some("cancelled")), "{cancelled}");
    let (status, error) = server.post(&format!("/api/v1/runs/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");

    let detail = server.wait_for_run(&id, &["cancelled"]).await;
    let kinds: Vec<&str> = detail["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"paused") && kinds.contains(&"cancelled"), "{kinds:?}");
    let reasons: Vec<&str> =
        detail["events"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"paused by request") && reasons.contains(&"resumed by request"), "{reasons:?}");
}

#[tokio::test]
async fn a_failed_run_is_retried_after_its_input_is_fixed() {
    let server = Server::start();
    // The third line has a field too many; no rejection is tolerated.
    server.write("in/strict/a.csv", "id,name\n1,a\n2,b\n3,c,\n4,d\n");
    server.apply(&files_job(&server, "strict", "error_limit = 0")).await;
    let id = server.trigger("strict").await;
    let failed = server.wait_for_run(&id, &["failed", "succeeded"]).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let (status, listed) = server.get("/api/v1/runs?job=strict&state=failed").await;
    assert_eq!((status, ids(&listed)), (StatusCode::OK, vec![id.as_str()]));

    // Retrying only the failed work resumes from the checkpoints: the
    // rejected record stays in the dead letters and still counts.
    let (status, retried) = server.post(&format!("/api/v1/runs/{id}/retry?whole=false"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["id"], id.as_str(), "the same run goes on");
    let detail = server.wait_for_run(&id, &["succeeded", "failed"]).await;
    assert_eq!((detail["state"].as_str(), detail["attempt"].as_u64()), (Some("failed"), Some(2)), "{detail}");
    assert!(detail["message"].as_str().unwrap().contains("1 records rejected out of 4 read"), "{detail}");

    // A whole retry is a new run of the same request: it reads the fixed input again.
    server.write("in/strict/a.csv", "id,name\n1,a\n2,b\n3,c\n4,d\n");
    let (status, again) = server.post(&format!("/api/v1/runs/{id}/retry?whole=true"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], id.as_str());
    let detail = server.wait_for_run(again["id"].as_str().unwrap(), &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", server.logs());
    assert_eq!(detail["totals"]["records_written"], 4, "{detail}");
    let mut ids = output_ids(&server.path("out/strict"));
    ids.dedup();
    assert_eq!(ids, [1, 2, 3, 4], "the first run's parts hold 1, 2 and 4; the new run's all four");
    let (status, error) = server.post(&format!("/api/v1/runs/{id}/retry?whole=maybe"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"].as_str().unwrap().contains("whole"), "{error}");
}

#[tokio::test]
async fn a_backfill_queues_one_run_per_interval_once_and_runs_filter() {
    let server = Server::start();
    server.apply(&files_job(&server, "daily", "")).await;
    let body = json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-04T00:00:00Z", "every": "1d", "concurrency": 2 });

    let (status, runs) = server.post("/api/v1/jobs/daily/backfill", Some(body.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{runs}");
    let runs = runs.as_array().unwrap().clone();
    let days: Vec<&str> = runs.iter().map(|run| run["scheduled_for"].as_str().unwrap()).collect();
    assert_eq!(days.len(), 3, "{runs:?}");
    assert!(days[0].starts_with("2026-01-01") && days[2].starts_with("2026-01-03"), "{days:?}");
    assert!(runs.iter().all(|run| run["trigger"] == "backfill"), "{runs:?}");
    assert_eq!(runs[1]["params"]["range"]["from"], "2026-01-02T00:00:00+00:00");
    let (_, again) = server.post("/api/v1/jobs/daily/backfill", Some(body)).await;
    assert_eq!(ids(&again), ids(&Value::Array(runs.clone())), "submitting the same backfill returns the same runs");

    let (status, error) = server
        .post(
            "/api/v1/jobs/daily/backfill",
            Some(json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"].as_str().unwrap().contains("`every`"), "{error}");
    let (status, error) = server
        .post(
            "/api/v1/jobs/daily/backfill",
            Some(json!({ "from": "2026-01-01T00:00:00Z", "to": "later", "every": "1d" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");

    let manual = server.trigger("daily").await;
    let (_, backfills) = server.get("/api/v1/runs?job=daily&trigger=backfill").await;
    assert_eq!(backfills.as_array().unwrap().len(), 3, "{backfills}");
    let (_, manuals) = server.get("/api/v1/runs?trigger=manual").await;
    assert_eq!(ids(&manuals), [manual.as_str()]);
    let (_, limited) = server.get("/api/v1/runs?job=daily&limit=2").await;
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let (_, all_states) =
        server.get("/api/v1/runs?state=pending,running&state=succeeded,failed&state=paused&state=cancelled").await;
    assert_eq!(all_states.as_array().unwrap().len(), 4, "{all_states}");
    let (_, none) = server.get("/api/v1/runs?job=orders").await;
    assert_eq!(none, json!([]));
    let (status, error) = server.get("/api/v1/runs?state=done").await;
    assert_eq!(
        (status, error),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": "`state`: unknown run state `done`" }))
    );
}

#[tokio::test]
async fn the_openapi_document_metrics_and_probes_answer() {
    let server = Server::start();
    let (status, document) = server.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/jobs", &["get", "put"][..]),
        ("/api/v1/jobs/{name}", &["get", "delete"]),
        ("/api/v1/jobs/{name}/enable", &["post"]),
        ("/api/v1/jobs/{name}/disable", &["post"]),
        ("/api/v1/jobs/{name}/runs", &["post"]),
        ("/api/v1/jobs/{name}/backfill", &["post"]),
        ("/api/v1/runs", &["get"]),
        ("/api/v1/runs/{id}", &["get"]),
        ("/api/v1/runs/{id}/shards/{shard}", &["get"]),
        ("/api/v1/runs/{id}/pause", &["post"]),
        ("/api/v1/runs/{id}/resume", &["post"]),
        ("/api/v1/runs/{id}/cancel", &["post"]),
        ("/api/v1/runs/{id}/retry", &["post"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(paths.get(path).and_then(|item| item.get(method)).is_some(), "{method} {path} missing");
        }
    }
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in ["Job", "JobDetail", "Run", "RunDetail", "Shard", "Event", "Counters", "ErrorBody", "BackfillBody"] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    let states = &schemas["Run"]["properties"]["state"]["enum"];
    assert_eq!(states, &json!(["pending", "running", "paused", "succeeded", "failed", "cancelled"]));

    // One run, so that run, shard, record and lease series exist.
    server.write("in/metered/a.csv", &csv(1, 3));
    server.apply(&files_job(&server, "metered", "")).await;
    let id = server.trigger("metered").await;
    server.wait_for_run(&id, &["succeeded"]).await;
    let (status, metrics) = server.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.lines().any(|line| line.starts_with("haul_worker_slots 4")), "{metrics}");
    for series in [
        "haul_runs_finished_total{job=\"metered\",state=\"succeeded\"} 1",
        "haul_shards_finished_total{job=\"metered\",outcome=\"succeeded\"} 1",
        "haul_records_written_total{job=\"metered\"} 3",
        "haul_runs{state=\"running\"}",
        "haul_shards_waiting",
    ] {
        assert!(metrics.lines().any(|line| line.starts_with(series)), "{series} missing from\n{metrics}");
    }
    assert_eq!(server.get_text("/healthz").await, (StatusCode::OK, "ok".to_string()));
    assert_eq!(server.get_text("/readyz").await, (StatusCode::OK, "ready".to_string()));
}

#[tokio::test]
async fn the_cli_client_applies_runs_lists_shows_and_watches() {
    let server = Server::start();
    server.write("in/cli/a.csv", &csv(1, 100));
    server.write("job.toml", &files_job(&server, "cli", ""));
    let json_job = json!({
        "name": "cli-json",
        "source": { "type": "file", "path": server.path("in/cli/*.csv") },
        "sink": { "type": "file", "path": server.path("out/cli-json"), "format": "jsonl" },
    });
    server.write("job.json", &json_job.to_string());

    let applied = server.haul(&["jobs", "apply", "-f", "job.toml"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert_eq!(stdout(&applied), "job cli created (version 1)\n");
    let reapplied = server.haul(&["jobs", "apply", "-f", "job.toml"]);
    assert_eq!(stdout(&reapplied), "job cli updated (version 1)\n", "the same spec again changes nothing");
    let changed =
        format!("{}\n# a comment changes the spec\n", std::fs::read_to_string(server.path("job.toml")).unwrap());
    server.write("job.toml", &changed);
    server.write("job.toml", &files_job(&server, "cli", "").replace("batch_size = 100", "batch_size = 50"));
    let reapplied = server.haul(&["jobs", "apply", "-f", "job.toml"]);
    assert_eq!(stdout(&reapplied), "job cli updated (version 2)\n");
    let applied = server.haul(&["jobs", "apply", "--file", "job.json", "--output", "json"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let job: Value = serde_json::from_str(&stdout(&applied)).unwrap();
    assert_eq!(job["name"], "cli-json");

    let listed = stdout(&server.haul(&["jobs", "list"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines.len() == 3, "{listed}");
    assert!(lines[1].starts_with("cli ") && lines[2].starts_with("cli-json "), "{listed}");

    let triggered = server.haul(&["jobs", "run", "cli", "-o", "json"]);
    assert!(triggered.status.success(), "{}", stderr(&triggered));
    let run: Value = serde_json::from_str(&stdout(&triggered)).unwrap();
    let id = run["id"].as_str().unwrap();

    let watched = server.haul(&["runs", "watch", id]);
    assert!(watched.status.success(), "{}{}", stdout(&watched), stderr(&watched));
    let text = stdout(&watched);
    assert!(text.lines().last().unwrap().contains("succeeded, 1/1 shards done, 100 read, 100 written"), "{text}");

    let listed = server.haul(&["runs", "list", "--job", "cli", "--state", "succeeded", "--output", "json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let runs: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(ids(&runs), [id]);
    let table = stdout(&server.haul(&["runs", "list"]));
    assert!(table.starts_with("ID") && table.contains(id), "{table}");

    let shown = server.haul(&["runs", "show", id]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(text.starts_with(&format!("run {id} of job cli\n  state: succeeded")), "{text}");
    assert!(text.contains("records: 100 read, 100 written, 0 rejected"), "{text}");
    assert!(text.contains("SHARD") && text.contains("REASON"), "{text}");

    let backfilled =
        server.haul(&["backfill", "cli", "--from", "2026-01-01", "--to", "2026-01-03T00:00:00Z", "--every", "1d"]);
    assert!(backfilled.status.success(), "{}", stderr(&backfilled));
    assert!(stdout(&backfilled).ends_with("queued 2 runs of job cli\n"), "{}", stdout(&backfilled));

    let missing = server.haul(&["runs", "show", "nothing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing), "error: run nothing not found\n");
    let illegal = server.haul(&["runs", "pause", id]);
    assert!(!illegal.status.success());
    assert!(stderr(&illegal).starts_with("error: "), "{}", stderr(&illegal));
    let unreachable = server.haul(&["jobs", "list", "--server", "http://127.0.0.1:9"]);
    assert!(
        stderr(&unreachable).starts_with("error: cannot reach the haul server at http://127.0.0.1:9/"),
        "{}",
        stderr(&unreachable)
    );
}
