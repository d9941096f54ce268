#!/usr/bin/env python3
"""haul processor benchmark: what each processor, and a chain of five, adds to a copy.

What it measures, side by side in one run, on the copy benchmark's
PostgreSQL -> JSONL pair (table `bench_rows`, 1,000,000 rows, 11 columns):

  reference  the job with no processors
  cleanse, cast, rename, select, drop, remap, filter, validate, mask
             the same job with that one processor
  chain      cleanse -> cast -> validate -> mask -> remap

The jobs are bench/jobs/processors/<case>.toml (the script only sets the
table and the output folder of a temporary copy of each).

How:

* The data and the measuring are the copy benchmark's (bench/benchlib.py):
  the same table (made when missing), every run under /usr/bin/time (wall
  time of the command, peak RSS of haul). `--rows N` uses a table
  `bench_rows_small` of N rows made the same way, for quick end-to-end checks.
* Every run is verified: exit status 0, the JSONL output holds exactly the
  expected number of lines (the row count, or for filter/validate/chain a SQL
  count of the rows that meet the same condition), and haul's summary line
  `N read, M written, K rejected` agrees (read = rows, written = lines,
  rejected = the rows validate turns away). The first output record is also
  checked for the processor's effect (a renamed field, a masked code, ...).
  A run that fails any check is FAILED, never timed as a success.
* An unrecorded reference run warms the caches first. `--repeat N` runs
  every case N times, in rounds (all cases once, then again), and keeps the
  median wall time and peak RSS.
* Reported per case: wall s, added s and added % against the reference, and
  the cost per record (added ns / rows); then the target line for the chain.
  The `## Processors` section of bench/RESULTS.md is replaced (or appended).

Usage: python3 bench/processors.py [--haul PATH] [--repeat N] [--rows N]
                                   [--cases cleanse,chain,...] [--no-results]
Standard library only.
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
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from benchlib import (  # noqa: E402
    BENCH, DEFAULT_HAUL, RESULTS, ROWS, count_lines, ensure_time, log, machine, make_pg_table,
    pg_count, psql, reset_dir, run, timed, write_results,
)

JOBS = BENCH / "jobs" / "processors"
OUT = BENCH / "out" / "processors"
LOGS = BENCH / "out" / "logs"  # shared with the copy benchmark
BIG_TABLE, SMALL_TABLE = "bench_rows", "bench_rows_small"
MASK_KEY = "haul-bench-processors-mask-key"
HEADING = "## Processors"
TARGET_PERCENT = 30.0

# The rows validate keeps (its 4 rules as SQL) and the rows the filter keeps.
VALID_SQL = "code IS NOT NULL AND code ~ '^C-[0-9A-F]{1,8}$' AND price BETWEEN 0 AND 9900"
FILTER_SQL = "qty < 900"


# ---------------------------------------------------------------- cases


def first_record(folder: Path) -> dict:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith((".", "_")):
            with open(path, "rb") as f:
                line = f.readline()
            if line.strip():
                return json.loads(line)
    raise RuntimeError(f"no record in {folder}")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"output check failed: {what}")


def check_cleanse(r: dict) -> None:
    expect(isinstance(r.get("body"), str) and "  " not in r["body"] and r["body"] == r["body"].strip(),
           "body is trimmed and collapsed")


def check_rename(r: dict) -> None:
    expect("product_code" in r and "description" in r and "code" not in r and "body" not in r,
           "code and body renamed to product_code and description")


def check_select(r: dict) -> None:
    expect(list(r) == ["id", "qty", "price", "code", "created", "active", "amount", "updated"],
           f"the 8 selected fields in order, got {list(r)}")


def check_drop(r: dict) -> None:
    expect("maybe_int" not in r and "maybe_text" not in r and len(r) == 9, f"9 fields left, got {list(r)}")


def check_remap(r: dict) -> None:
    expect(r.get("code", "").islower() and re.fullmatch(r"\d{4}-\d\d-\d\d", str(r.get("created_day")))
           and "total" in r and "large" in r and "maybe_text" not in r,
           f"code lower-cased, created_day/total/large added, maybe_text deleted; got {r}")


def check_mask(r: dict) -> None:
    expect("*" in str(r.get("code")) and "lorem" not in str(r.get("body")), f"code masked, body hashed; got {r}")


def check_chain(r: dict) -> None:
    check_mask(r)
    expect("created_day" in r and "maybe_text" not in r, f"remap ran last; got {r}")


@dataclass
class Spec:
    """One job of bench/jobs/processors: which rows it writes and rejects, and its visible effect."""

    name: str
    written_sql: str | None = None  # predicate of the rows written (None: all)
    rejected_sql: str | None = None  # predicate of the rows rejected (None: none)
    check: Callable[[dict], None] = lambda r: None


SPECS = [
    Spec("reference"),
    Spec("cleanse", check=check_cleanse),
    Spec("cast"),
    Spec("rename", check=check_rename),
    Spec("select", check=check_select),
    Spec("drop", check=check_drop),
    Spec("remap", check=check_remap),
    Spec("filter", written_sql=FILTER_SQL),
    Spec("validate", written_sql=VALID_SQL, rejected_sql=f"NOT ({VALID_SQL})"),
    Spec("mask", check=check_mask),
    Spec("chain", written_sql=VALID_SQL, rejected_sql=f"NOT ({VALID_SQL})", check=check_chain),
]


@dataclass
class Result:
    name: str
    written: int = 0
    rejected: int = 0
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.walls)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss_mb(self) -> float | None:
        return statistics.median(self.rss) if self.rss else None


# ---------------------------------------------------------------- data


def ensure_table(table: str, rows: int) -> None:
    """Makes `table` with bench_rows' schema and rows 1..rows unless it already holds rows rows."""
    if pg_count(table) == rows:
        log(f"data: {rows:,} rows in PostgreSQL test.{table}")
        return
    log(f"data: generating {rows:,} rows in PostgreSQL test.{table} …")
    t = time.monotonic()
    make_pg_table(table, rows)
    log(f"data: ready in {time.monotonic() - t:.1f} s")


