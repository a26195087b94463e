"""Warehouse I/O by URI: the one place that knows how to read and write tables.

Supported URIs:
- a `.csv` or `.parquet` file path (`files.py`),
- `duckdb://PATH?table=NAME`: a table in an embedded DuckDB file (`duckdb.py`),
- `bq://PROJECT.DATASET.TABLE[?billing_project=P&location=L]`: a BigQuery table
  (`bigquery.py`); jobs run in (and are billed to) `billing_project`, by default the
  table's own project.

This module parses URIs and hands each call to the backend the URI names; staged rows
(`StagedTable`), their CSV files and the file operations publishing needs are in
`staged.py`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Literal
from urllib.parse import parse_qs, urlencode

import pandas as pd
import pyarrow as pa

from components.errors import SourceError
from components.warehouse.duckdb import local_duckdb, sql_literal
from components.warehouse.staged import (
    STAGED_ROW,
    StagedTable,
    list_files,
    put_file,
    put_text,
    read_text,
    remove,
    write_csv,
)

__all__ = [
    "OUTPUT_FORMS",
    "STAGED_ROW",
    "URI_FORMS",
    "StagedTable",
    "TableUri",
    "check_output",
    "check_source",
    "iter_batches",
    "list_files",
    "local_duckdb",
    "parse_uri",
    "put_file",
    "put_text",
    "read_table",
    "read_text",
    "related_table",
    "remove",
    "replace_rows",
    "require_output",
    "sql_literal",
    "table_exists",
    "with_bigquery_job",
    "write_csv",
    "write_table",
]

UriKind = Literal["csv", "parquet", "duckdb", "bigquery"]
URI_FORMS = "a .csv or .parquet path, duckdb://PATH?table=NAME or bq://PROJECT.DATASET.TABLE"
OUTPUT_FORMS = "duckdb://PATH?table=NAME or bq://PROJECT.DATASET.TABLE"


@dataclass(frozen=True)
class TableUri:
    """A parsed table URI."""

    uri: str
    kind: UriKind
    path: Path | None = None
    table: str | None = None
    billing_project: str | None = None
    """BigQuery: the project jobs run in and are billed to (default: the table's)."""
    location: str | None = None
    """BigQuery: where jobs run (default: the client's)."""

    @property
    def bigquery_table(self) -> str:
        """`PROJECT.DATASET.TABLE` of a bq:// URI."""
        return self.uri.removeprefix("bq://").partition("?")[0]


def with_bigquery_job(uri: str, billing_project: str | None, location: str | None) -> str:
    """A bq:// URI with its job's billing project and location set where it names none
    (steps on Vertex have no settings file, so the URI carries them); other URIs as given."""
    if not uri.startswith("bq://"):
        return uri
    parse_uri(uri)
    table_part, _, query = uri.partition("?")
    options = parse_qs(query)
    for name, value in (("billing_project", billing_project), ("location", location)):
        if value and name not in options:
            options[name] = [value]
    if not options:
        return table_part
    return f"{table_part}?{urlencode({k: v[0] for k, v in sorted(options.items())})}"


# The names a table URI may hold, checked before any SQL or request is built from them.
# BigQuery's documented rules: a project id is 6-30 lowercase letters, digits and hyphens,
# starting with a letter and not ending with a hyphen (the length is not checked here:
# examples and tests use short ids; a domain-scoped `example.com:p` id is refused, as its
# dot would split it); a dataset name up to 1,024 letters, digits and underscores; a table
# name up to 1,024 UTF-8 bytes of Unicode letters, marks, numbers, connectors (_) and
# dashes, and spaces, refused here, with shorter names, as publishing adds suffixes
# (`_rejects`, `__leave_out_<run>`) within that limit.
_BIGQUERY_PROJECT = re.compile(r"[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?")
_BIGQUERY_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_BIGQUERY_TABLE_BYTES = 990
_BIGQUERY_LOCATION = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")
# DuckDB: we write a table's name inside double quotes; letters, digits and _ only.
_DUCKDB_TABLE = re.compile(r"[A-Za-z0-9_]{1,255}")


def parse_uri(uri: str) -> TableUri:
    """Parse a table URI, refusing in one line (SourceError) any that is none of the
    accepted forms, or whose names break the warehouse's naming rules: the one check of a
    table id, done before any SQL or request is built from it (settings validation calls
    it too)."""
    if uri.startswith("duckdb://"):
        path_part, _, query = uri.removeprefix("duckdb://").partition("?")
        table = parse_qs(query).get("table", [""])[0]
        if not path_part or not table:
            raise SourceError(f"{uri!r} needs a file and a table: duckdb://PATH?table=NAME")
        if not _DUCKDB_TABLE.fullmatch(table):
            raise SourceError(
                f"table name {table!r} in {uri!r} must be letters, digits and _ (ASCII, at "
                "most 255)"
            )
        return TableUri(uri, "duckdb", Path(path_part), table)
    if uri.startswith("bq://"):
        table_part, _, query = uri.removeprefix("bq://").partition("?")
        parts = table_part.split(".")
        if len(parts) != 3 or not all(parts):
            raise SourceError(f"{uri!r} must name a table as bq://PROJECT.DATASET.TABLE")
        project, dataset, table = parts
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - {"billing_project", "location"})
        if unknown:
            raise SourceError(
                f"{uri!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                "a bq:// URI takes billing_project and location"
            )
        billing = options.get("billing_project", [None])[0] or project
        location = options.get("location", [None])[0] or None
        _check_bigquery_names(uri, project, dataset, table, billing, location)
        return TableUri(uri, "bigquery", table=table, billing_project=billing, location=location)
    suffix = Path(uri).suffix.lower()
    if suffix in (".csv", ".parquet"):
        return TableUri(uri, suffix.lstrip("."), Path(uri))  # type: ignore[arg-type]
    raise SourceError(f"cannot read {uri!r}: expected {URI_FORMS}")


