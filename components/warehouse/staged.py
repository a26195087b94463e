"""Rows staged in Parquet files by a stage, for publishing: the `StagedTable` description
that every warehouse backend replaces rows from; CSV files of the same rows; and the few
file operations publishing needs, on a local directory or `gs://` alike."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.errors import SourceError, one_line
from components.local_files import write_whole

# The column numbering staged rows (their row in the source); `StagedTable.leave_out` lists
# rows by it.
STAGED_ROW = "source_row"


@dataclass(frozen=True)
class StagedTable:
    """Rows staged in a Parquet file for the table at `uri`: its `columns` are written,
    any other column of the file (bookkeeping of the stage that wrote it) is not. Rows
    whose `STAGED_ROW` is listed in the `leave_out` Parquet file, if given, are not
    written either: the stage found them out after writing them, and leaving them out is
    cheaper than rewriting the staged file."""

    uri: str
    path: Path
    columns: tuple[str, ...]
    leave_out: Path | None = None

    def rows(self) -> int:
        """How many rows publishing writes."""
        import pyarrow.parquet as pq

        left_out = pq.ParquetFile(self.leave_out).metadata.num_rows if self.leave_out else 0
        return pq.ParquetFile(self.path).metadata.num_rows - left_out

    def select(self, staged: str, leave_out: str, quote: str = '"') -> str:
        """The SQL query of the rows to write, given the SQL names of the staged rows and
        of the rows to leave out."""
        columns = ", ".join(f"{quote}{c}{quote}" for c in self.columns)
        query = f"SELECT {columns} FROM {staged}"
        if self.leave_out is None:
            return query
        row = f"{quote}{STAGED_ROW}{quote}"
        return f"{query} WHERE {row} NOT IN (SELECT {row} FROM {leave_out})"

    def duckdb_select(self) -> str:
        """`select` over the Parquet files themselves."""
        from components.warehouse.duckdb import sql_literal

        leave_out = f"read_parquet({sql_literal(self.leave_out)})" if self.leave_out else ""
        return self.select(f"read_parquet({sql_literal(self.path)})", leave_out)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes a cell starting with for a formula (OWASP, "CSV Injection"):
a text cell of a CSV export starting with one of them gets a `'` in front, which makes it
plain text; the warehouse table keeps the text as it is."""


def write_csv(staged: StagedTable, destination: Path) -> int:
    """Write the rows publishing writes from a staged table to a local CSV file (with a
    header; rows in no particular order, as in the warehouse table), complete and on disk
    when this returns, text cells that would start a formula neutralised (`FORMULA_START`).
    DuckDB streams the file through on every core within its memory limit (4-5x pyarrow's
    CSV writer). Returns the rows written."""
    import duckdb

    from components.warehouse.duckdb import local_duckdb, sql_literal

    destination.parent.mkdir(parents=True, exist_ok=True)
    with local_duckdb() as con:
        # Keeping the staged order would cost time (10M rows: 5.8 s against 7.1 s), and
        # leaving out repeated customers' rows loses it anyway (an anti-join).
        con.execute("SET preserve_insertion_order = false")
        try:
            rows = con.execute(
                f"COPY ({_no_formulas(staged)}) TO {sql_literal(destination)} (HEADER)"
            ).fetchone()
        except duckdb.Error as exc:  # a full disk, an unwritable folder
            raise SourceError(f"writing {destination} failed: {exc}") from None
    _sync(destination)
    return int(rows[0]) if rows else 0


def _no_formulas(staged: StagedTable) -> str:
    """`staged.duckdb_select()` with every text column's formula starts neutralised."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(staged.path)
    starts = ", ".join(f"chr({ord(c)})" for c in FORMULA_START)
    columns = []
    for column in staged.columns:
        kind = schema.field(column).type
        kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        name = f'"{column}"'
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            quote = "''''"  # SQL's text of one single quote
            name = (
                f"CASE WHEN left({name}, 1) IN ({starts}) THEN {quote} || {name} "
                f"ELSE {name} END AS {name}"
            )
        columns.append(name)
    return f"SELECT {', '.join(columns)} FROM ({staged.duckdb_select()})"


def put_file(path: Path, destination: str) -> None:
    """Move a complete local file to `destination`, a local path on the same file system
    (a rename) or `gs://BUCKET/NAME` (an upload, which creates the object only once it
    finishes, after which `path` is removed). Either way readers see the old file or the
    new one, never part of one."""
    if destination.startswith("gs://"):
        with _cloud(destination):
            _blob(destination).upload_from_filename(path, content_type="text/csv")
        path.unlink()
    else:
        os.replace(path, destination)


def put_text(destination: str, text: str) -> None:
    """Write a small text file whole at `destination` (a local path or `gs://`), durably."""
    if destination.startswith("gs://"):
        with _cloud(destination):
            _blob(destination).upload_from_string(text, content_type="application/json")
        return
    write_whole(Path(destination), text)


def read_text(location: str) -> str:
    if location.startswith("gs://"):
        with _cloud(location):
            return _blob(location).download_as_text()
    return Path(location).read_text(encoding="utf-8")


def remove(location: str) -> None:
    """Delete a file or object; one already gone is fine."""
    if location.startswith("gs://"):
        from google.api_core.exceptions import NotFound

        with _cloud(location), contextlib.suppress(NotFound):
            _blob(location).delete()
    else:
        Path(location).unlink(missing_ok=True)


def list_files(directory: str, suffix: str) -> list[str]:
    """The files (or objects) directly in `directory` whose names end with `suffix`."""
    if not directory.startswith("gs://"):
        folder = Path(directory)
        return sorted(str(p) for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
    bucket, _, prefix = directory.removeprefix("gs://").partition("/")
    prefix = f"{prefix.rstrip('/')}/" if prefix else ""
    from google.cloud import storage

    with _cloud(directory):
        blobs = list(storage.Client().list_blobs(bucket, prefix=prefix, delimiter="/"))
    return sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.endswith(suffix))


def _sync(path: Path) -> None:
    """Flush a written file to disk, so that what a later step relies on survives a crash."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _cloud(uri: str) -> Iterator[None]:
    """Cloud Storage errors as one `SourceError` line naming `uri`."""
    from google.api_core.exceptions import GoogleAPIError

    try:
        yield
    except GoogleAPIError as exc:
        raise SourceError(f"{uri}: {one_line(exc)}") from None


def _blob(uri: str):
    """The Cloud Storage object at `gs://BUCKET/NAME` (the client honours
    STORAGE_EMULATOR_HOST, as the tests use)."""
    from google.cloud import storage

    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket or not name:
        raise SourceError(f"cannot export to {uri!r}: expected gs://BUCKET/PATH")
    return storage.Client().bucket(bucket).blob(name)
