"""Shared pieces of haul's benchmark scripts (copy.py, processors.py, crawl.py, http.py, scheduler.py, cluster.py).

Logging and running short commands; timing a command (or a pipeline) under GNU
time for its wall time and peak RSS, and repeating a measurement for its
median; the PostgreSQL table `bench_rows` that the copy and processor
benchmarks read; bench/.venv for the peers; nginx serving a generated site on
a free 127.0.0.1 port; the machine line of a report; and replacing a script's
section of bench/RESULTS.md.

This folder holds copy.py and http.py, which would shadow the standard
library's `copy` and `http`: every script moves the folder behind the standard
library on sys.path before importing this module. Standard library only.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
VENV = BENCH / ".venv"
RESULTS = BENCH / "RESULTS.md"
DEFAULT_HAUL = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "haul-target")) / "release" / "haul"
TIME = "/usr/bin/time"
NGINX = "/usr/sbin/nginx"


# ---------------------------------------------------------------- logging and commands


def logger(prefix: str = "", stream: TextIO | None = None) -> Callable[[str], None]:
    """A log function: each message on a line of stream (stdout when None), after prefix, flushed at once."""

    def log(message: str) -> None:
        print(prefix + message, file=stream, flush=True)

    return log


log = logger()


def run(cmd: list[str], *, input: str | None = None, env: dict | None = None, check: bool = True,
        with_stderr: bool = False) -> str:
    """Runs a short command and returns its stdout (then its stderr, with_stderr).

    With check, a non-zero exit raises RuntimeError carrying the end of stderr.
    """
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p.stdout + p.stderr if with_stderr else p.stdout


# ---------------------------------------------------------------- files


def reset_dir(folder: Path) -> Path:
    """Empties folder (creating it and its parents when missing)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def count_lines(folder: Path) -> int:
    """Counts the lines of every regular file under folder, skipping names starting with `.` or `_`."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not any(part.startswith(".") or part.startswith("_") for part in path.relative_to(folder).parts):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
    return total


# ---------------------------------------------------------------- PostgreSQL and the bench_rows table

ROWS = 1_000_000
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
COLUMNS = "id, qty, price, code, body, created, active, amount, maybe_int, maybe_text, updated"

PG_SCHEMA = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY,
    qty int NOT NULL,
    price double precision NOT NULL,
    code varchar(64) NOT NULL,
    body text NOT NULL,
    created timestamp NOT NULL,
    active boolean NOT NULL,
    amount numeric(12,2) NOT NULL,
    maybe_int int NULL,
    maybe_text varchar(64) NULL,
    updated timestamptz NOT NULL
)"""

# Deterministic, mixed values; body is about 100 bytes; maybe_* ~20% NULL.
PG_FILL = f"""
INSERT INTO {{table}} ({COLUMNS})
SELECT g,
       (g * 7919) % 1000,
       ((g * 104729) % 1000003) / 100.0 + 0.125,
       'C-' || upper(to_hex((g * 2654435761) % 4294967296)),
       'row ' || g || ': ' || md5(g::text) || ' ' || md5((g + 1)::text) || ' lorem ipsum dolor sit',
       timestamp '2020-01-01 00:00:00' + g * interval '37 seconds' + (g % 1000) * interval '1 millisecond',
       g % 3 <> 0,
       ((g * 31) % 10000000) / 100.0,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g * 13) % 100000 END,
       CASE WHEN g % 5 = 2 THEN NULL ELSE 'text-' || (g * 17) % 99991 END,
       timestamptz '2021-06-01 00:00:00+00' + g * interval '1.5 seconds'
FROM generate_series(1::bigint, {{rows}}) AS g"""


def pg_env() -> dict:
    return {**os.environ, "PGTZ": "UTC", "PGOPTIONS": "-c client_min_messages=warning"}


def psql(sql: str) -> str:
    """Runs sql in PostgreSQL database `test`; returns the unaligned, tuples-only output."""
    return run(PSQL + ["-A", "-t", "-c", sql], env=pg_env()).strip()


def pg_count(table: str) -> int:
    """The rows of table, or -1 when it cannot be counted (missing table)."""
    try:
        return int(psql(f"SELECT count(*) FROM {table}"))
    except (RuntimeError, ValueError):
        return -1


def pg_drop(*tables: str) -> None:
    psql("; ".join(f"DROP TABLE IF EXISTS {t}" for t in tables))


