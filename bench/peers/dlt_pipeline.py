"""Copy one table with dlt, as a peer in haul's copy benchmark.

Run by bench/copy.py with the interpreter of bench/.venv:

    python dlt_pipeline.py SOURCE_URL TABLE postgres DEST_URL DATASET PIPELINES_DIR BACKEND
    python dlt_pipeline.py SOURCE_URL TABLE filesystem OUT_DIR DATASET PIPELINES_DIR BACKEND

SOURCE_URL is an SQLAlchemy URL (postgresql+psycopg2://…, mysql+pymysql://…).
BACKEND is the sql_database backend ("sqlalchemy" is dlt's default, "pyarrow"
its fast path). The filesystem destination writes uncompressed JSONL.
Prints the number of rows loaded.
"""

import os
import sys

# Uncompressed files, like the other tools' JSONL outputs.
os.environ.setdefault("NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION", "true")
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# MariaDB batches may differ in nullability: merge them losslessly.
os.environ.setdefault("DATA_WRITER__ARROW_CONCAT_PROMOTE_OPTIONS", "default")

import dlt  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from dlt.sources.sql_database import sql_table  # noqa: E402


def plain_doubles(table):
    """SQLAlchemy reflects MySQL DOUBLE with asdecimal=True (values as Decimal): read floats, like the source."""
    for column in table.columns:
        if isinstance(column.type, sa.Float) and column.type.asdecimal:
            column.type = sa.Float(asdecimal=False)
    return table


def main() -> int:
    source_url, table, destination, target, dataset, pipelines_dir, backend = sys.argv[1:8]
    if destination == "postgres":
        dest = dlt.destinations.postgres(credentials=target)
        file_format = None
    else:
        dest = dlt.destinations.filesystem(bucket_url="file://" + os.path.abspath(target))
        file_format = "jsonl"
    resource = sql_table(credentials=source_url, table=table, backend=backend, chunk_size=50000,
                         table_adapter_callback=plain_doubles)
    pipeline = dlt.pipeline(
        pipeline_name="haul_bench_" + dataset,
        pipelines_dir=pipelines_dir,
        destination=dest,
        dataset_name=dataset,
    )
    info = pipeline.run(resource, write_disposition="replace", loader_file_format=file_format)
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(table, 0)
    print(f"dlt loaded {rows} rows into {dataset}.{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
