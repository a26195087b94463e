"""CSV and Parquet files as tables: read whole or streamed, written whole. Files are
sources only: predictions go to a warehouse table (see `require_output`).

Both ways of reading a file go through one reader per format, so they agree on what a
file holds and refuse the same malformed files with the same `SourceError` line: text
that is not UTF-8, a ragged CSV row or a value spanning lines, a column named twice, a
Parquet column of lists or of bytes that are not text, a file that is not Parquet at all."""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from components.contract import column_key
from components.errors import SourceError, one_line

if TYPE_CHECKING:
    from components.warehouse import TableUri

# Bytes of text the CSV reader parses at a time.
_CSV_BLOCK_BYTES = 1 << 24


def read_table(location: TableUri) -> pd.DataFrame:
    _exists(location)
    if location.kind == "csv":
        batches = list(_csv_batches(location, 1 << 20, ()))
        if not batches:
            return pd.DataFrame(columns=_header(location))
        return pa.Table.from_batches(batches).to_pandas()
    import pyarrow.parquet as pq

    _parquet_schema(location)
    with _parquet_errors(location):
        return _checked(pq.read_table(location.path), location).to_pandas()


def iter_batches(
    location: TableUri, batch_rows: int, repetitive: Collection[str]
) -> Iterator[pa.RecordBatch]:
    _exists(location)
    if location.kind == "csv":
        yield from _csv_batches(location, batch_rows, repetitive)
        return
    import pyarrow.parquet as pq

    schema = _parquet_schema(location)
    coded = [name for name in schema.names if column_key(name) in repetitive]
    with _parquet_errors(location):
        for batch in pq.ParquetFile(location.path, read_dictionary=coded).iter_batches(
            batch_size=batch_rows
        ):
            yield _checked(batch, location)


