#!/usr/bin/env python3
"""haul copy benchmark: haul against physical baselines and peer tools.

What it measures, for three pairs, side by side in one run:

  pg-file   PostgreSQL -> JSONL file(s)
  pg-pg     PostgreSQL -> PostgreSQL
  my-pg     MariaDB    -> PostgreSQL

and for each pair these tools:

  baseline  the database's own bulk path (psql \\copy, mysql -B | psql \\copy)
  haul p=2  `haul run` of bench/jobs/<pair>.toml (parallelism 2, as committed)
  haul p=4  the same job with parallelism 4 (a temporary copy of the job)
  ingestr, sling, dlt   peers installed from PyPI into bench/.venv

How:

* The data is a 1,000,000-row table `bench_rows` with 11 mixed columns
  (integers, double, varchar, ~100-byte text, timestamp, boolean, numeric,
  two nullable columns with ~20% NULLs, timestamptz), generated once with
  generate_series in PostgreSQL database `test` and loaded into MariaDB
  `test.bench_rows` through a TSV file. Both are reused while they hold the
  right row count; `--rebuild` makes them again.
* Each command runs under /usr/bin/time: the wall time is taken around the
  whole command (or pipeline), the peak RSS is the maximum resident set of
  the command; for a pipeline it is the SUM of the peaks of its processes
  (they run at the same time). Database server memory is never counted.
* Targets (tables, output folders) are dropped/emptied before each run and
  the copied rows are counted after it: a run that does not deliver all
  rows is reported as FAILED, never timed as a success.
* `--repeat N` runs every measurement N times and keeps the median wall time
  (and the median peak RSS).
* The tables go to stdout and to the copy section of bench/RESULTS.md.

Usage: python3 bench/copy.py [--haul PATH] [--repeat N] [--rebuild]
                             [--pairs pg-file,pg-pg,my-pg] [--tools haul,baseline,...]
Standard library only; peers run from bench/.venv.
"""

from __future__ import annotations

import os
import sys

# This folder holds copy.py and http.py, which would shadow the standard
# library's `copy` (which dataclasses imports) and `http`: search it after the
# standard library, where benchlib is still found.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import argparse  # noqa: E402
import datetime  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from benchlib import (  # noqa: E402
    BENCH, COLUMNS, DEFAULT_HAUL, OUT, PSQL, RESULTS, ROWS, VENV, Result, Sample, count_lines, ensure_time,
    ensure_venv, fmt, log, machine, make_pg_table, measure, pg_count, pg_drop, pg_env,
    pip_install, psql, reset_dir, run, timed, write_results,
)

LOGS = OUT / "logs"
JOBS = BENCH / "jobs"
MYSQL = ["mysql", "-h", "127.0.0.1", "-u", "root", "test"]

