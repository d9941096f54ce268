#!/usr/bin/env python3
"""haul crawl benchmark: haul's `crawl` source against Scrapy on a local site.

What it measures, side by side in one run:

  haul     `haul run` of a generated job: the `crawl` source (seeds: the home
           page, every link followed) into the `file` sink (JSON Lines)
  scrapy   `scrapy runspider bench/peers/crawl_spider.py` (PyPI, in
           bench/.venv), following every link, into a JSON Lines feed

Both extract the same fields from every page (title, heading, price, tags as
a list, description; text with whitespace collapsed) at the same
concurrency (`--concurrency`, 16 by default: haul's `concurrency` and
per-host `politeness.concurrency`, Scrapy's CONCURRENT_REQUESTS and
CONCURRENT_REQUESTS_PER_DOMAIN), both obey robots.txt, neither waits between
requests.

How:

* The site is 10,000 static pages (about 3 KB each, six links per page:
  absolute, relative, with fragments, back home) plus a robots.txt, generated
  once into bench/out/crawl/site and served by nginx from Debian
  (`apt-get install -y nginx-light` if missing) on a free 127.0.0.1 port, with
  one worker process, no access log, and a config generated in a temporary
  folder. The crawlers fetch over real HTTP on loopback.
* Each command runs under /usr/bin/time: wall time around the whole command
  (start-up included), peak RSS (`%M`) of the crawler process; nginx is not
  counted.
* Every run is verified: exactly 10,000 records, 10,000 distinct URLs, and the
  fields of a sample of pages equal to what the generator wrote. A run that
  does not pass is FAILED, never timed as a success.
* `--repeat N` keeps the median wall time (and peak RSS).
* The table goes to stdout and to the `## Crawl` section of bench/RESULTS.md.

Usage: python3 bench/crawl.py [--haul PATH] [--repeat N] [--concurrency C]
                              [--tools haul,scrapy] [--no-results]
Standard library only; Scrapy runs from bench/.venv.
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
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from benchlib import (  # noqa: E402
    BENCH, DEFAULT_HAUL, RESULTS, VENV, Nginx, Result, Sample, ensure_time, ensure_venv, fmt, log, machine,
    measure, pip_install, run, timed, write_results,
)

PAGES = 10_000
OUT = BENCH / "out" / "crawl"
SITE = OUT / "site"
LOGS = OUT / "logs"
SPIDER = BENCH / "peers" / "crawl_spider.py"
HOME = "/p/0.html"  # the page both crawlers start from
SITE_VERSION = "1"  # bump when the generator changes, to regenerate the site

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


# ---------------------------------------------------------------- the site


def page_fields(n: int) -> dict:
    """What a crawler must extract from page n."""
    return {
        "title": f"Product {n}",
        "heading": f"Product {n} of {PAGES}",
        "price": f"{(n * 7919) % 100000 / 100:.2f}",
        "tags": [f"group-{n % 10}", f"size-{n % 4}", WORDS[n % len(WORDS)]],
        "description": description(n),
    }


def description(n: int) -> str:
    words = [WORDS[(n * 31 + i * 7) % len(WORDS)] for i in range(300)]
    return " ".join(words)


def page_html(n: int) -> str:
    f = page_fields(n)
    links = [
        f'<a href="/p/{(n + 1) % PAGES}.html">next</a>',
        f'<a href="{(n * 7 + 3) % PAGES}.html">related</a>',
        f'<a href="{(n * 13 + 5) % PAGES}.html#reviews">reviews</a>',
        f'<a href="/p/{(n + 100) % PAGES}.html">further</a>',
        '<a href="/p/0.html">home</a>',
        '<a href="#top">top</a>',
    ]
    tags = "".join(f'<li class="tag">{tag}</li>' for tag in f["tags"])
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + f["title"] + "</title></head>\n"
        "<body><nav>" + " ".join(links) + "</nav>\n"
        f"<h1>Product <b>{n}</b> of {PAGES}</h1>\n"
        f"<p>Price: <span class=\"price\">{f['price']}</span> EUR</p>\n"
        f"<ul>{tags}</ul>\n"
        f"<p class=\"description\">{f['description']}</p>\n"
        "</body></html>\n"
    )


def ensure_site() -> None:
    """Writes the site once; reused while its version marker matches."""
    marker = SITE / ".version"
    if marker.exists() and marker.read_text() == f"{SITE_VERSION} {PAGES}":
        return
    log(f"site: generating {PAGES:,} pages in {SITE.relative_to(BENCH.parent)} …")
    shutil.rmtree(SITE, ignore_errors=True)
    (SITE / "p").mkdir(parents=True)
    (SITE / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    for n in range(PAGES):
        (SITE / "p" / f"{n}.html").write_text(page_html(n))
    marker.write_text(f"{SITE_VERSION} {PAGES}")


def serve_site(folder: Path) -> Nginx:
    """nginx serving the site, its config and runtime files in folder."""
    return Nginx(folder, SITE, mime_types={"text/html": "html", "text/plain": "txt"},
                 default_type="application/octet-stream")


# ---------------------------------------------------------------- tools


def read_records(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def verify(records: list[dict], origin: str) -> None:
    """Exactly one record per page, with the fields the generator wrote."""
    urls = [record["url"] for record in records]
    if len(records) != PAGES or len(set(urls)) != PAGES:
        raise RuntimeError(f"{len(records)} records, {len(set(urls))} distinct urls; expected {PAGES} of each")
    by_url = {record["url"]: record for record in records}
    for n in range(0, PAGES, 997):
        record = by_url.get(f"{origin}/p/{n}.html")
        if record is None:
            raise RuntimeError(f"no record for page {n}")
        got = {key: record.get(key) for key in page_fields(n)}
        if got != page_fields(n) or record.get("status") != 200:
            raise RuntimeError(f"page {n}: extracted {got}, expected {page_fields(n)}")


def haul_job(start_url: str, concurrency: int, out_dir: Path) -> str:
    return f"""
