#!/usr/bin/env python3
"""haul HTTP API benchmark: haul's `http` source against curl and dlt on a local API.

What it measures, side by side in one run:

  curl     `curl --parallel` fetching the 1,000 pages into files: the transport
           baseline (no parsing), at the same concurrency as haul
  haul     `haul run` of a generated job: the `http` source (page_number
           pagination, pages fetched ahead) into the `file` sink (JSON Lines)
  dlt      dlt's `rest_api` source (PyPI, in bench/.venv) with its
           page_number paginator, into uncompressed JSON Lines files (its
           fastest destination here; --dlt-destination duckdb for the other)

How:

* The API is 1,000,000 records in 1,000 JSON pages of 1,000 records each
  (`{"data": [...], "page": N, "total_pages": 1000}`, ~230 bytes a record with
  strings, numbers, a boolean, a time, an array and a nested object), written
  once into bench/out/http/site and served as static files by nginx from
  Debian (`apt-get install -y nginx-light` if missing) on a free 127.0.0.1
  port, with one worker, no access log and a config generated in a temporary
  folder: `GET /items?page=N` answers the file of page N.
* Each command runs under /usr/bin/time: wall time around the whole command
  (start-up included), peak RSS (`%M`) of the tool's process; nginx is not
  counted.
* Every run is verified by counting its output: curl's 1,000 files must hold
  1,000,000 records; haul's JSON Lines must hold ids 1..1,000,000 once each,
  with a sample of records equal to the generator's (nested values kept);
  dlt's `items` table (or files) must hold 1,000,000 rows. A run that does not
  pass is FAILED, never timed as a success.
* `--repeat N` keeps the median wall time (and peak RSS); dlt takes minutes a
  run, so it runs `--dlt-repeat` times (once by default).
* The table goes to stdout and to the `## HTTP API` section of bench/RESULTS.md.

Usage: python3 bench/http.py [--haul PATH] [--repeat N] [--dlt-repeat N] [--concurrency C]
                             [--tools curl,haul,dlt] [--dlt-destination duckdb|filesystem] [--no-results]
Standard library only; dlt runs from bench/.venv.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from benchlib import (  # noqa: E402
    BENCH, DEFAULT_HAUL, RESULTS, VENV, Nginx, Result, Sample, ensure_time, ensure_venv, fmt, log, machine,
    measure, pip_install, reset_dir, run, timed, write_results,
)

PAGES = 1_000
PER_PAGE = 1_000
RECORDS = PAGES * PER_PAGE
OUT = BENCH / "out" / "http"
SITE = OUT / "site"
WORK = OUT / "work"
LOGS = OUT / "logs"
DLT_PEER = BENCH / "peers" / "http_dlt.py"
SITE_VERSION = "1"  # bump when the generator changes, to regenerate the pages

CITIES = ("Lisbon", "Osaka", "Nairobi", "Lima", "Tromsø", "Hanoi", "Québec")


# ---------------------------------------------------------------- the API


def record(i: int) -> dict:
    """Record `i` (from 1): deterministic, mixed types, one array and one nested object."""
    return {
        "id": i,
        "name": f"customer {i}",
        "email": f"user{i}@example.com",
        "amount": round((i * 7919) % 100000 / 100, 2),
        "active": i % 3 != 0,
        "created_at": f"2024-{(i % 12) + 1:02d}-{(i % 28) + 1:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z",
        "tags": ["vip", "new", "eu"][: i % 4],
        "address": {"city": CITIES[i % len(CITIES)], "zip": f"{(i * 31) % 100000:05d}", "line": f"{i % 999} Main St"},
        "score": None if i % 5 == 0 else i % 97,
    }


def ensure_site() -> None:
    marker = SITE / ".complete"
    if marker.exists() and marker.read_text() == f"{SITE_VERSION} {PAGES} {PER_PAGE}":
        return
    log(f"writing {PAGES:,} pages of {PER_PAGE:,} records into {SITE.relative_to(BENCH.parent)} …")
    shutil.rmtree(SITE, ignore_errors=True)
    (SITE / "pages").mkdir(parents=True)
    for page in range(1, PAGES + 1):
        first = (page - 1) * PER_PAGE + 1
        body = {"data": [record(i) for i in range(first, first + PER_PAGE)], "page": page, "total_pages": PAGES}
        (SITE / "pages" / f"{page}.json").write_text(json.dumps(body, ensure_ascii=False, separators=(",", ":")))
    marker.write_text(f"{SITE_VERSION} {PAGES} {PER_PAGE}")


def serve_api(folder: Path) -> Nginx:
    """nginx answering `GET /items?page=N` with the file of page N, its config and runtime files in folder."""
    return Nginx(folder, SITE, mime_types={"application/json": "json"}, default_type="application/json",
                 locations=("location = /items { try_files /pages/$arg_page.json =404; }",))


# ---------------------------------------------------------------- tools


def run_curl(nginx: Nginx, concurrency: int, log_path: Path, timeout: float) -> Sample:
    work = reset_dir(WORK / "curl")
    config = work / "urls.txt"
    config.write_text("".join(f'url = "{nginx.base_url}/items?page={page}"\noutput = "pages/{page}.json"\n'
                              for page in range(1, PAGES + 1)))
    (work / "pages").mkdir()
    argv = ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", str(concurrency),
            "--config", str(config)]
    sample = timed([argv], log_path, cwd=work, timeout=timeout)
    files = sorted((work / "pages").glob("*.json"))
    count = sum(len(json.loads(path.read_bytes())["data"]) for path in files)
    if len(files) != PAGES or count != RECORDS:
        raise RuntimeError(f"{len(files)} pages holding {count} records; expected {PAGES} and {RECORDS}")
    return sample


def haul_job(base_url: str, concurrency: int) -> str:
    return f"""name = "bench-http"
