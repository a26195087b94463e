"""Tables in an embedded DuckDB file (the default warehouse), and the in-memory DuckDB
that works on staged Parquet files."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Collection, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from components.errors import SourceError

if TYPE_CHECKING:
    import duckdb

    from components.warehouse import TableUri
    from components.warehouse.staged import StagedTable

# DuckDB's default memory limit is 80% of RAM; publishing millions of rows needs far less,
# and a lower limit makes it spill to disk instead of growing the scoring step's footprint.
_WRITE_MEMORY = "256MB"
_LOCK_WAIT_SECONDS = 120.0


def read_table(location: TableUri) -> pd.DataFrame:
    _require_file(location)
    with _connect(location, read_only=True) as con:
        _require_table(con, location)
        return con.execute(f'SELECT * FROM "{location.table}"').df()


def iter_batches(
    location: TableUri, batch_rows: int, repetitive: Collection[str]
) -> Iterator[pa.RecordBatch]:
    del repetitive  # DuckDB hands out plain text columns
    _require_file(location)
    with _connect(location, read_only=True) as con:
        _require_table(con, location)
        # DuckDB 2 dropped the cursor's fetch_record_batch and renamed the relation's
        # fetch_arrow_reader to to_arrow_reader; either streams one batch at a time. A
        # cursor of its own, as DuckDB 2 won't start a query beside the check's result.
        query = con.cursor().sql(f'SELECT * FROM "{location.table}"')
        reader = getattr(query, "to_arrow_reader", None) or query.fetch_arrow_reader
        yield from reader(batch_rows)


def write_table(frame: pd.DataFrame, location: TableUri) -> None:
    location.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    with _connect(location, read_only=False) as con:
        con.register("incoming", frame)
        con.execute(f'CREATE OR REPLACE TABLE "{location.table}" AS SELECT * FROM incoming')


def table_exists(location: TableUri) -> bool:
    if not location.path.exists():  # type: ignore[union-attr]
        return False
    with _connect(location, read_only=True) as con:
        return _has_table(con, location.table)  # type: ignore[arg-type]


def check(location: TableUri) -> None:
    _require_file(location)
    with _connect(location, read_only=True) as con:
        _require_table(con, location)


def check_output(location: TableUri) -> None:
    """A missing file is fine (publishing creates it) where its folder can be written; one
    DuckDB can't open is not."""
    path: Path = location.path  # type: ignore[assignment]
    if path.exists():
        _connect(location, read_only=True).close()
        return
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) and _can_create_in(folder)):
        raise SourceError(f"{location.uri}: cannot create {path}: {folder} is not writable")


def _can_create_in(folder: Path) -> bool:
    """Permission bits don't stop root, a read-only mount or /proc do: try it."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _require_file(location: TableUri) -> None:
    if not location.path.exists():  # type: ignore[union-attr]
        raise SourceError(f"{location.uri}: file {location.path} does not exist")


def _connect(location: TableUri, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting up to `_LOCK_WAIT_SECONDS` while another process holds it:
    DuckDB lets one process open a file for writing and none beside it, and another run
    publishing to this warehouse holds it for seconds."""
    import duckdb

    path: Path = location.path  # type: ignore[assignment]
    if path.is_file() and path.stat().st_size and not _is_duckdb_file(path):
        # DuckDB would open a CSV file as an empty in-memory database, or say so obliquely.
        raise SourceError(
            f"{location.uri}: {path} is not a DuckDB database file; a .csv or .parquet file "
            "is a URI of its own: give its path"
        )
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "Could not set lock" not in str(exc) or time.monotonic() > deadline:
                raise SourceError(f"{location.uri}: cannot open DuckDB file: {exc}") from None
            time.sleep(0.2)
        except duckdb.Error as exc:
            raise SourceError(f"{location.uri}: cannot open DuckDB file: {exc}") from None


def _is_duckdb_file(path: Path) -> bool:
    """DuckDB's main header: a checksum, then the magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(12)[8:] == b"DUCK"


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(found and found[0])


def _require_table(con: duckdb.DuckDBPyConnection, location: TableUri) -> None:
    if not _has_table(con, location.table):  # type: ignore[arg-type]
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        raise SourceError(
            f"{location.uri}: no table {location.table!r} in {location.path}"
            f" (tables: {', '.join(tables) or 'none'})"
        )


def replace_rows(
    staged: list[StagedTable],
    locations: list[TableUri],
    key: str,
    value: date,
    expected: dict[str, int],
) -> None:
    """`components.warehouse.replace_rows` in one DuckDB transaction."""
    import duckdb

    locations[0].path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    with _connect(locations[0], read_only=False) as con:
        _quiet(con)
        # A table's rows have no order. Not keeping the staged order lets DuckDB write row
        # groups in parallel straight to the file, leaving the commit no checkpoint to do:
        # publishing 10M rows went from 8.5 to 4.5 s, and replacing a date left a 25%
        # smaller file.
        con.execute("SET preserve_insertion_order = false")
        con.execute("BEGIN TRANSACTION")
        try:
            for table, location in zip(staged, locations, strict=True):
                name = f'"{location.table}"'
                rows = table.duckdb_select()
                con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS {rows} LIMIT 0")
                _add_new_columns(con, name, rows)
                con.execute(f'DELETE FROM {name} WHERE "{key}" = ?', [value])
                con.execute(f"INSERT INTO {name} BY NAME {rows}")
                found = con.execute(
                    f'SELECT count(*) FROM {name} WHERE "{key}" = ?', [value]
                ).fetchone()
                if not found or found[0] != expected[table.uri]:
                    raise SourceError(
                        f"{table.uri}: {found[0] if found else 0} rows under {key} = {value} "
                        f"after the insert, {expected[table.uri]} staged"
                    )
            con.execute("COMMIT")
        except (duckdb.Error, SourceError) as exc:
            # A COMMIT that failed (a full disk) has ended the transaction already.
            with contextlib.suppress(duckdb.TransactionException):
                con.execute("ROLLBACK")
            raise SourceError(
                f"{staged[0].uri}: replacing the rows of {key} = {value} failed and was rolled "
                f"back, the previous rows are intact: {exc}"
            ) from None


def _add_new_columns(con: duckdb.DuckDBPyConnection, name: str, rows: str) -> None:
    """Add to table `name` the columns of `rows` it lacks (columns are only ever added at
    the end: a table made before a release added one takes it, empty for earlier rows)."""
    have = {row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()}
    for column, kind, *_ in con.execute(f"DESCRIBE {rows}").fetchall():
        if column not in have:
            con.execute(f'ALTER TABLE {name} ADD COLUMN "{column}" {kind}')


def local_duckdb(scratch: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for work on staged files, within the write memory limit and
    spilling to `scratch` beyond it."""
    import duckdb

    config = {"memory_limit": _WRITE_MEMORY}
    if scratch is not None:
        config["temp_directory"] = str(scratch)
    return _quiet(duckdb.connect(config=config))


def _quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No progress bar: it would be written into step logs."""
    con.execute("SET enable_progress_bar = false")
    return con


def sql_literal(path: Path) -> str:
    """A path as a SQL string literal (for statements that take no parameters, like COPY)."""
    return "'" + str(path).replace("'", "''") + "'"
