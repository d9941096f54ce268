#!/usr/bin/env python3
"""haul scheduler benchmark: the overhead of the embedded server per shard,
and the latency from a cron tick to the start of a run.

What it measures, in one run, with the release binary:

  shards     10,000 tiny shards (one file of one record each, read by the
             `file` source, written to stdout) through `haul server`:
             the time from the API call that triggers the run to the run's
             end, both stamped by the store (`created_at`, `finished_at`).
             While the run goes, the job's run list is polled every 50 ms;
             the full run detail (every shard and event) is read once, at
             the end, to check the counts.
             The same job run by `haul run` (no server, no dispatcher) is
             timed side by side: the ratio is the platform's overhead.
  cron       a job with `cron = "* * * * * *"` (every second) for --cron-seconds:
             per run, the delay from its schedule time to the run starting
             (`started_at`, planned and executing) and to its shard being
             claimed by a worker slot (the first record is read right after);
             p50 / p99 / max over the runs.

Every figure is checked: the runs must succeed, with 10,000 records read and
written (or one per cron run). Peak RSS of the server from /proc.
Targets (issue): at least 2,000 shards/s; p99 tick-to-start at most 50 ms.
The `## Scheduler` section of bench/RESULTS.md is replaced (or appended).

Usage: python3 bench/scheduler.py [--haul PATH] [--shards N] [--slots N]
                                  [--cron-seconds N] [--no-results]
Standard library only.
"""

from __future__ import annotations

import os
import sys

# This folder holds copy.py and http.py, which would shadow the standard
# library's `copy` and `http` (which urllib.request imports): search it after
# the standard library, where benchlib is still found.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

from benchlib import DEFAULT_HAUL, RESULTS, logger, machine, write_results  # noqa: E402

START = "## Scheduler"
log = logger("[scheduler] ", sys.stderr)