MY_SCHEMA = """
CREATE TABLE bench_rows (
    id bigint PRIMARY KEY,
    qty int NOT NULL,
    price double NOT NULL,
    code varchar(64) NOT NULL,
    body text NOT NULL,
    created datetime(6) NOT NULL,
    active boolean NOT NULL,
    amount decimal(12,2) NOT NULL,
    maybe_int int NULL,
    maybe_text varchar(64) NULL,
    updated datetime(6) NOT NULL COMMENT 'UTC'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


# ---------------------------------------------------------------- MariaDB


def mysql(sql: str) -> str:
    return run(MYSQL + ["-B", "--skip-column-names", "-e", sql]).strip()


def my_count(table: str) -> int:
    try:
        return int(mysql(f"SELECT count(*) FROM {table}"))
    except (RuntimeError, ValueError):
        return -1


# ---------------------------------------------------------------- data


def ensure_data(rebuild: bool) -> None:
    """Creates bench_rows in PostgreSQL and MariaDB unless both already hold ROWS rows."""
    if rebuild or pg_count("bench_rows") != ROWS:
        log("data: generating 1,000,000 rows in PostgreSQL test.bench_rows …")
        t = time.monotonic()
        make_pg_table("bench_rows", ROWS)
        log(f"data: PostgreSQL ready in {time.monotonic() - t:.1f} s")
        rebuild = True
    if rebuild or my_count("bench_rows") != ROWS:
        load_mariadb()
    log(f"data: {ROWS} rows in PostgreSQL and MariaDB test.bench_rows")


def load_mariadb() -> None:
    """Copies bench_rows from PostgreSQL to MariaDB through a TSV file."""
    log("data: loading MariaDB test.bench_rows through a TSV file …")
    t = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    tsv = OUT / "bench_rows.tsv"
    # Text format: tab-separated, NULL as \N (what LOAD DATA reads); booleans
    # as 0/1 and the timestamptz as a UTC datetime.
    select = (
        "SELECT id, qty, price, code, body, created, active::int, amount, maybe_int, maybe_text, "
        "(updated AT TIME ZONE 'UTC') FROM bench_rows ORDER BY id"
    )
    psql(f"\\copy ({select}) TO '{tsv}'")
    mysql("DROP TABLE IF EXISTS bench_rows")
    mysql(MY_SCHEMA)
    run(MYSQL + ["--local-infile=1", "-e",
                 f"LOAD DATA LOCAL INFILE '{tsv}' INTO TABLE bench_rows ({COLUMNS})"])
    tsv.unlink()
    got = my_count("bench_rows")
    if got != ROWS:
        raise RuntimeError(f"MariaDB bench_rows holds {got} rows after the load, expected {ROWS}")
    log(f"data: MariaDB ready in {time.monotonic() - t:.1f} s")


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    """One tool on one pair: how to prepare, run and check it."""

    tool: str
    stages: list[list[str]] | None = None  # None: the tool does not run on this pair
    unavailable: str = ""  # why stages is None
    broken: str = ""  # set: the run is FAILED with this reason without being started
    prepare: Callable[[], None] = lambda: None
    count: Callable[[], int] = lambda: -1
    cleanup: Callable[[], None] = lambda: None
    env: dict | None = None
    cwd: Path | None = None


@dataclass
class Pair:
    key: str
    title: str
    cases: list[Case] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def measure_case(case: Case, pair: Pair, repeat: int, timeout: float) -> Result:
    """Runs a case repeat times; the median wall time, or FAILED with the reason."""
    if case.stages is None:
        return Result(case.tool, error=case.unavailable, skipped=True)
    if case.broken:
        return Result(case.tool, error=case.broken)

    def attempt(log_path: Path) -> Sample:
        try:
            case.prepare()
            sample = timed(case.stages, log_path, env=case.env, cwd=case.cwd, timeout=timeout)
            rows = case.count()
            if rows != ROWS:
                got = f"copied {rows} rows" if rows >= 0 else "no target table or output found"
                raise RuntimeError(f"{got}, expected {ROWS} rows (log: {log_path.relative_to(BENCH)})")
            return sample
        finally:
            try:
                case.cleanup()
            except Exception:  # noqa: BLE001
                pass

    return measure(case.tool, attempt, repeat, LOGS / f"{pair.key}-{slug(case.tool)}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------- baselines


def baseline_cases() -> dict[str, Case]:
    out_file = OUT / "baseline" / "bench_rows.txt"
    target_ddl = "DROP TABLE IF EXISTS bench_target; CREATE TABLE bench_target (LIKE bench_rows)"
    copy_in = PSQL + ["-c", "\\copy bench_target from stdin"]
    return {
        "pg-file": Case(
            "baseline (psql \\copy to file)",
            stages=[PSQL + ["-c", f"\\copy bench_rows to '{out_file}'"]],
            prepare=lambda: reset_dir(out_file.parent),
            count=lambda: count_lines(out_file.parent),
            cleanup=lambda: shutil.rmtree(out_file.parent, ignore_errors=True),
            env=pg_env(),
        ),
        "pg-pg": Case(
            "baseline (psql \\copy | psql \\copy)",
            stages=[PSQL + ["-c", "\\copy (select * from bench_rows) to stdout"], copy_in],
            prepare=lambda: psql(target_ddl),
            count=lambda: pg_count("bench_target"),
            cleanup=lambda: pg_drop("bench_target"),
            env=pg_env(),
        ),
        "my-pg": Case(
            "baseline (mysql -B | psql \\copy)",
            # --quick streams rows instead of buffering the result in the client;
            # MariaDB prints NULL as `NULL` and booleans as 0/1 (which PostgreSQL reads).
            stages=[MYSQL + ["-B", "--quick", "--skip-column-names", "-e", f"SELECT {COLUMNS} FROM bench_rows"],
                    PSQL + ["-c", "\\copy bench_target from stdin with (null 'NULL')"]],
            prepare=lambda: psql(target_ddl),
            count=lambda: pg_count("bench_target"),
            cleanup=lambda: pg_drop("bench_target"),
            env=pg_env(),
        ),
    }


# ---------------------------------------------------------------- haul


HAUL_JOBS = {"pg-file": "pg-file.toml", "pg-pg": "pg-pg.toml", "my-pg": "my-pg.toml"}


def haul_job(pair: str, parallelism: int, work: Path, out_dir: Path) -> Path:
    """Writes a copy of bench/jobs/<pair>.toml with the output folder and parallelism set."""
    text = (JOBS / HAUL_JOBS[pair]).read_text()
    text = re.sub(r"(?m)^parallelism\s*=.*$", f"parallelism = {parallelism}", text)
    text = re.sub(r'(?m)^path\s*=.*$', f'path = "{out_dir}"', text)
    job = work / f"{pair}-p{parallelism}.toml"
    job.write_text(text)
    return job


def haul_cases(pair: str, haul: Path, work: Path) -> list[Case]:
    cases = []
    for p in (2, 4):
        name = f"haul (p={p})"
        if not haul.exists():
            cases.append(Case(name, stages=[], broken=f"no haul binary at {haul} "
                                                       "(build it with `cargo build --release --bin haul`)"))
            continue
        out_dir = OUT / "haul" / pair
        job = haul_job(pair, p, work, out_dir)
        state = work / f"state-{pair}-p{p}"
        stages = [[str(haul), "run", "--progress", "none", "--restart", "--state-dir", str(state), str(job)]]
        if pair == "pg-file":
            cases.append(Case(name, stages=stages, cwd=work,
                              prepare=lambda s=state: (reset_dir(out_dir), reset_dir(s)),
                              count=lambda: count_lines(out_dir),
                              cleanup=lambda: shutil.rmtree(out_dir, ignore_errors=True)))
        else:
            cases.append(Case(name, stages=stages, cwd=work,
                              prepare=lambda s=state: (pg_drop("bench_haul_target"), reset_dir(s)),
                              count=lambda: pg_count("bench_haul_target"),
                              cleanup=lambda: pg_drop("bench_haul_target")))
    return cases


# ---------------------------------------------------------------- peers


@dataclass
class Peers:
    """The peers' commands, or the reason each one cannot run here."""

    python: Path = VENV / "bin" / "python"
    ingestr: Path | None = None
    sling: Path | None = None
    dlt: bool = False
    reasons: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def setup_peers() -> Peers:
    """Installs ingestr, sling and dlt into bench/.venv; records what works."""
    peers = Peers()
    ensure_venv("peers")
    log("peers: pip install into bench/.venv (ingestr<1, sling-linux-amd64, dlt[sql_database,postgres,filesystem]) …")

    err = pip_install("ingestr<1")
    exe = VENV / "bin" / "ingestr"
    if err is None and exe.exists():
        peers.ingestr = exe
        peers.versions["ingestr"] = run([str(exe), "--version"], check=False).strip().split()[-1]
    else:
        peers.reasons["ingestr"] = f"pip install 'ingestr<1' failed: {err}"

    # The `sling` package downloads its binary at first use (no general internet
    # here); the `sling-linux-amd64` wheel carries the binary itself.
    err = pip_install("sling-linux-amd64")
    exe = next(iter((VENV / "lib").glob("python*/site-packages/sling_linux_amd64/bin/sling-linux-amd64")), None)
    if err is None and exe is not None:
        peers.sling = exe
        out = run([str(exe), "--version"], check=False, env=sling_env())
        peers.versions["sling"] = (re.findall(r"\d+\.\d+\.\d+", out) or ["?"])[-1]
    else:
        peers.reasons["sling"] = f"pip install sling-linux-amd64 failed: {err}"

    err = pip_install("dlt[sql_database,postgres,filesystem]", "psycopg2-binary", "pymysql", "pyarrow")
    if err is None:
        peers.dlt = True
        peers.versions["dlt"] = run([str(peers.python), "-c", "import dlt; print(dlt.__version__)"]).strip()
    else:
        peers.reasons["dlt"] = f"pip install dlt failed: {err}"
    return peers