def sql_count(table: str, predicate: str | None) -> int:
    return int(psql(f"SELECT count(*) FROM {table}" + (f" WHERE {predicate}" if predicate else "")))


# ---------------------------------------------------------------- running


def job_copy(spec: Spec, table: str, out_dir: Path, work: Path) -> Path:
    """A copy of bench/jobs/processors/<name>.toml reading `table` and writing to out_dir."""
    text = (JOBS / f"{spec.name}.toml").read_text()
    text, n_table = re.subn(r'(?m)^table\s*=.*$', f'table = "{table}"', text, count=1)
    text, n_path = re.subn(r'(?m)^path\s*=.*$', f'path = "{out_dir}"', text, count=1)
    if n_table != 1 or n_path != 1:
        raise RuntimeError(f"{spec.name}.toml: expected one `table =` and one `path =` line")
    job = work / f"{spec.name}.toml"
    job.write_text(text)
    return job


SUMMARY = re.compile(r"records: ([\d,]+) read, ([\d,]+) written, ([\d,]+) rejected")


def summary_counts(log_path: Path) -> tuple[int, int, int]:
    found = SUMMARY.findall(log_path.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no `N read, M written, K rejected` summary in {log_path.relative_to(BENCH)}")
    return tuple(int(x.replace(",", "")) for x in found[-1])


def run_once(spec: Spec, result: Result, haul: Path, table: str, rows: int, work: Path,
             env: dict, log_name: str, timeout: float) -> None:
    out_dir = OUT / spec.name
    state = work / f"state-{spec.name}"
    job = job_copy(spec, table, out_dir, work)
    log_path = LOGS / f"processors-{log_name}.log"
    reset_dir(out_dir)
    reset_dir(state)
    try:
        try:
            sample = timed([[str(haul), "run", "--progress", "none", "--restart", "--state-dir", str(state), str(job)]],
                           log_path, env=env, cwd=work, timeout=timeout)
        except RuntimeError as e:  # name the committed job file (same lines) instead of the temporary copy
            raise RuntimeError(str(e).replace(str(job), str((JOBS / job.name).relative_to(BENCH.parent)))) from None
        lines = count_lines(out_dir)
        where = f" (log: {log_path.relative_to(BENCH)})"
        if lines != result.written:
            raise RuntimeError(f"{lines:,} output lines, expected {result.written:,}{where}")
        read, written, rejected = summary_counts(log_path)
        if (read, written, rejected) != (rows, result.written, result.rejected):
            raise RuntimeError(f"summary {read:,} read, {written:,} written, {rejected:,} rejected; expected "
                               f"{rows:,}, {result.written:,}, {result.rejected:,}{where}")
        spec.check(first_record(out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    result.walls.append(sample.wall)
    if sample.rss_mb is not None:
        result.rss.append(sample.rss_mb)


# ---------------------------------------------------------------- report


def added(r: Result, ref: Result | None, rows: int) -> tuple[float, float, float] | None:
    """Seconds, percent and ns per record that r adds to the reference."""
    if not (r.ok and ref and ref.ok):
        return None
    seconds = r.wall - ref.wall
    return seconds, 100 * seconds / ref.wall, seconds / rows * 1e9


def table_md(results: list[Result], rows: int) -> str:
    ref = next((r for r in results if r.name == "reference"), None)
    lines = ["| job | rows written | rejected | wall s | added s | added % | ns/record | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in results:
        label = {"reference": "reference (no processor)",
                 "chain": "chain: cleanse → cast → validate → mask → remap"}.get(r.name, r.name)
        if not r.ok:
            lines.append(f"| {label} | {r.written:,} | {r.rejected:,} | FAILED | — | — | — | — |")
            notes.append(f"- {r.name}: FAILED: {r.error}")
            continue
        a = added(r, ref, rows) if r.name != "reference" else None
        cost = f"{a[0]:+.2f} | {a[1]:+.1f}% | {a[2]:+,.0f}" if a else "— | — | —"
        rss = "—" if r.rss_mb is None else f"{r.rss_mb:.0f}"
        lines.append(f"| {label} | {r.written:,} | {r.rejected:,} | {r.wall:.2f} | {cost} | {rss} |")
    return "\n".join(lines + ([""] + notes if notes else []))


def target_line(results: list[Result], rows: int) -> str:
    ref = next((r for r in results if r.name == "reference"), None)
    chain = next((r for r in results if r.name == "chain"), None)
    head = f"Target: a chain of five processors adds at most {TARGET_PERCENT:.0f}% to the PostgreSQL→JSONL time: "
    if chain is None:
        return head + "not measured (the chain was not run)."
    a = added(chain, ref, rows)
    if a is None:
        why = "the chain" if not chain.ok else "the reference"
        return head + f"no ({why} did not complete)."
    return head + f"{'yes' if a[1] <= TARGET_PERCENT else 'no'} ({a[1]:+.1f}%)."


def describe_jobs() -> list[str]:
    return [
        "- cleanse: `trim`, `collapse_whitespace` and `empty_to_null` on code, body, maybe_text.",
        "- cast: amount → decimal, created → timestamp.",
        "- rename: code → product_code, body → description. select: 8 of the 11 columns."
        " drop: maybe_int, maybe_text.",
        "- remap: a VRL program of 5 statements (downcase code, format created as a date, compute"
        " qty × price rounded, compare amount, delete maybe_text).",
        f"- filter: `int!(.qty) < 900` (keeps the rows where `{FILTER_SQL}`, ~90%).",
        "- validate: 4 rules: id required, code required and matching `^C-[0-9A-F]{1,8}$`, price in"
        " [0, 9900], active in [true, false]; the ~1% of rows priced above 9900 are dead-lettered"
        " (`error_limit = 0.05`).",
        "- mask: `partial` on code, `hash` (HMAC, key from the environment) on body.",
        "- chain: the cleanse, cast, validate, mask and remap jobs' processors, in that order.",
    ]


def report(results: list[Result], haul: Path, table: str, rows: int, repeat: int, warmup: bool,
           load_start: str) -> str:
    version = run([str(haul), "--version"], check=False).strip() if haul.exists() else f"no binary at {haul}"
    build = "release" if "release" in haul.parts else ("debug: figures are meaningless" if "debug" in haul.parts
                                                        else str(haul))
    out = [
        HEADING,
        "",
        f"Written by `python3 bench/processors.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {machine()}; load average at the start {load_start}",
        f"- Versions: PostgreSQL {psql('SHOW server_version').split()[0]}, {version} ({build})",
        f"- Data: PostgreSQL → JSONL file, table `{table}`, {rows:,} rows, 11 columns (the copy benchmark's"
        " table and job: parallelism 2, batch size 5000); jobs in bench/jobs/processors/.",
        f"- Each figure: {'the median of ' + str(repeat) + ' runs (in rounds over all jobs)' if repeat > 1 else 'one run'}"
        + (", after an unrecorded warm-up run of the reference;" if warmup else ";") +
        " wall time of `haul run`, peak RSS from GNU time (`%M`). Every run is verified: exit status 0,"
        " output lines = the expected rows (a SQL count on the same condition for filter and validate),"
        " haul's read/written/rejected summary agrees, and the first record shows the processor's effect.",
        f"- added s / added % are against the reference (no processor); ns/record = added s / {rows:,} rows."
        " Differences of a few percent are within the noise of a shared machine.",
        *describe_jobs(),
        "",
        table_md(results, rows),
        "",
        target_line(results, rows),
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--haul", type=Path, default=DEFAULT_HAUL, help="haul release binary")
    ap.add_argument("--repeat", type=int, default=1, help="runs per job (median)")
    ap.add_argument("--rows", type=int, default=ROWS,
                    help=f"rows to copy; other than {ROWS:,} uses table {SMALL_TABLE} (made when needed)")
    ap.add_argument("--cases", default=",".join(s.name for s in SPECS),
                    help="comma-separated jobs of bench/jobs/processors (reference is always run)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the unrecorded reference run made before the timed runs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it counts as FAILED")
    ap.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    names = set(args.cases.split(",")) | {"reference"}
    unknown = names - {s.name for s in SPECS}
    if unknown:
        sys.exit(f"unknown cases: {', '.join(sorted(unknown))}")
    specs = [s for s in SPECS if s.name in names]
    haul = args.haul.resolve()
    if not haul.exists():
        sys.exit(f"no haul binary at {haul} (build it with `cargo build --release --bin haul`)")
    ensure_time()
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    table = BIG_TABLE if args.rows == ROWS else SMALL_TABLE
    ensure_table(table, args.rows)

    results = []
    for spec in specs:
        written = sql_count(table, spec.written_sql)
        rejected = sql_count(table, spec.rejected_sql) if spec.rejected_sql else 0
        results.append(Result(spec.name, written=written, rejected=rejected))
    env = {**os.environ, "HAUL_BENCH_MASK_KEY": MASK_KEY}
    with tempfile.TemporaryDirectory(prefix="haul-bench-proc-") as tmp:
        if args.warmup:
            # One unrecorded reference run first, so that the first timed run does
            # not pay for cold caches (PostgreSQL's buffers, the page cache).
            log("warm-up: reference …")
            ref = results[0]
            try:
                run_once(specs[0], Result("warm-up", written=ref.written, rejected=ref.rejected), haul, table,
                         args.rows, Path(tmp), env, "warmup", args.timeout)
            except Exception as e:  # noqa: BLE001 - the reference's own runs report it
                log(f"warm-up: FAILED: {e}")
        for round_no in range(1, args.repeat + 1):
            for spec, result in zip(specs, results):
                if result.error:
                    continue  # failed in an earlier round: not run again
                log(f"[{round_no}/{args.repeat}] {spec.name} …")
                try:
                    log_name = spec.name + (f"-{round_no}" if args.repeat > 1 else "")
                    run_once(spec, result, haul, table, args.rows, Path(tmp), env, log_name, args.timeout)
                    log(f"[{round_no}/{args.repeat}] {spec.name}: {result.walls[-1]:.2f} s"
                        + (f", {result.rss[-1]:.0f} MB" if result.rss else ""))
                except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
                    result.error = str(e)
                    log(f"[{round_no}/{args.repeat}] {spec.name}: FAILED: {e}")
    section = report(results, haul, table, args.rows, args.repeat, args.warmup, load_start)
    print("\n" + section)
    if not args.no_results:
        write_results(section)
        log(f"written: {RESULTS.relative_to(BENCH.parent)}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