class Server:
    """`haul server` on a free port with its state in `work/state`."""

    def __init__(self, haul: Path, work: Path, slots: int):
        self.process = subprocess.Popen(
            [str(haul), "server", "--listen", "127.0.0.1:0", "--slots", str(slots), "--state-dir", str(work / "state")],
            cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise SystemExit(f"haul server did not start: {line}")
        self.address = match.group(1)

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(self.address + path, data=body, method=method,
                                         headers={"content-type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def wait_run(self, job: str, run_id: str, timeout: float = 600) -> dict:
        """Waits for the run to end, then returns its detail. While it runs,
        the job's run list is polled (what a client waiting for a run asks);
        the detail, with every shard and event, is read once at the end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.call("GET", f"/api/v1/runs?job={job}")
            state = next((run["state"] for run in runs if run["id"] == run_id), None)
            if state in ("succeeded", "failed", "cancelled"):
                return self.call("GET", f"/api/v1/runs/{run_id}")
            time.sleep(0.05)
        raise SystemExit(f"run {run_id} did not end in {timeout}s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def tiny_files(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:06}.jsonl").write_text(f'{{"id":{i}}}\n')


def job_text(name: str, folder: Path, parallelism: int, extra: str = "") -> str:
    return (f'name = "{name}"\nparallelism = {parallelism}\n{extra}\n'
            f'[source]\ntype = "file"\npath = "{folder}/*.jsonl"\n\n[sink]\ntype = "stdout"\n')


def bench_shards(haul: Path, work: Path, shards: int, slots: int) -> dict:
    folder = work / "tiny"
    log(f"writing {shards} tiny files")
    tiny_files(folder, shards)
    spec = job_text("tiny", folder, slots)

    # Side by side: the same job through `haul run` in this process.
    job_file = work / "tiny.toml"
    job_file.write_text(spec)
    log("haul run (no server)")
    started = time.monotonic()
    subprocess.run([str(haul), "run", str(job_file), "--progress", "none", "--state-dir", str(work / "local")],
                   cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local_s = time.monotonic() - started

    log("haul server")
    server = Server(haul, work, slots)
    try:
        server.call("PUT", "/api/v1/jobs", spec.encode(), "application/toml")
        run = server.call("POST", "/api/v1/jobs/tiny/runs", b"{}")
        detail = server.wait_run("tiny", run["id"])
        if detail["state"] != "succeeded":
            raise SystemExit(f"the run did not succeed: {detail['message']}")
        totals = detail["totals"]
        if (totals["records_read"], totals["records_written"], len(detail["shards"])) != (shards, shards, shards):
            raise SystemExit(f"wrong counts: {totals}, {len(detail['shards'])} shards")
        elapsed = (parse_time(detail["finished_at"]) - parse_time(detail["created_at"])).total_seconds()
        return {"server_s": elapsed, "local_s": local_s, "rss_mb": server.peak_rss_mb()}
    finally:
        server.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def bench_cron(haul: Path, work: Path, seconds: int) -> dict:
    folder = work / "one"
    tiny_files(folder, 1)
    spec = job_text("every-second", folder, 1, '[schedule]\ncron = "* * * * * *"\noverlap = "allow"')
    cron_work = work / "cron"
    cron_work.mkdir()
    server = Server(haul, cron_work, 4)
    try:
        server.call("PUT", "/api/v1/jobs", spec.encode(), "application/toml")
        log(f"cron every second for {seconds}s")
        time.sleep(seconds)
        server.call("POST", "/api/v1/jobs/every-second/disable")
        time.sleep(1)
        runs = server.call("GET", "/api/v1/runs?job=every-second&limit=100000")
        to_start, to_claim = [], []
        for run in runs:
            detail = server.wait_run("every-second", run["id"], timeout=30)
            if detail["state"] != "succeeded" or detail["totals"]["records_written"] != 1:
                raise SystemExit(f"run {run['id']} {detail['state']}: {detail['message']}")
            scheduled = parse_time(detail["scheduled_for"])
            to_start.append((parse_time(detail["started_at"]) - scheduled).total_seconds() * 1000)
            claims = [parse_time(e["at"]) for e in detail["events"] if e["shard_id"] and e["kind"] == "running"]
            to_claim.append((min(claims) - scheduled).total_seconds() * 1000)
        return {"runs": len(runs), "to_start": to_start, "to_claim": to_claim}
    finally:
        server.stop()


def report(shards: int, slots: int, tiny: dict, cron: dict) -> str:
    rate = shards / tiny["server_s"]
    local_rate = shards / tiny["local_s"]
    starts, claims = cron["to_start"], cron["to_claim"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""{START}

Written by `python3 bench/scheduler.py` on {now}.

- Machine: {machine(brief=True)}.
- Shards: {shards:,} tiny shards (one JSON Lines file of one record each; `file` source → `stdout` sink),
  `haul server --slots {slots}` with job parallelism {slots}; time from the API trigger to the run's end
  (store timestamps). Side by side: the same job with `haul run` (wall time of the command, process start
  and planning included).
- Cron: a job firing every second (`* * * * * *`) for {len(starts)} runs; delay from each schedule time to
  the run starting (planned, executing) and to its shard being claimed by a worker slot.

| measure | haul server | haul run (no server) | ratio |
|---|---:|---:|---:|
| {shards:,} tiny shards, wall s | {tiny['server_s']:.2f} | {tiny['local_s']:.2f} | {tiny['server_s'] / tiny['local_s']:.2f}× |
| shards / s | {rate:,.0f} | {local_rate:,.0f} | |
| server peak RSS MB | {tiny['rss_mb']:.0f} | | |

| cron tick → | p50 ms | p99 ms | max ms |
|---|---:|---:|---:|
| run started | {statistics.median(starts):.1f} | {percentile(starts, 0.99):.1f} | {max(starts):.1f} |
| shard claimed (first record next) | {statistics.median(claims):.1f} | {percentile(claims, 0.99):.1f} | {max(claims):.1f} |

Targets: at least 2,000 shards/s: {"yes" if rate >= 2000 else "no"} ({rate:,.0f});
p99 tick-to-start at most 50 ms: {"yes" if percentile(starts, 0.99) <= 50 else "no"} ({percentile(starts, 0.99):.1f} ms).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--haul", type=Path, default=DEFAULT_HAUL)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--cron-seconds", type=int, default=60)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    if not args.haul.exists():
        raise SystemExit(f"no haul binary at {args.haul}: cargo build --release -p haul")
    with tempfile.TemporaryDirectory(prefix="haul-bench-scheduler-") as work:
        work = Path(work)
        tiny = bench_shards(args.haul, work, args.shards, args.slots)
        cron = bench_cron(args.haul, work, args.cron_seconds)
    section = report(args.shards, args.slots, tiny, cron)
    print(section)
    if not args.no_results:
        write_results(section)
        log(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
