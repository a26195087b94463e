"""CSV and Parquet files as tables: read whole or streamed, written whole. Files are
sources only: predictions go to a warehouse table (see `require_output`)."""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from components.contract import column_key
from components.errors import SourceError

if TYPE_CHECKING:
    from components.warehouse import TableUri


def read_table(location: TableUri) -> pd.DataFrame:
    check(location)
    if location.kind == "csv":
        try:
            return pd.read_csv(location.path, dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    return pd.read_parquet(location.path)


def iter_batches(
    location: TableUri, batch_rows: int, repetitive: Collection[str]
) -> Iterator[pa.RecordBatch]:
    check(location)
    if location.kind == "csv":
        from pyarrow import csv as arrow_csv

        reader = arrow_csv.open_csv(
            location.path,
            read_options=arrow_csv.ReadOptions(block_size=1 << 24),
            convert_options=arrow_csv.ConvertOptions(
                column_types=_csv_text_types(location.path, repetitive),
                strings_can_be_null=True,
                null_values=[""],  # as `read_table`: "NA" or "null" are values, not blanks
            ),
        )
        for batch in reader:
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
        return
    import pyarrow.parquet as pq

    names = pq.read_schema(location.path).names
    coded = [name for name in names if column_key(name) in repetitive]
    yield from pq.ParquetFile(location.path, read_dictionary=coded).iter_batches(
        batch_size=batch_rows
    )


def _csv_text_types(path: Path | None, repetitive: Collection[str]) -> dict[str, pa.DataType]:
    """Every column of a CSV as text, as `read_table` reads CSV files; those whose
    `column_key` is in `repetitive` dictionary-encoded."""
    with open(path, encoding="utf-8", newline="") as handle:  # type: ignore[arg-type]
        header = next(csv.reader(handle), [])  # quoted names may contain commas
    coded = pa.dictionary(pa.int32(), pa.string())
    return {name: coded if column_key(name) in repetitive else pa.string() for name in header}


def write_table(frame: pd.DataFrame, location: TableUri) -> None:
    location.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    if location.kind == "csv":
        frame.to_csv(location.path, index=False)
    else:
        frame.to_parquet(location.path, index=False)


def table_exists(location: TableUri) -> bool:
    return location.path.exists()  # type: ignore[union-attr]


def check(location: TableUri) -> None:
    if not location.path.exists():  # type: ignore[union-attr]
        raise SourceError(f"{location.uri}: file {location.path} does not exist")