def sling_env() -> dict:
    home = OUT / "sling-home"
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SLING_HOME_DIR": str(home), "SLING_DISABLE_TELEMETRY": "true",
            "SLING_LOADED_AT_COLUMN": "false"}


def ingestr_cases(peers: Peers) -> dict[str, Case]:
    name = "ingestr"
    if peers.ingestr is None:
        return {k: Case(name, unavailable=peers.reasons["ingestr"]) for k in HAUL_JOBS}
    src_pg = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"
    src_my = "mysql://root@127.0.0.1:3306/test"
    target = "public.bench_ingestr_target"

    def to_pg(src: str) -> Case:
        return Case(name, stages=[[str(peers.ingestr), "ingest", "--yes", "--progress", "log",
                                   "--source-uri", src, "--source-table", "bench_rows",
                                   "--dest-uri", src_pg, "--dest-table", target]],
                    prepare=lambda: pg_drop(target), count=lambda: pg_count(target),
                    cleanup=lambda: pg_drop(target), cwd=OUT)

    out_dir = OUT / "ingestr"
    return {
        "pg-file": Case(name, stages=[[str(peers.ingestr), "ingest", "--yes", "--progress", "log",
                                       "--source-uri", src_pg, "--source-table", "bench_rows",
                                       "--dest-uri", f"jsonl://{out_dir}/bench_rows.jsonl",
                                       "--dest-table", "bench_rows"]],
                        prepare=lambda: reset_dir(out_dir), count=lambda: count_lines(out_dir),
                        cleanup=lambda: shutil.rmtree(out_dir, ignore_errors=True), cwd=OUT),
        "pg-pg": to_pg(src_pg),
        "my-pg": to_pg(src_my),
    }