def _check_bigquery_names(
    uri: str, project: str, dataset: str, table: str, billing: str, location: str | None
) -> None:
    """Refuse names BigQuery's rules (see `_BIGQUERY_PROJECT` and friends) do not allow."""
    for what, name in (("project id", project), ("billing_project", billing)):
        if not _BIGQUERY_PROJECT.fullmatch(name):
            raise SourceError(
                f"{uri!r}: {what} {name!r} must be lowercase letters, digits and hyphens, "
                "starting with a letter, not ending with a hyphen, at most 30"
            )
    if not _BIGQUERY_DATASET.fullmatch(dataset):
        raise SourceError(
            f"{uri!r}: dataset name {dataset!r} must be letters, digits and _ (at most 1,024)"
        )
    categories = {unicodedata.category(c) for c in table}
    if (
        any(c[0] not in "LMN" and c not in ("Pc", "Pd") for c in categories)
        or len(table.encode()) > _BIGQUERY_TABLE_BYTES
    ):
        raise SourceError(
            f"{uri!r}: table name {table!r} must be letters, digits, _ and - only (no spaces, "
            f"quotes or punctuation; at most {_BIGQUERY_TABLE_BYTES} bytes)"
        )
    if location is not None and not _BIGQUERY_LOCATION.fullmatch(location):
        raise SourceError(
            f"{uri!r}: location {location!r} is no BigQuery location (like US, EU or europe-west4)"
        )


def _backend(location: TableUri) -> ModuleType:
    """The module that reads and writes `location`'s kind of table (imported on first use:
    the cloud client libraries take a second to import)."""
    if location.kind == "bigquery":
        from components.warehouse import bigquery as backend
    elif location.kind == "duckdb":
        from components.warehouse import duckdb as backend
    else:
        from components.warehouse import files as backend
    return backend


def read_table(uri: str) -> pd.DataFrame:
    """Read a whole table. CSV cells are read as text so that validation, not the CSV
    parser, decides what a malformed value means."""
    location = parse_uri(uri)
    return _backend(location).read_table(location)


def iter_batches(
    uri: str, batch_rows: int, *, repetitive: Collection[str] = ()
) -> Iterator[pa.RecordBatch]:
    """Stream a table as Arrow record batches of at most `batch_rows` rows, so callers
    hold one batch in memory whatever the table's size. Text columns named in `repetitive`
    (a few distinct values each; names match by `column_key`) come dictionary-encoded
    from the files that can: each distinct value is decoded once, not once per row."""
    from components.contract import column_key

    location = parse_uri(uri)
    coded = {column_key(name) for name in repetitive}
    return _backend(location).iter_batches(location, batch_rows, coded)


def write_table(frame: pd.DataFrame, uri: str) -> None:
    """Replace the table at `uri` with `frame`, atomically where the backend allows."""
    location = parse_uri(uri)
    _backend(location).write_table(frame, location)


def table_exists(uri: str) -> bool:
    """Whether the table at `uri` exists (always asked of the backend, never cached)."""
    location = parse_uri(uri)
    return _backend(location).table_exists(location)


def check_source(uri: str) -> None:
    """Fail with one `SourceError` line when `uri` is malformed or names a table that
    doesn't exist or can't be reached; cheap (no rows are read), for use before a pipeline
    starts."""
    location = parse_uri(uri)
    _backend(location).check(location)


def check_output(uri: str) -> None:
    """Fail with one `SourceError` line when `uri` can't take predictions: a file, or a
    warehouse that doesn't exist or can't be reached. The table itself may be missing:
    publishing creates it."""
    location = require_output(uri)
    _backend(location).check_output(location)


def require_output(uri: str) -> TableUri:
    """Parse an output URI, refusing the file forms: a file can't have one date's rows
    replaced atomically, a warehouse table can."""
    location = parse_uri(uri)
    if location.kind not in ("duckdb", "bigquery"):
        raise SourceError(f"cannot write predictions to {uri!r}: expected {OUTPUT_FORMS}")
    return location


def related_table(uri: str, suffix: str) -> str:
    """The URI of a table next to `uri` in the same warehouse, its name + `suffix` (a
    bq:// URI keeps its options)."""
    location = require_output(uri)
    if location.kind == "bigquery":
        table_part, mark, options = uri.partition("?")
        return f"{table_part}{suffix}{mark}{options}"
    return f"duckdb://{location.path}?table={location.table}{suffix}"


def replace_rows(staged: list[StagedTable], *, key: str, value: date) -> dict[str, int]:
    """For each staged table, delete the rows whose `key` column equals `value` and insert
    the staged rows, all in one transaction: readers see the old rows or the new ones,
    never a mix, and a failure anywhere leaves every table as it was. Tables are created
    (from the staged schema) when missing. Returns the rows now under `value` per URI, each
    checked against the staged file before committing. All tables must live in one
    warehouse (one DuckDB file, or BigQuery)."""
    locations = [require_output(table.uri) for table in staged]
    homes = {(loc.kind, loc.path) for loc in locations}
    if len(homes) != 1:
        raise SourceError(
            f"{', '.join(t.uri for t in staged)}: tables written in one transaction must be "
            "in the same warehouse"
        )
    try:
        expected = {t.uri: t.rows() for t in staged}
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"staged rows for {staged[0].uri} cannot be read: {exc}") from None
    _backend(locations[0]).replace_rows(staged, locations, key, value, expected)
    return expected
