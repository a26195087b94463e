"""Warehouse I/O by URI: the one place that knows how to read and write tables.

Supported URIs:
- a `.csv` or `.parquet` file path,
- `duckdb://PATH?table=NAME`: a table in an embedded DuckDB file,
- `bq://PROJECT.DATASET.TABLE`: a BigQuery table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

import pandas as pd
import pyarrow as pa

from components.errors import SourceError

UriKind = Literal["csv", "parquet", "duckdb", "bigquery"]
URI_FORMS = "a .csv or .parquet path, duckdb://PATH?table=NAME or bq://PROJECT.DATASET.TABLE"


@dataclass(frozen=True)
class TableUri:
    """A parsed table URI."""

    uri: str
    kind: UriKind
    path: Path | None = None
    table: str | None = None

    @property
    def bigquery_table(self) -> str:
        """`PROJECT.DATASET.TABLE` of a bq:// URI."""
        return self.uri.removeprefix("bq://")


def parse_uri(uri: str) -> TableUri:
    """Parse a table URI, failing with the accepted forms when it is none of them."""
    if uri.startswith("duckdb://"):
        path_part, _, query = uri.removeprefix("duckdb://").partition("?")
        table = parse_qs(query).get("table", [""])[0]
        if not path_part or not table:
            raise SourceError(f"{uri!r} needs a file and a table: duckdb://PATH?table=NAME")
        if not table.replace("_", "").isalnum():
            raise SourceError(f"table name {table!r} in {uri!r} must be letters, digits and _")
        return TableUri(uri, "duckdb", Path(path_part), table)
    if uri.startswith("bq://"):
        parts = uri.removeprefix("bq://").split(".")
        if len(parts) != 3 or not all(parts):
            raise SourceError(f"{uri!r} must name a table as bq://PROJECT.DATASET.TABLE")
        return TableUri(uri, "bigquery", table=parts[2])
    suffix = Path(uri).suffix.lower()
    if suffix in (".csv", ".parquet"):
        return TableUri(uri, suffix.lstrip("."), Path(uri))  # type: ignore[arg-type]
    raise SourceError(f"cannot read {uri!r}: expected {URI_FORMS}")


def read_table(uri: str) -> pd.DataFrame:
    """Read a whole table. CSV cells are read as text so that validation, not the CSV
    parser, decides what a malformed value means."""
    location = parse_uri(uri)
    if location.kind == "bigquery":
        return _bigquery_client(location).list_rows(location.bigquery_table).to_dataframe()
    _require_file(location)
    if location.kind == "csv":
        try:
            return pd.read_csv(location.path, dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    if location.kind == "parquet":
        return pd.read_parquet(location.path)
    with _duckdb_connect(location, read_only=True) as con:
        _require_duckdb_table(con, location)
        return con.execute(f'SELECT * FROM "{location.table}"').df()


def iter_batches(uri: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream a table as Arrow record batches of at most `batch_rows` rows, so callers
    hold one batch in memory whatever the table's size."""
    location = parse_uri(uri)
    if location.kind == "bigquery":
        rows = _bigquery_client(location).list_rows(location.bigquery_table, page_size=batch_rows)
        for table in rows.to_arrow_iterable():
            yield from table.to_batches(max_chunksize=batch_rows)
        return
    _require_file(location)
    if location.kind == "csv":
        from pyarrow import csv

        reader = csv.open_csv(
            location.path,
            read_options=csv.ReadOptions(block_size=1 << 24),
            convert_options=csv.ConvertOptions(
                column_types=_csv_text_types(location.path), strings_can_be_null=True
            ),
        )
        for batch in reader:
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
        return
    if location.kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(location.path).iter_batches(batch_size=batch_rows)
        return
    with _duckdb_connect(location, read_only=True) as con:
        _require_duckdb_table(con, location)
        reader = con.execute(f'SELECT * FROM "{location.table}"').fetch_record_batch(batch_rows)
        yield from reader


def _csv_text_types(path: Path | None) -> dict[str, pa.DataType]:
    """Every column of a CSV as text, matching `read_table`'s reading of CSV files."""
    with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
        header = handle.readline().rstrip("\r\n").split(",")
    return {name.strip('"'): pa.string() for name in header}


def write_table(frame: pd.DataFrame, uri: str) -> None:
    """Replace the table at `uri` with `frame`, atomically where the backend allows."""
    location = parse_uri(uri)
    if location.kind == "bigquery":
        from google.cloud import bigquery

        job_config = bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE")
        _bigquery_client(location).load_table_from_dataframe(
            frame, location.bigquery_table, job_config=job_config
        ).result()
        return
    location.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    if location.kind == "csv":
        frame.to_csv(location.path, index=False)
    elif location.kind == "parquet":
        frame.to_parquet(location.path, index=False)
    else:
        with _duckdb_connect(location, read_only=False) as con:
            con.register("incoming", frame)
            con.execute(f'CREATE OR REPLACE TABLE "{location.table}" AS SELECT * FROM incoming')


def table_exists(uri: str) -> bool:
    """Whether the table at `uri` exists (always asked of the backend, never cached)."""
    location = parse_uri(uri)
    if location.kind == "bigquery":
        from google.api_core.exceptions import NotFound

        try:
            _bigquery_client(location).get_table(location.bigquery_table)
        except NotFound:
            return False
        return True
    if not location.path.exists():  # type: ignore[union-attr]
        return False
    if location.kind != "duckdb":
        return True
    with _duckdb_connect(location, read_only=True) as con:
        return _duckdb_has_table(con, location.table)  # type: ignore[arg-type]


def _require_file(location: TableUri) -> None:
    if not location.path.exists():  # type: ignore[union-attr]
        raise SourceError(f"{location.uri}: file {location.path} does not exist")


def _duckdb_connect(location: TableUri, *, read_only: bool):  # -> duckdb.DuckDBPyConnection
    import duckdb

    try:
        return duckdb.connect(str(location.path), read_only=read_only)
    except duckdb.Error as exc:
        raise SourceError(f"{location.uri}: cannot open DuckDB file: {exc}") from None


def _duckdb_has_table(con, table: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(found and found[0])


def _require_duckdb_table(con, location: TableUri) -> None:
    if not _duckdb_has_table(con, location.table):  # type: ignore[arg-type]
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        raise SourceError(
            f"{location.uri}: no table {location.table!r} in {location.path}"
            f" (tables: {', '.join(tables) or 'none'})"
        )


def _bigquery_client(location: TableUri):  # -> bigquery.Client
    from google.cloud import bigquery

    return bigquery.Client(project=location.bigquery_table.split(".")[0])