def sling_cases(peers: Peers) -> dict[str, Case]:
    name = "sling"
    if peers.sling is None:
        return {k: Case(name, unavailable=peers.reasons["sling"]) for k in HAUL_JOBS}
    pg = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"
    my = "mysql://root@127.0.0.1:3306/test"
    target = "public.bench_sling_target"
    out_dir = OUT / "sling"
    env = sling_env()

    def to_pg(src: str, stream: str) -> Case:
        return Case(name, stages=[[str(peers.sling), "run", "--src-conn", src, "--src-stream", stream,
                                   "--tgt-conn", pg, "--tgt-object", target, "--mode", "full-refresh"]],
                    prepare=lambda: pg_drop(target), count=lambda: pg_count(target),
                    cleanup=lambda: pg_drop(target), env=env, cwd=OUT)

    return {
        "pg-file": Case(name, stages=[[str(peers.sling), "run", "--src-conn", pg, "--src-stream", "public.bench_rows",
                                       "--tgt-object", f"file://{out_dir}/bench_rows.jsonl",
                                       "--tgt-options", '{"format": "jsonlines"}']],
                        prepare=lambda: reset_dir(out_dir), count=lambda: count_lines(out_dir),
                        cleanup=lambda: shutil.rmtree(out_dir, ignore_errors=True), env=env, cwd=OUT),
        "pg-pg": to_pg(pg, "public.bench_rows"),
        "my-pg": to_pg(my, "test.bench_rows"),
    }


def dlt_cases(peers: Peers, work: Path) -> dict[str, list[Case]]:
    """dlt with its default sqlalchemy backend and with its pyarrow backend."""
    cases: dict[str, list[Case]] = {k: [] for k in HAUL_JOBS}
    for backend in ("sqlalchemy", "pyarrow"):
        for key, case in dlt_backend_cases(peers, work, backend).items():
            cases[key].append(case)
    return cases


def dlt_backend_cases(peers: Peers, work: Path, backend: str) -> dict[str, Case]:
    name = f"dlt ({backend})"
    if not peers.dlt:
        return {k: Case(name, unavailable=peers.reasons["dlt"]) for k in HAUL_JOBS}
    script = BENCH / "peers" / "dlt_pipeline.py"
    pg_sa = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    my_sa = "mysql+pymysql://root@127.0.0.1:3306/test"
    pg_dest = "postgresql://postgres:trust@127.0.0.1:5432/test"  # dlt insists on a password
    out_dir = OUT / "dlt"
    pipelines = work / f"dlt-{backend}"

    def cmd(src: str, dest: str, target: str) -> list[list[str]]:
        return [[str(peers.python), str(script), src, "bench_rows", dest, target, "bench_dlt",
                 str(pipelines), backend]]

    def drop_dataset() -> None:
        psql("DROP SCHEMA IF EXISTS bench_dlt CASCADE")

    def to_pg(src: str) -> Case:
        return Case(name, stages=cmd(src, "postgres", pg_dest),
                    prepare=lambda: (drop_dataset(), shutil.rmtree(pipelines, ignore_errors=True)),
                    count=lambda: pg_count("bench_dlt.bench_rows"), cleanup=drop_dataset, cwd=work)

    return {
        "pg-file": Case(name, stages=cmd(pg_sa, "filesystem", str(out_dir)),
                        prepare=lambda: (reset_dir(out_dir), shutil.rmtree(pipelines, ignore_errors=True)),
                        count=lambda: count_lines(out_dir / "bench_dlt" / "bench_rows"),
                        cleanup=lambda: shutil.rmtree(out_dir, ignore_errors=True), cwd=work),
        "pg-pg": to_pg(pg_sa),
        "my-pg": to_pg(my_sa),
    }