parallelism = 1
batch_size = {PER_PAGE}

[source]
type = "http"
url = "{base_url}/items"
records = "data"
prefetch = {concurrency}

[source.pagination]
type = "page_number"
total_pages = "total_pages"

[source.politeness]
concurrency = {concurrency}

[sink]
type = "file"
path = "out"
format = "jsonl"
"""


def verify_haul(out: Path) -> None:
    """Ids 1..RECORDS once each, and sampled records equal to the generator's."""
    seen = bytearray(RECORDS + 1)
    count = 0
    samples = {}
    for part in sorted(out.glob("*.jsonl")):
        with open(part, "rb") as f:
            for line in f:
                item = json.loads(line)
                identifier = item["id"]
                if not 1 <= identifier <= RECORDS or seen[identifier]:
                    raise RuntimeError(f"id {identifier} out of range or repeated")
                seen[identifier] = 1
                count += 1
                if identifier % 99_991 == 1:
                    samples[identifier] = item
    if count != RECORDS:
        raise RuntimeError(f"{count} records written; expected {RECORDS}")
    for identifier, item in samples.items():
        if item != record(identifier):
            raise RuntimeError(f"record {identifier} is {item}, expected {record(identifier)}")


def run_haul(haul: Path, nginx: Nginx, concurrency: int, log_path: Path, timeout: float) -> Sample:
    work = reset_dir(WORK / "haul")
    (work / "job.toml").write_text(haul_job(nginx.base_url, concurrency))
    argv = [str(haul), "run", "--progress", "none", "--state-dir", str(work / "state"), "job.toml"]
    sample = timed([argv], log_path, cwd=work, timeout=timeout)
    verify_haul(work / "out")
    return sample


def run_dlt(nginx: Nginx, destination: str, log_path: Path, timeout: float) -> Sample:
    work = reset_dir(WORK / "dlt")
    target = work / ("items.duckdb" if destination == "duckdb" else "files")
    argv = [str(VENV / "bin" / "python"), str(DLT_PEER), nginx.base_url, str(PAGES), destination, str(target),
            str(work / "pipelines")]
    sample = timed([argv], log_path, cwd=work, timeout=timeout)
    if destination == "duckdb":
        query = (f"import duckdb; print(duckdb.connect({str(target)!r}, read_only=True)"
                 ".execute('select count(*), count(distinct id) from bench.items').fetchone())")
        counted = run([str(VENV / "bin" / "python"), "-c", query], with_stderr=True).strip()
        rows, distinct = (int(x) for x in re.findall(r"\d+", counted)[:2])
    else:
        ids = [json.loads(line)["id"] for path in target.rglob("items/*.jsonl") for line in open(path, "rb")]
        rows, distinct = len(ids), len(set(ids))
    if rows != RECORDS or distinct != RECORDS:
        raise RuntimeError(f"{rows} rows ({distinct} distinct ids) loaded; expected {RECORDS}")
    return sample


def setup_dlt() -> str:
    """Installs dlt into bench/.venv; returns its version."""
    python = str(ensure_venv("dlt"))
    if subprocess.run([python, "-c", "import dlt, duckdb"], capture_output=True).returncode != 0:
        log("dlt: pip install dlt[duckdb] into bench/.venv …")
        error = pip_install("dlt[duckdb]")
        if error:
            raise RuntimeError(f"pip install dlt[duckdb] failed: {error}")
    return run([python, "-c", "import dlt; print(dlt.__version__)"], with_stderr=True).strip()


# ---------------------------------------------------------------- report


def runs(count: int) -> str:
    return f"the median of {count} runs" if count > 1 else "one run"