@contextmanager
def _parquet_errors(location: TableUri) -> Iterator[None]:
    """A Parquet file that fails part way through a read (damaged after its schema) as one
    `SourceError` line."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(
            f"{location.uri}: the Parquet file cannot be read: {one_line(exc)}"
        ) from None


def _csv_batches(
    location: TableUri, batch_rows: int, repetitive: Collection[str]
) -> Iterator[pa.RecordBatch]:
    """Every column as text, as validation wants it (it, not the parser, decides what a
    malformed value means); those whose `column_key` is in `repetitive` dictionary-encoded.
    Only a blank cell is missing: "NA" or "null" are values."""
    from pyarrow import csv as arrow_csv

    header = _header(location)
    coded = pa.dictionary(pa.int32(), pa.string())
    try:
        reader = arrow_csv.open_csv(
            location.path,
            read_options=arrow_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            # So that blocks are split between rows, never inside a quoted line break; a
            # batch holding one is then refused (see `_spans_lines`).
            parse_options=arrow_csv.ParseOptions(newlines_in_values=True),
            convert_options=arrow_csv.ConvertOptions(
                column_types={
                    name: coded if column_key(name) in repetitive else pa.string()
                    for name in header
                },
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        for batch in reader:
            if _spans_lines(batch):
                raise SourceError(
                    _misshapen(location, len(header))
                    or f"{location.uri}: a quoted value spans lines"
                )
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):  # a header without a line break after it
            return
        if "UTF8" in str(exc):
            raise SourceError(_not_utf8(location)) from None
        raise SourceError(
            _misshapen(location, len(header)) or _cannot_parse(location, exc)
        ) from None


def _misshapen(location: TableUri, fields: int) -> str | None:
    """The first line of a CSV file that is not one row of as many fields as its header
    (looked for only once Arrow has refused the file: its message counts rows, not lines)."""
    with open(location.path, encoding="utf-8-sig", newline="") as handle:  # type: ignore[arg-type]
        reader = csv.reader(handle)
        line = 0
        try:
            for record in reader:
                start, line = line + 1, reader.line_num
                if line > start:
                    return f"{location.uri}: line {start} has a quoted value that spans lines"
                if record and len(record) != fields:  # Arrow skips blank lines
                    return (
                        f"{location.uri}: line {line} has {len(record)} "
                        f"field{'s' if len(record) != 1 else ''} where the header has {fields}"
                    )
        except UnicodeDecodeError:
            return _not_utf8(location)
        except csv.Error as exc:
            # Python's hint ("open the file with newline=''") is for programmers, not users.
            problem = str(exc).split(" - ")[0]
            return f"{location.uri}: line {reader.line_num + 1} cannot be parsed: {problem}"
    return None


def _spans_lines(batch: pa.RecordBatch) -> bool:
    """Whether a value holds a line break. A customer table has one line per row: a quoted
    line break is refused, not read, because one stray quote (`"Smith, J`) swallows every
    later row into one value, and the rows read would silently be fewer than the lines.
    Every column is text (see `_csv_batches`): its value bytes are searched in one go."""
    import numpy as np

    for column in batch.columns:
        text = column.dictionary if pa.types.is_dictionary(column.type) else column
        _, offsets, data = text.buffers()
        if data is None:
            continue
        ends = np.frombuffer(offsets, dtype=np.int32)[[text.offset, text.offset + len(text)]]
        values = np.frombuffer(data, dtype=np.uint8)[ends[0] : ends[1]]
        if (values == ord("\n")).any() or (values == ord("\r")).any():
            return True
    return False


def _cannot_parse(location: TableUri, exc: Exception) -> str:
    return f"{location.uri}: the CSV file cannot be parsed: {one_line(exc)}"


def _header(location: TableUri) -> list[str]:
    """A CSV file's column names (quoted names may contain commas), refused when the file
    is empty, not UTF-8 text or names a column twice."""
    path: Path = location.path  # type: ignore[assignment]
    try:
        # utf-8-sig: a spreadsheet's byte-order mark is not part of the first name.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise SourceError(_not_utf8(location)) from None
    except csv.Error as exc:
        raise SourceError(f"{location.uri}: line 1 (the header) cannot be parsed: {exc}") from None
    if header is None:
        raise SourceError(f"{location.uri}: the file is empty: no header, no rows")
    _refuse_repeated(header, location)
    return header


def _not_utf8(location: TableUri) -> str:
    """Where a file stops being UTF-8 text: its first line that does not decode."""
    with open(location.path, "rb") as handle:  # type: ignore[arg-type]
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = line[exc.start]
                return (
                    f"{location.uri}: line {number} is not UTF-8 text (byte 0x{byte:02x}, byte "
                    f"{exc.start + 1} of the line); save the file as UTF-8"
                )
    return f"{location.uri}: the file is not UTF-8 text; save it as UTF-8"


def _parquet_schema(location: TableUri) -> pa.Schema:
    """A Parquet file's schema, refused when the file is not Parquet, names a column twice
    or holds a column of lists, structs or maps (a customer table has one value per cell)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(location.path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{location.uri}: not a readable Parquet file: {one_line(exc)}") from None
    _refuse_repeated(schema.names, location)
    for field in schema:
        if pa.types.is_nested(field.type):
            raise SourceError(
                f"{location.uri}: column {field.name!r} holds {field.type} values, not one "
                "number or text per customer"
            )
    return schema


def _checked(data: pa.Table | pa.RecordBatch, location: TableUri) -> pa.Table | pa.RecordBatch:
    """`data` once its text is checked to be UTF-8 (Parquet readers take a damaged file's
    bytes as they are, and the failure would come later, from pandas, naming nothing) and
    its binary columns decoded as text (else an id would read as "b'7590-VHVEG'")."""
    data.validate(full=True)
    for index, field in enumerate(data.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            try:
                text = data.column(index).cast(pa.string())
            except pa.ArrowInvalid:
                raise SourceError(
                    f"{location.uri}: column {field.name!r} holds bytes that are not UTF-8 text"
                ) from None
            data = data.set_column(index, field.name, text)
    return data


def _refuse_repeated(names: Iterable[str], location: TableUri) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SourceError(f"{location.uri}: column {name!r} appears twice; keep one")
        seen.add(name)


def write_table(frame: pd.DataFrame, location: TableUri) -> None:
    location.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    if location.kind == "csv":
        frame.to_csv(location.path, index=False)
    else:
        frame.to_parquet(location.path, index=False)


def table_exists(location: TableUri) -> bool:
    return location.path.exists()  # type: ignore[union-attr]


def check(location: TableUri) -> None:
    """The file exists and its header (CSV) or schema (Parquet) can be read: cheap, for
    use before a pipeline starts."""
    _exists(location)
    if location.kind == "csv":
        _header(location)
    else:
        _parquet_schema(location)


def _exists(location: TableUri) -> None:
    if not location.path.exists():  # type: ignore[union-attr]
        raise SourceError(f"{location.uri}: file {location.path} does not exist")
    if location.path.is_dir():  # type: ignore[union-attr]
        raise SourceError(f"{location.uri}: {location.path} is a folder, not a file")
