#!/usr/bin/env python3
"""haul cluster benchmark: shards per second through a distributed
deployment, and what distributing a copy over workers costs.

The deployment, made afresh for each case on the services of 127.0.0.1 and
torn down after it: a store database of its own (MariaDB by default,
`--store postgres` for PostgreSQL), RabbitMQ queues under a prefix of its
own, a ZooKeeper chroot of its own, Redis keys under a prefix of its own;
two `haul server`s with no slots of their own (they elect a leader, which
schedules and offers the shards) and three `haul worker`s. Every process
logs to bench/out/cluster/.

What it measures, with the release binary:

  shards   --shards tiny shards (one CSV file of one record each, read by the
           `file` source, written to `stdout`) run by 3 workers of
           --worker-slots slots each, the job's parallelism set to the
           workers' capacity (slots × `[dispatch] depth`). The figure is
           dispatch-claim-complete cycles per second: shards / (run finished
           − run started), both stamped by the store, of the median of
           --repeat runs (every run's rate is listed). Per-shard times from
           the store's events (claim → finish) and each worker's share go
           alongside. For scale, the same job through one embedded `haul
           server` (SQLite, --worker-slots × 3 slots) is timed the same way.
  copy     the 1,000,000-row PostgreSQL → PostgreSQL copy of bench/copy.py
           (bench/jobs/pg-pg.toml, table bench_rows, created when missing) with
           parallelism 3: distributed over 3 workers of 1 slot each, against
           the same job on one embedded `haul server --slots 3` (the default
           SQLite store), both timed the same way (run started → finished in
           the store), alternating, --repeat times each (medians), after one
           first run of each, reported apart: the processes are long-lived,
           and a first run opens the database connections the next ones
           reuse. The ratio distributed / embedded is the distribution
           overhead. `haul run` of the same job (wall time of the command) is
           shown for scale.

Every run is checked: it must succeed with every record read and written
(1,000,000 rows counted in the target table for the copy); a failed check
stops the script. Targets (issue): at least 1,000 shards/s; distribution
overhead at most 10%. The `## Cluster` section of bench/RESULTS.md is
replaced (or appended).

Usage: python3 bench/cluster.py [--haul PATH] [--store mariadb|postgres]
                                [--shards N] [--worker-slots N] [--depth N]
                                [--repeat N] [--cases shards,copy] [--no-results]
Standard library only; needs the mysql, psql, rabbitmqctl and ZooKeeper's
zkCli.sh clients (to make and remove the store database, the queues and the
chroot).
"""

from __future__ import annotations

import os
import sys

# This folder holds copy.py and http.py, which would shadow the standard
# library's `copy` (which dataclasses imports) and `http` (which urllib.request
# imports): search it after the standard library, where benchlib is still found.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from benchlib import (  # noqa: E402
    BENCH, DEFAULT_HAUL, OUT, RESULTS, ROWS, fmt, logger, machine, make_pg_table, pg_count, pg_drop, psql, run,
    write_results,
)

MARKER = "cluster-benchmark"
LOGS = OUT / "cluster"
ZK_CLI = "/usr/share/zookeeper/bin/zkCli.sh"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2f"
REDIS = "redis://127.0.0.1:6379/0"
ZOOKEEPER = "127.0.0.1:2181"
STORES = {"mariadb": "mysql://root@127.0.0.1:3306/{db}", "postgres": "postgres://postgres@127.0.0.1:5432/{db}"}
COPY_TARGET = "bench_cluster_target"
COPY_PARALLELISM = 3
WORKERS = 3
SERVERS = 2
log = logger("[cluster] ", sys.stderr)


# ---------------------------------------------------------------- processes and the API