# ---------------------------------------------------------------- report


def esc(cell: str) -> str:
    """Escapes a Markdown table cell."""
    return cell.replace("|", "\\|")


def pair_table(pair: Pair) -> str:
    base = next((r for r in pair.results if r.tool.startswith("baseline") and r.ok), None)
    haul2 = next((r for r in pair.results if r.tool == "haul (p=2)" and r.ok), None)
    lines = ["| tool | wall s | rows/s | peak RSS MB | × baseline | × haul p=2 |",
             "|---|---:|---:|---:|---:|---:|"]
    notes = []
    for r in pair.results:
        if r.ok:
            lines.append(f"| {esc(r.tool)} | {r.wall:.2f} | {ROWS / r.wall:,.0f} | {fmt(r.rss_mb, '.0f')} "
                         f"| {fmt(r.wall / base.wall if base else None, '.2f')} "
                         f"| {fmt(r.wall / haul2.wall if haul2 else None, '.2f')} |")
        else:
            status = "not run" if r.skipped else "FAILED"
            lines.append(f"| {esc(r.tool)} | {status} | — | — | — | — |")
            notes.append(f"- {r.tool}: {status}: {r.error}")
    return "\n".join(lines + ([""] + notes if notes else []))


def targets_line(pair: Pair) -> str:
    """The three targets, all judged on haul (p=2), the committed job."""
    haul2 = next((r for r in pair.results if r.tool == "haul (p=2)"), None)
    haul4 = next((r for r in pair.results if r.tool == "haul (p=4)" and r.ok), None)
    base = next((r for r in pair.results if r.tool.startswith("baseline") and r.ok), None)
    peers = [r for r in pair.results if r.ok and not r.tool.startswith(("haul", "baseline"))]
    if not haul2 or not haul2.ok:
        return "Targets: haul (p=2) did not complete, so no target is met."
    if peers:
        fastest_peer_ratio = min(p.wall for p in peers) / haul2.wall
        faster = f"{'yes' if haul2.wall < min(p.wall for p in peers) else 'no'} (fastest peer / haul = {fastest_peer_ratio:.2f}×)"
    else:
        faster = "n/a (no peer ran)"
    if haul2.rss_mb is None:
        rss = "n/a (not measured)"
    else:
        rss = f"{'yes' if haul2.rss_mb <= 100 else 'no'} ({haul2.rss_mb:.0f} MB" + (
            f"; p=4: {haul4.rss_mb:.0f} MB)" if haul4 and haul4.rss_mb is not None else ")")
    if base:
        ratio = haul2.wall / base.wall
        vs_base = f"{'yes' if ratio <= 1.0 else 'no'} ({ratio:.2f}×)"
    else:
        vs_base = "n/a (no baseline)"
    return (f"Targets (haul p=2): faster than every peer: {faster}; peak RSS ≤ 100 MB: {rss}; "
            f"time ≤ 1.0× baseline: {vs_base}.")


def versions(peers: Peers | None, haul: Path) -> str:
    parts = [f"PostgreSQL {psql('SHOW server_version').split()[0]}",
             f"MariaDB {mysql('SELECT version()').split('-')[0]}"]
    if haul.exists():
        parts.append(run([str(haul), "--version"], check=False).strip() or "haul (version unknown)")
    else:
        parts.append(f"haul: no binary at {haul}")
    if peers:
        parts += [f"{k} {v}" for k, v in sorted(peers.versions.items())]
    return ", ".join(parts)


