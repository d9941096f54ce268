"""Collect a paginated JSON API with dlt's rest_api source, as a peer in
haul's HTTP benchmark.

Run by bench/http.py with the interpreter of bench/.venv:

    python http_dlt.py BASE_URL PAGES DESTINATION TARGET PIPELINES_DIR

BASE_URL serves `GET /items?page=N` (N from 1) as {"data": [...], "total_pages": PAGES}.
DESTINATION is `duckdb` (TARGET: the database file) or `filesystem` (TARGET:
a folder, uncompressed JSONL). Prints the number of rows loaded into `items`.
"""

import os
import sys

os.environ.setdefault("NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION", "true")
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # noqa: E402


def main() -> int:
    base_url, pages, destination, target, pipelines_dir = sys.argv[1:6]
    source = rest_api_source({
        "client": {
            "base_url": base_url,
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": "total_pages"},
        },
        "resources": [{"name": "items", "endpoint": {"path": "items", "data_selector": "data"}}],
    })
    if destination == "duckdb":
        dest = dlt.destinations.duckdb(credentials=os.path.abspath(target))
        file_format = None
    else:
        dest = dlt.destinations.filesystem(bucket_url="file://" + os.path.abspath(target))
        file_format = "jsonl"
    pipeline = dlt.pipeline(pipeline_name="haul_bench_http", pipelines_dir=pipelines_dir, destination=dest,
                            dataset_name="bench")
    info = pipeline.run(source, write_disposition="replace", loader_file_format=file_format)
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get("items", 0)
    print(f"dlt loaded {rows} rows into bench.items ({pages} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