def make_pg_table(table: str, rows: int) -> None:
    """(Re)creates table with bench_rows' 11 columns and its deterministic rows 1..rows, then analyzes it."""
    psql(f"DROP TABLE IF EXISTS {table}")
    psql(PG_SCHEMA.format(table=table))
    psql(PG_FILL.format(table=table, rows=rows))
    psql(f"VACUUM ANALYZE {table}")


# ---------------------------------------------------------------- bench/.venv


def ensure_venv(label: str) -> Path:
    """Creates bench/.venv when missing (logged under label); returns its python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"{label}: creating bench/.venv …")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    return python


def pip_install(*specs: str) -> str | None:
    """pip-installs specs into bench/.venv; returns None, or the end of pip's error."""
    p = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *specs],
                       capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or p.stdout.strip())[-400:]


# ---------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One timed run: wall seconds and peak RSS in MB (None when GNU time is missing)."""

    wall: float
    rss_mb: float | None


@dataclass
class Result:
    """One tool's measurement: the median of its samples, or why there is none."""

    tool: str
    wall: float | None = None
    rss_mb: float | None = None
    error: str | None = None  # FAILED reason, or why the tool does not run here
    skipped: bool = False  # True: not supported / not installed (not a failure of the run)

    @property
    def ok(self) -> bool:
        return self.error is None and self.wall is not None

    def per_second(self, count: int) -> float | None:
        """count items (rows, pages, records) over the wall time; None without a successful run."""
        return count / self.wall if self.ok else None


def ensure_time() -> None:
    """Makes sure GNU time is installed (apt-get install time if not); warns when it cannot be."""
    if Path(TIME).exists():
        return
    log("installing GNU time (apt-get install -y time) …")
    subprocess.run(["apt-get", "install", "-y", "-q", "time"], capture_output=True)
    if not Path(TIME).exists():
        log("warning: GNU time is missing and could not be installed: peak RSS will show as —")


def timed(stages: list[list[str]], log_path: Path, *, timeout: float, env: dict | None = None,
          cwd: Path | None = None) -> Sample:
    """Runs stages as a pipeline (stage i's stdout into stage i+1), each under GNU time when installed.

    log_path gets a `$ command` line, then the last stage's stdout and every
    stage's stderr. Returns the wall time of the whole pipeline and the sum of
    the stages' peak RSS (they run at the same time). Raises RuntimeError with
    the gist of the log if a stage fails, or after killing every stage when the
    timeout passes.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    gnu_time = Path(TIME).exists()
    rss_paths = []
    for _ in stages:
        with tempfile.NamedTemporaryFile(prefix="haul-bench-rss-", delete=False) as rss_file:
            rss_paths.append(Path(rss_file.name))
    procs: list[subprocess.Popen] = []
    try:
        with open(log_path, "wb") as logf:
            logf.write(("$ " + " | ".join(" ".join(s) for s in stages) + "\n").encode())
            logf.flush()
            start = time.monotonic()
            prev = None
            for i, argv in enumerate(stages):
                last = i == len(stages) - 1
                wrapped = [TIME, "-f", "%e %M", "-o", str(rss_paths[i])] + argv if gnu_time else argv
                p = subprocess.Popen(wrapped, stdin=prev.stdout if prev else subprocess.DEVNULL,
                                     stdout=logf if last else subprocess.PIPE, stderr=logf,
                                     env=env, cwd=cwd, start_new_session=True)
                if prev:
                    prev.stdout.close()  # so the writer gets SIGPIPE if the reader dies
                procs.append(p)
                prev = p
            deadline = start + timeout
            try:
                codes = [p.wait(timeout=max(1, deadline - time.monotonic())) for p in procs]
            except subprocess.TimeoutExpired:
                for p in procs:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                raise RuntimeError(f"timed out after {timeout:.0f} s") from None
            wall = time.monotonic() - start
        peaks = [read_peak_kb(path) for path in rss_paths]
    finally:
        for path in rss_paths:
            path.unlink(missing_ok=True)
    if any(c != 0 for c in codes):
        raise RuntimeError(f"exit status {codes[0] if len(codes) == 1 else codes}: {tail(log_path)}")
    rss = sum(peaks) / 1024 if all(k is not None for k in peaks) else None
    return Sample(wall, rss)


def read_peak_kb(path: Path) -> int | None:
    """Reads %M from a GNU time output file (its last line is '%e %M')."""
    try:
        lines = path.read_text().strip().splitlines()
        return int(lines[-1].split()[-1])
    except (OSError, IndexError, ValueError):
        return None


def tail(path: Path, chars: int = 400) -> str:
    """The gist of a failed run's log: its last error line, else its last characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace")).strip()
    errors = [line for line in text.splitlines()[1:] if re.search(r"error|exception|fatal|panic", line, re.I)]
    gist = errors[-1].strip() if errors else text[-chars:]
    return re.sub(r"\s+", " ", gist)[:chars] + f" (log: {path.relative_to(BENCH)})"