class Haul:
    """A `haul` process started in folder, its stderr in log_path, ready once
    a line of that log matches ready (whose group 1 is kept as `address`)."""

    def __init__(self, argv: list[str], folder: Path, log_path: Path, ready: str, timeout: float = 60):
        self.name = log_path.stem
        self.log_path = log_path
        folder.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as stderr:
            self.process = subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=stderr, env={k: v for k, v in os.environ.items()
                                                                if k not in ("RUST_LOG", "HAUL_SERVER")})
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(ready, log_path.read_text(errors="replace"))
            if match:
                self.address = match.group(1) if match.groups() else ""
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.name} did not start: {log_path.read_text(errors='replace')[-800:]}")
            time.sleep(0.05)

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(self.address + path, data=body, method=method,
                                         headers={"content-type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read()
            return text.decode() if path == "/metrics" else json.loads(text or b"null")

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
        except (OSError, AttributeError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server(haul: Path, folder: Path, name: str, slots: int, config: Path | None) -> Haul:
    argv = [str(haul), "server", "--listen", "127.0.0.1:0", "--slots", str(slots), "--state-dir", str(folder / "state")]
    if config:
        argv += ["--config", str(config)]
    return Haul(argv, folder, LOGS / f"{name}.log", r"haul server listening on (http://\S+)")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_seconds(detail: dict) -> tuple[float, float]:
    """(run started → finished, run created → finished) in seconds, from the store's stamps."""
    finished = parse_time(detail["finished_at"])
    return ((finished - parse_time(detail["started_at"])).total_seconds(),
            (finished - parse_time(detail["created_at"])).total_seconds())


def run_job(api: Haul, job: str, *, timeout: float = 1800) -> dict:
    """Triggers a run of job through api, waits for its end and returns its
    detail, which must show success.

    The wait asks every 50 ms for the job's succeeded runs (an empty list
    until the end: a run in the list carries its next job state, which for
    thousands of files is large, and reading it over and over would load the
    servers under test), and every second for all its runs, to see a failure.
    """
    run_id = api.call("POST", f"/api/v1/jobs/{job}/runs", b"{}")["id"]
    deadline = time.monotonic() + timeout
    checks = 0
    while time.monotonic() < deadline:
        checks += 1
        runs = api.call("GET", f"/api/v1/runs?job={job}" + ("" if checks % 20 == 0 else "&state=succeeded"))
        state = next((r["state"] for r in runs if r["id"] == run_id), None)
        if state in ("succeeded", "failed", "cancelled"):
            detail = api.call("GET", f"/api/v1/runs/{run_id}")
            if state != "succeeded":
                raise SystemExit(f"run {run_id} of {job} {state}: {detail['message']} (logs: {LOGS})")
            return detail
        time.sleep(0.05)
    raise SystemExit(f"run {run_id} of {job} did not end in {timeout:.0f} s (logs: {LOGS})")


# ---------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """Two servers (slots 0) and three workers on a store, queues, a chroot and
    Redis keys of their own; see the module documentation. A context manager:
    entering starts everything and waits until one server leads and counts
    every worker's slots; leaving stops the processes (SIGTERM) and removes
    the database, the queue and the chroot."""

    haul: Path
    store: str
    worker_slots: int
    depth: int
    label: str
    work: Path
    poll: str | None = None
    servers: list[Haul] = field(default_factory=list)
    workers: list[Haul] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = f"haul-bench-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        self.database = self.id.replace("-", "_")
        self.store_url = STORES[self.store].format(db=self.database)

    @property
    def capacity(self) -> int:
        return WORKERS * self.worker_slots * self.depth

    def shared_tables(self, dispatch: str = "") -> str:
        """The tables every process shares; dispatch: more lines of `[dispatch]`."""
        return (f'[dispatch]\nurl = "{AMQP}"\nprefix = "{self.id}"\ndepth = {self.depth}\n{dispatch}\n'
                f'[registry]\nurl = "zk://{ZOOKEEPER}/{self.id}?session_timeout=6s"\n\n'
                f'[limiter]\nurl = "{REDIS}"\nprefix = "{self.id}"\nexpected_workers = {WORKERS}\n')

    def __enter__(self) -> "Cluster":
        self.create_database()
        try:
            for i in range(SERVERS):
                folder = self.work / f"server-{i + 1}"
                folder.mkdir(parents=True)
                config = folder / "server.toml"
                poll = f'poll = "{self.poll}"\n' if self.poll else ""
                config.write_text(f'store = "{self.store_url}"\nslots = 0\n\n{self.shared_tables(poll)}')
                self.servers.append(server(self.haul, folder, f"{self.label}-server-{i + 1}", 0, config))
            self.leader()
            for i in range(WORKERS):
                name = f"{self.label}-worker-{i + 1}"
                folder = self.work / f"worker-{i + 1}"
                folder.mkdir(parents=True)
                config = folder / "worker.toml"
                config.write_text(f'id = "{name}"\nstore = "{self.store_url}"\nslots = {self.worker_slots}\n'
                                  f'state_dir = "{folder / "state"}"\n\n{self.shared_tables()}')
                self.workers.append(Haul([str(self.haul), "worker", "--config", str(config)], folder,
                                         LOGS / f"{name}.log", r"haul worker \S+ taking the shards"))
            self.wait_capacity()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in self.workers + self.servers:
            process.stop()
        for cleanup in (self.drop_database, self.delete_queue, self.delete_chroot):
            try:
                cleanup()
            except Exception as error:  # noqa: BLE001 - leftovers are reported, the run goes on
                log(f"cleanup: {error}")

    def leader(self, timeout: float = 30) -> Haul:
        """The server that leads, once one does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.servers:
                if re.search(r"(?m)^haul_scheduler_leader 1$", s.call("GET", "/metrics")):
                    return s
            time.sleep(0.1)
        raise SystemExit(f"no server leads after {timeout:.0f} s (logs: {LOGS})")

    def wait_capacity(self, timeout: float = 30) -> None:
        """Waits until the leader counts every worker's slots (its `haul_worker_slots`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"(?m)^haul_worker_slots (\S+)$", self.leader().call("GET", "/metrics"))
            if match and float(match.group(1)) == self.capacity:
                return
            time.sleep(0.1)
        raise SystemExit(f"the leader does not count {self.capacity} slots after {timeout:.0f} s (logs: {LOGS})")

    def api(self) -> Haul:
        """A server that does not lead: jobs and runs go through it, as through any server of the cluster."""
        leader = self.leader()
        return next(s for s in self.servers if s is not leader)

    def create_database(self) -> None:
        if self.store == "mariadb":
            run(["mysql", "-h", "127.0.0.1", "-u", "root", "-e", f"CREATE DATABASE {self.database}"])
        else:
            psql(f"CREATE DATABASE {self.database}")

    def drop_database(self) -> None:
        if self.store == "mariadb":
            run(["mysql", "-h", "127.0.0.1", "-u", "root", "-e", f"DROP DATABASE IF EXISTS {self.database}"])
        else:
            psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def delete_queue(self) -> None:
        run(["rabbitmqctl", "-q", "delete_queue", f"{self.id}.shards.default"])

    def delete_chroot(self) -> None:
        run([ZK_CLI, "-server", ZOOKEEPER, "deleteall", f"/{self.id}"])


# ---------------------------------------------------------------- shards


def tiny_files(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:06}.csv").write_text(f"id,name\n{i},n{i}\n")


def tiny_job(folder: Path, parallelism: int) -> str:
    return (f'name = "tiny"\nparallelism = {parallelism}\n\n'
            f'[source]\ntype = "file"\npath = "{folder}/*.csv"\n\n[sink]\ntype = "stdout"\n')


def check_tiny(detail: dict, shards: int) -> None:
    totals = detail["totals"]
    got = (totals["records_read"], totals["records_written"], len(detail["shards"]))
    if got != (shards, shards, shards):
        raise SystemExit(f"tiny run: read, written, shards = {got}, expected {shards} each")


def shard_times(detail: dict) -> list[float]:
    """Each shard's claim → finish time in ms, from the run's events."""
    claimed, finished = {}, {}
    for event in detail["events"]:
        if event["shard_id"] and event["kind"] == "running":
            claimed[event["shard_id"]] = parse_time(event["at"])
        elif event["shard_id"] and event["kind"] == "succeeded":
            finished[event["shard_id"]] = parse_time(event["at"])
    return [(finished[s] - claimed[s]).total_seconds() * 1000 for s in finished if s in claimed]


def owners(detail: dict) -> str:
    counts = collections.Counter(s["owner"] for s in detail["shards"])
    return ", ".join(f"{count:,}" for _, count in sorted(counts.items()))


def bench_shards(args: argparse.Namespace, work: Path) -> dict:
    shards, slots = args.shards, args.worker_slots
    log(f"shards: writing {shards:,} tiny CSV files")
    tiny_files(work / "tiny", shards)
    with Cluster(args.haul, args.store, slots, args.depth, "shards", work / "shards-cluster", args.poll) as cluster:
        spec = tiny_job(work / "tiny", cluster.capacity)
        api = cluster.api()
        api.call("PUT", "/api/v1/jobs", spec.encode(), "application/toml")
        log(f"shards: cluster, 3 workers × {slots} slots, depth {args.depth}, {args.repeat} runs")
        runs = []
        for attempt in range(args.repeat):
            detail = run_job(api, "tiny")
            check_tiny(detail, shards)
            runs.append((*run_seconds(detail), detail))
            log(f"shards {attempt + 1}/{args.repeat}: cluster {shards / runs[-1][0]:,.0f}/s")
        # The run of median time stands for them all.
        cluster_s, cluster_total_s, detail = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        times = shard_times(detail)
        result = {"cluster_s": cluster_s, "cluster_total_s": cluster_total_s, "owners": owners(detail),
                  "all_rates": [shards / run[0] for run in runs],
                  "shard_p50": statistics.median(times), "shard_p99": percentile(times, 0.99),
                  "capacity": cluster.capacity,
                  "leader_rss": cluster.leader().peak_rss_mb(),
                  "worker_rss": max(filter(None, (w.peak_rss_mb() for w in cluster.workers)), default=None)}
    log(f"shards: cluster {shards / cluster_s:,.0f}/s")

    log(f"shards: embedded server, {WORKERS * slots} slots")
    embedded = server(args.haul, work / "shards-embedded", "shards-embedded", WORKERS * slots, None)
    try:
        embedded.call("PUT", "/api/v1/jobs", tiny_job(work / "tiny", WORKERS * slots).encode(), "application/toml")
        detail = run_job(embedded, "tiny")
        check_tiny(detail, shards)
        result["embedded_s"], result["embedded_total_s"] = run_seconds(detail)
    finally:
        embedded.stop()
    log(f"shards: embedded {shards / result['embedded_s']:,.0f}/s")
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# ---------------------------------------------------------------- copy


def copy_job() -> str:
    """bench/jobs/pg-pg.toml with parallelism 3 and the target COPY_TARGET."""
    text = (BENCH / "jobs" / "pg-pg.toml").read_text()
    text = re.sub(r"(?m)^parallelism\s*=.*$", f"parallelism = {COPY_PARALLELISM}", text)
    return re.sub(r'(?m)^table\s*=\s*"bench_haul_target"', f'table = "{COPY_TARGET}"', text)


def copy_once(api: Haul, job: str) -> tuple[float, float, dict]:
    # Emptied, not dropped: a process creates a missing table once (the sink
    # remembers it made it), so a server would not make it again.
    psql(f"TRUNCATE {COPY_TARGET}")
    detail = run_job(api, job)
    got = pg_count(COPY_TARGET)
    if got != ROWS or detail["totals"]["records_written"] != ROWS:
        raise SystemExit(f"copy: {got} rows in {COPY_TARGET}, {detail['totals']['records_written']} written, "
                         f"expected {ROWS}")
    return (*run_seconds(detail), detail)


def bench_copy(args: argparse.Namespace, work: Path) -> dict:
    if pg_count("bench_rows") != ROWS:
        log("copy: generating 1,000,000 rows in PostgreSQL test.bench_rows …")
        make_pg_table("bench_rows", ROWS)
    spec = copy_job().encode()
    name = re.search(r'(?m)^name\s*=\s*"([^"]+)"', spec.decode()).group(1)
    job_file = work / "copy.toml"
    job_file.write_text(spec.decode())

    log("copy: haul run (for scale; it creates the target table)")
    pg_drop(COPY_TARGET)
    started = time.monotonic()
    subprocess.run([str(args.haul), "run", "--progress", "none", "--restart", "--state-dir", str(work / "copy-local"),
                    str(job_file)], cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local_s = time.monotonic() - started
    if pg_count(COPY_TARGET) != ROWS:
        raise SystemExit(f"copy: haul run left {pg_count(COPY_TARGET)} rows in {COPY_TARGET}")

    embedded_runs, cluster_runs, cluster_owners = [], [], []
    embedded = server(args.haul, work / "copy-embedded", "copy-embedded", COPY_PARALLELISM, None)
    try:
        embedded.call("PUT", "/api/v1/jobs", spec, "application/toml")
        with Cluster(args.haul, args.store, 1, args.depth, "copy", work / "copy-cluster", args.poll) as cluster:
            api = cluster.api()
            api.call("PUT", "/api/v1/jobs", spec, "application/toml")
            first = {"embedded": copy_once(embedded, name)[0], "cluster": copy_once(api, name)[0]}
            log(f"copy, first runs: embedded server {first['embedded']:.2f} s, cluster {first['cluster']:.2f} s")
            for attempt in range(args.repeat):
                seconds, _, _ = copy_once(embedded, name)
                embedded_runs.append(seconds)
                log(f"copy {attempt + 1}/{args.repeat}: embedded server {seconds:.2f} s")
                seconds, _, detail = copy_once(api, name)
                cluster_runs.append(seconds)
                cluster_owners.append(owners(detail))
                log(f"copy {attempt + 1}/{args.repeat}: cluster {seconds:.2f} s (shards per worker: {cluster_owners[-1]})")
                shards = len(detail["shards"])
    finally:
        embedded.stop()
        pg_drop(COPY_TARGET)
    return {"local_s": local_s, "embedded": embedded_runs, "cluster": cluster_runs, "owners": cluster_owners,
            "shards": shards, "first": first}


# ---------------------------------------------------------------- report


def versions(haul: Path, store: str) -> str:
    parts = [run([str(haul), "--version"], check=False).strip() or "haul (version unknown)",
             f"PostgreSQL {psql('SHOW server_version').split()[0]}"]
    if store == "mariadb":
        parts.append("MariaDB " + run(["mysql", "-h", "127.0.0.1", "-u", "root", "-B", "--skip-column-names", "-e",
                                       "SELECT version()"]).strip().split("-")[0])
    rabbit = run(["rabbitmqctl", "-q", "version"], check=False).strip()
    if rabbit:
        parts.append(f"RabbitMQ {rabbit}")
    return ", ".join(parts)


def report(args: argparse.Namespace, tiny: dict | None, copy: dict | None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    store = {"mariadb": "MariaDB", "postgres": "PostgreSQL"}[args.store]
    out = [
        "## Cluster",
        "",
        f"Written by `python3 bench/cluster.py` on {now}.",
        "",
        f"- Machine: {machine(brief=True)}.",
        f"- Versions: {versions(args.haul, args.store)}.",
        f"- Deployment: {SERVERS} `haul server`s with `slots = 0` (one leads and offers the shards) and {WORKERS}"
        f" `haul worker`s, all on this machine; store {store}, dispatch RabbitMQ (`depth = {args.depth}`),"
        f" registry ZooKeeper, limiter Redis; leader poll (`[dispatch] poll`) {args.poll or 'default'}. Times are the store's"
        " stamps: run started → run finished.",
    ]
    targets = []
    if tiny:
        shards = args.shards
        rate = shards / tiny["cluster_s"]
        out += [
            "",
            f"### Tiny shards: {shards:,} shards of one CSV record each (`file` → `stdout`)",
            "",
            f"Workers with {args.worker_slots} slots each (capacity {tiny['capacity']} offers at once), job parallelism"
            f" {tiny['capacity']}. The cluster ran the job {len(tiny['all_rates'])} times; the run of median time"
            f" is shown (all runs, shards/s: {', '.join(f'{rate:,.0f}' for rate in tiny['all_rates'])})."
            f" Shards per worker: {tiny['owners']}. Each shard's claim → finish, from the store's"
            f" events: p50 {tiny['shard_p50']:.0f} ms, p99 {tiny['shard_p99']:.0f} ms. Peak RSS: leader"
            f" {fmt(tiny['leader_rss'], '.0f')} MB, largest worker {fmt(tiny['worker_rss'], '.0f')} MB.",
            "",
            "| deployment | run s | shards / s | trigger → end s |",
            "|---|---:|---:|---:|",
            f"| cluster: 2 servers, 3 workers × {args.worker_slots} slots | {tiny['cluster_s']:.2f} | {rate:,.0f} "
            f"| {tiny['cluster_total_s']:.2f} |",
            f"| embedded `haul server --slots {WORKERS * args.worker_slots}` (SQLite) | {tiny['embedded_s']:.2f} "
            f"| {shards / tiny['embedded_s']:,.0f} | {tiny['embedded_total_s']:.2f} |",
        ]
        targets.append(f"at least 1,000 dispatch-claim-complete cycles per second: {'yes' if rate >= 1000 else 'no'}"
                       f" ({rate:,.0f}/s)")
    if copy:
        embedded, cluster = statistics.median(copy["embedded"]), statistics.median(copy["cluster"])
        ratio = cluster / embedded
        runs = f"median of {args.repeat}, alternating" if args.repeat > 1 else "one run each"
        out += [
            "",
            f"### PostgreSQL → PostgreSQL copy, {ROWS:,} rows, parallelism {COPY_PARALLELISM} ({copy['shards']} shards)",
            "",
            f"bench/jobs/pg-pg.toml with parallelism {COPY_PARALLELISM} ({runs}, after a first run of each, which"
            f" opens the database connections the long-lived processes then reuse). The reference is the embedded"
            f" default: one `haul server --slots {COPY_PARALLELISM}` on its SQLite store, timed like the cluster."
            f" Cluster: {WORKERS} workers of 1 slot each; shards per worker: {'; '.join(copy['owners'])}.",
            "",
            "| deployment | run s | rows / s | × embedded |",
            "|---|---:|---:|---:|",
            f"| embedded `haul server --slots {COPY_PARALLELISM}` (SQLite) | {embedded:.2f} | {ROWS / embedded:,.0f} | 1.00 |",
            f"| cluster: 2 servers, {WORKERS} workers × 1 slot ({store}) | {cluster:.2f} | {ROWS / cluster:,.0f} "
            f"| {ratio:.2f} |",
            f"| `haul run` (command wall time, for scale) | {copy['local_s']:.2f} | {ROWS / copy['local_s']:,.0f} "
            f"| {copy['local_s'] / embedded:.2f} |",
            "",
            "All runs, s: embedded " + ", ".join(f"{s:.2f}" for s in copy["embedded"])
            + "; cluster " + ", ".join(f"{s:.2f}" for s in copy["cluster"])
            + f". First runs, s: embedded {copy['first']['embedded']:.2f}, cluster {copy['first']['cluster']:.2f}"
            + f" ({(copy['first']['cluster'] / copy['first']['embedded'] - 1) * 100:+.1f}%).",
        ]
        targets.append(f"distribution overhead at most 10%: {'yes' if ratio <= 1.10 else 'no'}"
                       f" ({(ratio - 1) * 100:+.1f}%)")
    out += ["", "Targets: " + "; ".join(targets) + "."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--haul", type=Path, default=DEFAULT_HAUL)
    parser.add_argument("--store", choices=sorted(STORES), default="mariadb")
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--worker-slots", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2, help="[dispatch] depth: offers per live worker slot")
    parser.add_argument("--poll", help="the servers' [dispatch] poll (`50ms`); their default when absent")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case per deployment (median)")
    parser.add_argument("--cases", default="shards,copy", help="comma-separated: shards,copy")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    if not args.haul.exists():
        raise SystemExit(f"no haul binary at {args.haul}: cargo build --release -p haul")
    args.haul = args.haul.resolve()
    cases = set(args.cases.split(","))
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="haul-bench-cluster-") as work:
        work = Path(work)
        tiny = bench_shards(args, work) if "shards" in cases else None
        copy = bench_copy(args, work) if "copy" in cases else None
    section = report(args, tiny, copy)
    print(section)
    if not args.no_results:
        write_results(section, marker=MARKER)
        log(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