parallelism = 1
batch_size = 2000

[source]
type = "crawl"
seeds = ["{start_url}"]
concurrency = {concurrency}
metadata = ["url", "status"]
fields = [
  {{ name = "title", selector = "title" }},
  {{ name = "heading", selector = "h1" }},
  {{ name = "price", selector = "span.price" }},
  {{ name = "tags", selector = "li.tag", multiple = true }},
  {{ name = "description", selector = "p.description" }},
]

[source.politeness]
concurrency = {concurrency}

[sink]
type = "file"
path = "{out_dir}"
format = "jsonl"
"""


def run_haul(haul: Path, nginx: Nginx, concurrency: int, log_path: Path, timeout: float) -> Sample:
    work = OUT / "haul"
    shutil.rmtree(work, ignore_errors=True)
    out_dir = work / "records"
    out_dir.mkdir(parents=True)
    (work / "job.toml").write_text(haul_job(nginx.base_url + HOME, concurrency, out_dir))
    sample = timed([[str(haul), "run", "--progress", "none", "job.toml"]], log_path, cwd=work, timeout=timeout)
    parts = [p for p in out_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    verify(read_records(parts), nginx.base_url)
    return sample


def run_scrapy(nginx: Nginx, concurrency: int, log_path: Path, timeout: float) -> Sample:
    work = OUT / "scrapy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    feed = work / "records.jsonl"
    settings = {
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": True,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
    }
    argv = [str(VENV / "bin" / "scrapy"), "runspider", str(SPIDER), "-a", f"start={nginx.base_url + HOME}",
            "-O", f"{feed}:jsonlines"]
    for key, value in settings.items():
        argv += ["-s", f"{key}={value}"]
    sample = timed([argv], log_path, cwd=work, timeout=timeout)
    verify(read_records([feed]), nginx.base_url)
    return sample


def setup_scrapy() -> str:
    """Installs Scrapy into bench/.venv; returns its version."""
    ensure_venv("scrapy")
    if not (VENV / "bin" / "scrapy").exists():
        log("scrapy: pip install scrapy into bench/.venv …")
        error = pip_install("scrapy")
        if error:
            raise RuntimeError(f"pip install scrapy failed: {error}")
    return run([str(VENV / "bin" / "scrapy"), "version"], with_stderr=True).strip().split()[-1]


# ---------------------------------------------------------------- report


def report(results: list[Result], versions: str, concurrency: int, repeat: int) -> str:
    by_tool = {r.tool: r for r in results}
    scrapy = by_tool.get("scrapy")
    rows = ["| tool | wall s | pages/s | × Scrapy pages/s | peak RSS MB | status |", "|---|---|---|---|---|---|"]
    for r in results:
        ratio = (r.per_second(PAGES) / scrapy.per_second(PAGES)
                 if r.ok and scrapy is not None and scrapy.ok else None)
        status = "ok: 10,000 records verified" if r.ok else f"FAILED: {r.error}"
        rows.append(f"| {r.tool} | {fmt(r.wall, '.2f')} | {fmt(r.per_second(PAGES), ',.0f')} | "
                    f"{fmt(ratio, '.1f')} | {fmt(r.rss_mb, '.0f')} | {status.replace('|', '/')} |")
    haul = by_tool.get("haul")
    if haul is not None and haul.ok and scrapy is not None and scrapy.ok:
        ratio = haul.per_second(PAGES) / scrapy.per_second(PAGES)
        targets = (f"Targets: ≥ 10× Scrapy's pages/s: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}×); "
                   f"haul's peak RSS ≤ 100 MB: {'met' if (haul.rss_mb or 0) <= 100 else 'NOT met'} "
                   f"({fmt(haul.rss_mb, '.0f')} MB).")
    else:
        targets = "Targets: not evaluated (a run failed or was not made)."
    out = [
        "## Crawl",
        "",
        f"Written by `python3 bench/crawl.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions}",
        f"- Site: {PAGES:,} generated static pages (~3 KB, six links each: absolute, relative, fragments,"
        " home) and a robots.txt, served by nginx (Debian package, 1 worker, no access log) on 127.0.0.1.",
        f"- Both crawl from the home page following every link, at concurrency {concurrency} (haul"
        " `concurrency` and `politeness.concurrency`; Scrapy CONCURRENT_REQUESTS and"
        " CONCURRENT_REQUESTS_PER_DOMAIN), obey robots.txt, no delay, and extract the same five fields"
        " (title, heading, price, tags, description); haul writes JSON Lines through the file sink,"
        " Scrapy through its JSON Lines feed.",
        f"- Each figure: {'the median of ' + str(repeat) + ' runs' if repeat > 1 else 'one run'}; wall time of"
        " the whole command, start-up included; pages/s = 10,000 / wall time; peak RSS from GNU time"
        " (`%M`) of the crawler, nginx not counted. Every run is checked: 10,000 records, 10,000"
        " distinct URLs, sampled pages' fields equal to the generator's.",
        "",
        "\n".join(rows),
        "",
        targets,
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--haul", type=Path, default=DEFAULT_HAUL, help="haul release binary")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight, for both crawlers")
    ap.add_argument("--tools", default="haul,scrapy", help="comma-separated: haul,scrapy")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it counts as FAILED")
    ap.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    ensure_time()
    tools = args.tools.split(",")
    ensure_site()
    versions = []
    results = []
    with tempfile.TemporaryDirectory(prefix="haul-bench-nginx-") as tmp, serve_site(Path(tmp)) as nginx:
        versions.append(f"nginx {nginx.version()}")
        if "haul" in tools:
            haul = args.haul.resolve()
            versions.append(run([str(haul), "--version"], check=False, with_stderr=True).strip()
                            if haul.exists() else f"no haul at {haul}")
            log("haul …")
            results.append(measure("haul", lambda path: run_haul(haul, nginx, args.concurrency, path, args.timeout),
                                   args.repeat, LOGS / "haul"))
        if "scrapy" in tools:
            versions.append(f"Scrapy {setup_scrapy()}")
            log("scrapy …")
            results.append(measure("scrapy", lambda path: run_scrapy(nginx, args.concurrency, path, args.timeout),
                                   args.repeat, LOGS / "scrapy"))
        for result in results:
            log(f"{result.tool}: " + (f"{result.wall:.2f} s, {result.per_second(PAGES):,.0f} pages/s, "
                                      f"{fmt(result.rss_mb, '.0f')} MB" if result.ok else f"FAILED: {result.error}"))
    section = report(results, ", ".join(versions), args.concurrency, args.repeat)
    print("\n" + section)
    if not args.no_results:
        write_results(section, marker="crawl-benchmark")
        log(f"written: {RESULTS.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