def report(results: list[Result], versions: str, concurrency: int, repeats: tuple[int, int],
           dlt_destination: str) -> str:
    by_tool = {r.tool: r for r in results}
    curl, haul, dlt = by_tool.get("curl"), by_tool.get("haul"), by_tool.get("dlt")
    rows = ["| tool | wall s | records/s | time ÷ curl's | dlt's time ÷ tool's | peak RSS MB | status |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        vs_curl = r.wall / curl.wall if r.ok and curl is not None and curl.ok else None
        vs_dlt = dlt.wall / r.wall if r.ok and dlt is not None and dlt.ok else None
        status = f"ok: {RECORDS:,} records verified" if r.ok else f"FAILED: {r.error}"
        rows.append(f"| {r.tool} | {fmt(r.wall, '.2f')} | {fmt(r.per_second(RECORDS), ',.0f')} | "
                    f"{fmt(vs_curl, '.2f')} | {fmt(vs_dlt, '.1f')} | {fmt(r.rss_mb, '.0f')} | "
                    f"{status.replace('|', '/')} |")
    targets = []
    if haul is not None and haul.ok:
        if curl is not None and curl.ok:
            ratio = haul.wall / curl.wall
            targets.append(f"within 1.5× of curl: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}×)")
        if dlt is not None and dlt.ok:
            ratio = dlt.wall / haul.wall
            targets.append(f"≥ 10× faster than dlt: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}×)")
        targets.append(f"peak RSS ≤ 100 MB: {'met' if (haul.rss_mb or 0) <= 100 else 'NOT met'} "
                       f"({fmt(haul.rss_mb, '.0f')} MB)")
    target_line = ("Targets for haul: " + "; ".join(targets) + ".") if targets else \
        "Targets: not evaluated (haul's run failed or was not made)."
    out = [
        "## HTTP API",
        "",
        f"Written by `python3 bench/http.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions}",
        f"- API: {RECORDS:,} records in {PAGES:,} JSON pages of {PER_PAGE:,} (~230 bytes a record: strings,"
        " numbers, a boolean, a time, an array, a nested object, nulls), static files served by nginx"
        " (Debian package, 1 worker, no access log) on 127.0.0.1 as `GET /items?page=N`; each page says"
        " `total_pages`.",
        f"- curl: `curl --parallel --parallel-max {concurrency}` saving the pages to files (transport only,"
        f" no parsing). haul: `haul run` with the `http` source (page_number pagination, `prefetch = {concurrency}`,"
        f" `politeness.concurrency = {concurrency}`, one shard) into the file sink's JSON Lines. dlt: the"
        f" `rest_api` source with its page_number paginator (it fetches one page at a time) into"
        f" {'duckdb' if dlt_destination == 'duckdb' else 'uncompressed JSON Lines files'}.",
        f"- Each figure: {runs(repeats[0])} (dlt: {runs(repeats[1])}); wall time of"
        " the whole command, start-up included; peak RSS from GNU time (`%M`) of the tool, nginx not"
        " counted. Every run is checked by counting its output records (1,000,000, distinct ids; haul's"
        " sampled records equal to the generator's).",
        "",
        "\n".join(rows),
        "",
        target_line,
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--haul", type=Path, default=DEFAULT_HAUL, help="haul release binary")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    ap.add_argument("--dlt-repeat", type=int, default=1, help="runs of dlt (minutes each), median")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight, for curl and haul")
    ap.add_argument("--tools", default="curl,haul,dlt", help="comma-separated: curl,haul,dlt")
    ap.add_argument("--dlt-destination", choices=("duckdb", "filesystem"), default="filesystem",
                    help="where dlt loads: filesystem (JSON Lines) took 144 s and 88 MB here, duckdb 409 s and 7.5 GB")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it counts as FAILED")
    ap.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    ensure_time()
    tools = args.tools.split(",")
    ensure_site()
    versions = []
    results = []
    with tempfile.TemporaryDirectory(prefix="haul-bench-nginx-") as tmp, serve_api(Path(tmp)) as nginx:
        versions.append(f"nginx {nginx.version()}")
        if "curl" in tools:
            versions.append(run(["curl", "--version"], with_stderr=True).splitlines()[0].split(" (")[0])
            log("curl …")
            results.append(measure("curl", lambda path: run_curl(nginx, args.concurrency, path, args.timeout),
                                   args.repeat, LOGS / "curl"))
        if "haul" in tools:
            haul = args.haul.resolve()
            versions.append(run([str(haul), "--version"], check=False, with_stderr=True).strip()
                            if haul.exists() else f"no haul at {haul}")
            log("haul …")
            results.append(measure("haul", lambda path: run_haul(haul, nginx, args.concurrency, path, args.timeout),
                                   args.repeat, LOGS / "haul"))
        if "dlt" in tools:
            versions.append(f"dlt {setup_dlt()}")
            log(f"dlt ({args.dlt_destination}) …")
            results.append(measure("dlt", lambda path: run_dlt(nginx, args.dlt_destination, path, args.timeout),
                                   args.dlt_repeat, LOGS / "dlt"))
        for result in results:
            log(f"{result.tool}: " + (f"{result.wall:.2f} s, {result.per_second(RECORDS):,.0f} records/s, "
                                      f"{fmt(result.rss_mb, '.0f')} MB" if result.ok else f"FAILED: {result.error}"))
    section = report(results, ", ".join(versions), args.concurrency, (args.repeat, args.dlt_repeat),
                     args.dlt_destination)
    print("\n" + section)
    if not args.no_results:
        write_results(section, marker="http-benchmark")
        log(f"written: {RESULTS.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