def report(pairs: list[Pair], peers: Peers | None, haul: Path, repeat: int) -> str:
    out = [
        "## Copy benchmark",
        "",
        f"Written by `python3 bench/copy.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions(peers, haul)}",
        f"- Data: {ROWS:,} rows, 11 columns (bigint, int, double, varchar, ~100-byte text, timestamp,"
        " boolean, numeric(12,2), 2 nullable columns with ~20% NULLs, timestamptz); same rows in both databases.",
        f"- Each figure: {'the median of ' + str(repeat) + ' runs' if repeat > 1 else 'one run'}; wall time of"
        " the whole command; peak RSS from GNU time (`%M`), summed over the processes of a pipeline,"
        " database servers not counted. Rows are counted after every run; a short copy is FAILED.",
        "- Ratios are the tool's wall time divided by the baseline's (or haul p=2's): below 1 is faster.",
        "- haul runs `haul run --progress none --restart` on bench/jobs/*.toml (p=4: the same job with"
        " parallelism 4).",
        "- Peers run with their defaults: `ingestr ingest` (to `jsonl://` for files), `sling run`"
        " (full-refresh; `jsonlines` for files), dlt through bench/peers/dlt_pipeline.py (`sql_table`,"
        " replace, uncompressed JSONL) with its default `sqlalchemy` backend and with its faster `pyarrow`"
        " backend; for MariaDB, DOUBLE is read as float (SQLAlchemy reflects it as Decimal, which breaks"
        " dlt's pyarrow backend).",
        "- Baselines: `psql \\copy` (text format) to a file; `psql \\copy … to stdout | psql \\copy … from stdin`;"
        " `mysql -B --quick --skip-column-names | psql \\copy … with (null 'NULL')` (MariaDB prints booleans as"
        " 0/1, which PostgreSQL reads); targets are `LIKE bench_rows` without indexes.",
    ]
    if peers and peers.reasons:
        out += ["", "Peers that could not be installed or run here:"]
        out += [f"- {k}: {v}" for k, v in peers.reasons.items()]
    out.append("- sling: the PyPI `sling` package downloads its binary at first use, which fails without"
               " general internet; the `sling-linux-amd64` wheel carries the binary and is what runs here.")
    for pair in pairs:
        out += ["", f"### {pair.title}", "", pair_table(pair), "", targets_line(pair)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--haul", type=Path, default=DEFAULT_HAUL, help="haul release binary")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    ap.add_argument("--rebuild", action="store_true", help="recreate the bench_rows tables")
    ap.add_argument("--pairs", default="pg-file,pg-pg,my-pg", help="comma-separated: pg-file,pg-pg,my-pg")
    ap.add_argument("--tools", default="baseline,haul,ingestr,sling,dlt",
                    help="comma-separated: baseline,haul,ingestr,sling,dlt")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it counts as FAILED")
    ap.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    return ap.parse_args()


def build_pairs(args: argparse.Namespace, peers: Peers | None, work: Path) -> list[Pair]:
    tools = set(args.tools.split(","))
    titles = {"pg-file": "PostgreSQL → JSONL file", "pg-pg": "PostgreSQL → PostgreSQL",
              "my-pg": "MariaDB → PostgreSQL"}
    base = baseline_cases()
    ing = ingestr_cases(peers) if peers and "ingestr" in tools else {}
    sli = sling_cases(peers) if peers and "sling" in tools else {}
    dl = dlt_cases(peers, work) if peers and "dlt" in tools else {}
    pairs = []
    for key in args.pairs.split(","):
        pair = Pair(key, titles[key])
        if "baseline" in tools:
            pair.cases.append(base[key])
        if "haul" in tools:
            pair.cases += haul_cases(key, args.haul.resolve(), work)
        pair.cases += [c for c in (ing.get(key), sli.get(key)) if c] + dl.get(key, [])
        pairs.append(pair)
    return pairs


def main() -> int:
    args = parse_args()
    ensure_time()
    ensure_data(args.rebuild)
    tools = set(args.tools.split(","))
    peers = setup_peers() if tools & {"ingestr", "sling", "dlt"} else None
    if not args.haul.exists() and "haul" in tools:
        log(f"warning: no haul binary at {args.haul} (build it with `cargo build --release --bin haul`): "
            "haul rows will show FAILED")
    with tempfile.TemporaryDirectory(prefix="haul-bench-") as tmp:
        work = Path(tmp)
        pairs = build_pairs(args, peers, work)
        for pair in pairs:
            for case in pair.cases:
                log(f"[{pair.key}] {case.tool} …")
                result = measure_case(case, pair, args.repeat, args.timeout)
                pair.results.append(result)
                log(f"[{pair.key}] {case.tool}: " + (f"{result.wall:.2f} s, {fmt(result.rss_mb, '.0f')} MB"
                                                      if result.ok else f"{'not run' if result.skipped else 'FAILED'}: {result.error}"))
    section = report(pairs, peers, args.haul, args.repeat)
    print("\n" + section)
    if not args.no_results:
        write_results(section, marker="copy-benchmark")
        log(f"written: {RESULTS.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