def measure(tool: str, attempt: Callable[[Path], Sample], repeat: int, log_stem: Path) -> Result:
    """Calls attempt repeat times and keeps the median wall time and peak RSS.

    Attempt i logs to `<log_stem>-<i>.log` (`<log_stem>.log` for a single
    run). The first exception ends the measurement as FAILED with its message.
    """
    samples = []
    for i in range(repeat):
        log_path = log_stem.with_name(f"{log_stem.name}{'-' + str(i + 1) if repeat > 1 else ''}.log")
        try:
            samples.append(attempt(log_path))
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            return Result(tool, error=str(e)[:600])
    rss = [s.rss_mb for s in samples if s.rss_mb is not None]
    return Result(tool, wall=statistics.median(s.wall for s in samples),
                  rss_mb=statistics.median(rss) if rss else None)


# ---------------------------------------------------------------- nginx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx (the Debian package) serving root as static files on a free 127.0.0.1 port.

    One worker, no access log, keep-alive without a request limit; its config,
    pid, error log and temporary folders live in folder. Entering installs
    nginx-light when missing, starts it and waits until it listens (or raises
    RuntimeError); leaving stops it. mime_types maps a content type to the file
    extension it serves; locations are extra `location` lines of the server.
    """

    def __init__(self, folder: Path, root: Path, *, mime_types: dict[str, str], default_type: str,
                 locations: tuple[str, ...] = ()):
        self.folder = folder
        self.root = root
        self.mime_types = mime_types
        self.default_type = default_type
        self.locations = locations
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Nginx":
        if not Path(NGINX).exists():
            log("installing nginx (apt-get install -y nginx-light) …")
            subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], capture_output=True)
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is not installed and could not be installed")
        conf = self.folder / "nginx.conf"
        temp = {name: self.folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        types = " ".join(f"{mime} {extension};" for mime, extension in self.mime_types.items())
        locations = "".join(f"        {line}\n" for line in self.locations)
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ {types} }}
    default_type {self.default_type};
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
{locations}    }}
}}
""")
        self.process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port}")

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        out = run([NGINX, "-v"], check=False, with_stderr=True)
        return (re.findall(r"nginx/(\S+)", out) or ["?"])[0]


# ---------------------------------------------------------------- reports


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def machine(*, brief: bool = False) -> str:
    """The machine line of a report: CPUs, memory, CPU model, OS and the load average now.

    brief: only CPUs, CPU model and load average.
    """
    nproc = run(["nproc"]).strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if brief:
        return f"nproc {nproc}, {cpu}; load average at the end {load}"
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return (f"nproc {nproc}, {mem_kb / 1048576:.1f} GiB memory, {cpu}, "
            f"{platform.system()} {platform.release()}; load average at the end {load}"
            " (a load above nproc means other work shared the machine: figures are noisier)")


def write_results(section: str, *, marker: str | None = None, results: Path = RESULTS) -> None:
    """Replaces a script's section of bench/RESULTS.md, or appends it.

    With marker, the section is wrapped in `<!-- marker:start -->` and
    `<!-- marker:end -->` comments and found by them. Without, it is found by
    its heading (section's first line) and runs up to the next `## ` heading,
    leaving the marker comments just above that heading to the next section.
    """
    text = results.read_text() if results.exists() else "# haul benchmark results\n\n"
    if marker:
        start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
        block = f"{start}\n{section}{end}\n"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1:]
        else:
            text = text.rstrip("\n") + "\n\n" + block
        results.write_text(text)
        return
    heading = section.split("\n", 1)[0]
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if first is None:
        results.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end < len(lines) and end > first + 1 and lines[end - 1].startswith("<!--"):
        end -= 1
    rest = "".join(lines[end:])
    results.write_text("".join(lines[:first]) + section + ("\n" + rest if rest else ""))
