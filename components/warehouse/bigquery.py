"""BigQuery tables: read through the Storage Read API in Arrow record batches, written by
load jobs, and one date's rows replaced in one multi-statement transaction.

Jobs (loads, queries, read sessions) run in the URI's `billing_project` and `location`,
which may differ from the project that holds the table. The client libraries can be
pointed at another endpoint (an emulator, or Private Service Connect) with two
environment variables, read here and nowhere else:

- `CHURN_BIGQUERY_API_ENDPOINT`: the BigQuery REST API, e.g. `http://127.0.0.1:9050` or
  `https://bigquery-myendpoint.p.googleapis.com`;
- `CHURN_BIGQUERY_STORAGE_ENDPOINT`: the Storage Read API (gRPC), e.g.
  `http://127.0.0.1:9060` or `bigquerystorage-myendpoint.p.googleapis.com:443`.

An `http://` endpoint is spoken to without credentials (an access token must never travel
in clear text, and a local emulator needs none); any other with the default credentials.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Collection, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from components.errors import SourceError, one_line

if TYPE_CHECKING:
    from google.cloud import bigquery, bigquery_storage_v1

    from components.warehouse import TableUri
    from components.warehouse.staged import StagedTable

log = logging.getLogger(__name__)

API_ENDPOINT_VARIABLE = "CHURN_BIGQUERY_API_ENDPOINT"
STORAGE_ENDPOINT_VARIABLE = "CHURN_BIGQUERY_STORAGE_ENDPOINT"

# Staging tables of a publish that dies before it can drop them expire by themselves.
_STAGING_HOURS = 24

# Arrow types -> the BigQuery column types of tables created from them.
_BIGQUERY_TYPES = (
    (pa.types.is_string, "STRING"),
    (pa.types.is_large_string, "STRING"),
    (pa.types.is_boolean, "BOOL"),
    (pa.types.is_integer, "INT64"),
    (pa.types.is_floating, "FLOAT64"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_timestamp, "TIMESTAMP"),
)


def client(location: TableUri) -> bigquery.Client:
    """A BigQuery client whose jobs run in the URI's billing project and location."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    endpoint = os.environ.get(API_ENDPOINT_VARIABLE)
    if not endpoint:
        return bigquery.Client(project=location.billing_project, location=location.location)
    return bigquery.Client(
        project=location.billing_project,
        location=location.location,
        client_options=ClientOptions(api_endpoint=endpoint),
        credentials=AnonymousCredentials() if endpoint.startswith("http://") else None,
    )


def read_client() -> bigquery_storage_v1.BigQueryReadClient:
    """A Storage Read API client (see the module docstring for its endpoint)."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import bigquery_storage_v1

    endpoint = os.environ.get(STORAGE_ENDPOINT_VARIABLE)
    if not endpoint:
        return bigquery_storage_v1.BigQueryReadClient()
    if endpoint.startswith("http://"):
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
        return bigquery_storage_v1.BigQueryReadClient(
            transport=BigQueryReadGrpcTransport(channel=channel)
        )
    return bigquery_storage_v1.BigQueryReadClient(
        client_options=ClientOptions(api_endpoint=endpoint)
    )


def read_table(location: TableUri) -> pd.DataFrame:
    schema, batches = _read(location)
    return pa.Table.from_batches(list(batches), schema=schema).to_pandas()


def iter_batches(
    location: TableUri, batch_rows: int, repetitive: Collection[str]
) -> Iterator[pa.RecordBatch]:
    del repetitive  # the Storage Read API sends plain text columns
    _, batches = _read(location)
    yield from _rebatched(batches, batch_rows)


def _rebatched(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """`batches` as batches of `rows` rows (the last may have fewer): the server sends
    responses of its own size, often far smaller than a scoring chunk, and every chunk
    costs a round of validation. Holds at most `rows` rows plus one response."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held < rows:
            continue
        whole = pa.Table.from_batches(pending).combine_chunks()
        full = held - held % rows
        for start in range(0, full, rows):
            yield whole.slice(start, rows).to_batches()[0]
        rest = whole.slice(full)
        pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _read(location: TableUri) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The table's Arrow schema and its rows as record batches as the server sends them,
    through one Storage Read stream: the rows come in one sequence as the caller asks for
    them, so memory holds one response whatever the table's size, and the scorer, not the
    read, sets the pace."""
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud.bigquery_storage_v1 import types

    table = _get_table(location)
    reader = read_client()
    try:
        session = reader.create_read_session(
            parent=f"projects/{location.billing_project}",
            read_session=types.ReadSession(
                table=f"projects/{table.project}/datasets/{table.dataset_id}/tables/"
                f"{table.table_id}",
                data_format=types.DataFormat.ARROW,
            ),
            max_stream_count=1,
        )
    except GoogleAPIError as exc:
        raise SourceError(
            f"{location.uri}: cannot start a Storage Read session: {one_line(exc)}"
        ) from None
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))

    def batches() -> Iterator[pa.RecordBatch]:
        for stream in session.streams:
            # The stream reconnects by itself after transient errors, resuming at its offset.
            messages = reader.read_rows(stream.name)
            try:
                for message in messages:
                    data = pa.py_buffer(message.arrow_record_batch.serialized_record_batch)
                    yield pa.ipc.read_record_batch(data, schema)
            except GoogleAPIError as exc:
                raise SourceError(f"{location.uri}: reading rows failed: {one_line(exc)}") from None
            finally:
                messages.cancel()  # a reader that stops early leaves no call open

    return schema, batches()


def write_table(frame: pd.DataFrame, location: TableUri) -> None:
    """Replace the table with `frame` by one load job of a Parquet file, with the schema
    of the frame's columns (the load replaces the table only once it has succeeded)."""
    import pyarrow.parquet as pq
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import bigquery

    rows = pa.Table.from_pandas(frame, preserve_index=False)
    job_config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        schema=schema_of(rows.schema, where=location.uri),
    )
    with tempfile.TemporaryDirectory(prefix="churn-load-") as scratch:
        path = Path(scratch) / "rows.parquet"
        pq.write_table(rows, path)
        try:
            _load(client(location), path, location.bigquery_table, job_config)
        except GoogleAPIError as exc:
            raise SourceError(f"{location.uri}: loading rows failed: {one_line(exc)}") from None


def _load(bq: bigquery.Client, path: Path, table_id: str, job_config) -> None:
    with open(path, "rb") as handle:
        # No `size`: the client then uploads resumably, which every endpoint accepts.
        bq.load_table_from_file(handle, table_id, job_config=job_config).result()


def table_exists(location: TableUri) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        client(location).get_table(location.bigquery_table, **_deadline(120.0))
    except NotFound:
        return False
    return True


def row_count(location: TableUri) -> int:
    """How many rows the table holds, from its metadata (no query is run or billed)."""
    return int(_get_table(location).num_rows or 0)


def check(location: TableUri, *, timeout: float = 30.0) -> None:
    """The table exists and its metadata can be read, within about `timeout` seconds."""
    _get_table(location, timeout=timeout)


def check_output(location: TableUri, *, timeout: float = 30.0) -> None:
    """The dataset the table goes in exists and can be read (the table may be missing)."""
    from google.api_core.exceptions import GoogleAPIError, NotFound

    project, dataset, _ = location.bigquery_table.split(".")
    try:
        client(location).get_dataset(f"{project}.{dataset}", **_deadline(timeout))
    except NotFound:
        raise SourceError(
            f"{location.uri}: no dataset {project}.{dataset} in BigQuery; create it first"
        ) from None
    except (GoogleAPIError, OSError) as exc:
        raise SourceError(f"{location.uri}: BigQuery cannot be reached: {one_line(exc)}") from None


def _get_table(location: TableUri, *, timeout: float = 120.0) -> bigquery.Table:
    from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound

    try:
        return client(location).get_table(location.bigquery_table, **_deadline(timeout))
    except NotFound:
        raise SourceError(
            f"{location.uri}: no table {location.bigquery_table} in BigQuery"
        ) from None
    except Forbidden as exc:
        raise SourceError(f"{location.uri}: access denied: {one_line(exc)}") from None
    except (GoogleAPIError, OSError) as exc:
        raise SourceError(f"{location.uri}: BigQuery cannot be reached: {one_line(exc)}") from None


def _deadline(seconds: float) -> dict:
    """Retry and timeout arguments that give up after about `seconds`: the client's default
    retries an unreachable endpoint for ten minutes."""
    from google.cloud.bigquery import DEFAULT_RETRY

    return {"retry": DEFAULT_RETRY.with_deadline(seconds), "timeout": min(seconds, 60.0)}


def schema_of(
    arrow: pa.Schema, columns: tuple[str, ...] | None = None, *, where: str
) -> list[bigquery.SchemaField]:
    """The BigQuery schema of `columns` (default: all) of the Arrow schema of the rows
    `where` names: tables are created with the types their writer declares, never types
    inferred from rows."""
    from google.cloud import bigquery

    fields = []
    for name in arrow.names if columns is None else columns:
        if name not in arrow.names:
            raise SourceError(f"{where}: column {name} is missing; found: {', '.join(arrow.names)}")
        type_ = arrow.field(name).type
        if pa.types.is_dictionary(type_):
            type_ = type_.value_type
        bigquery_type = next((bq for test, bq in _BIGQUERY_TYPES if test(type_)), None)
        if bigquery_type is None:
            raise SourceError(f"{where}: column {name} of type {type_} has no BigQuery type")
        fields.append(bigquery.SchemaField(name, bigquery_type, mode="NULLABLE"))
    return fields


def replace_rows(
    staged: list[StagedTable],
    locations: list[TableUri],
    key: str,
    value: date,
    expected: dict[str, int],
) -> None:
    """`components.warehouse.replace_rows` in BigQuery. Each file is loaded into a staging
    table (load jobs, outside any transaction), then one multi-statement query replaces
    every table's rows in one transaction: BigQuery rolls it back by itself when any
    statement in it fails, and `ERROR()` fails it when the rows don't add up. DDL on permanent
    tables is not allowed inside a transaction, so missing tables are created (partitioned
    by day on `key`, with the staged schema) just before it; an empty table left by a run
    that failed later is harmless. Staging tables are dropped in `finally`, and expire on
    their own should the process die first."""
    import pyarrow.parquet as pq
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import bigquery

    bq = client(locations[0])
    run = uuid.uuid4().hex[:12]
    staging = [f"{loc.bigquery_table}__staging_{run}" for loc in locations]
    leave_out = [f"{loc.bigquery_table}__leave_out_{run}" for loc in locations]
    literal = f"DATE '{value.isoformat()}'"
    replace = []
    try:
        for table, location in zip(staged, locations, strict=True):
            created = bigquery.Table(
                location.bigquery_table,
                schema=schema_of(
                    pq.read_schema(table.path), table.columns, where=f"staged {table.path}"
                ),
            )
            created.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=key
            )
            table_now = bq.create_table(created, exists_ok=True)
            _add_new_columns(bq, table_now, created.schema)
        for table, staging_id, leave_out_id in zip(staged, staging, leave_out, strict=True):
            for path, table_id in ((table.path, staging_id), (table.leave_out, leave_out_id)):
                if path is not None:
                    # Staging tables have fresh names: a load creates them, never finds one.
                    job_config = bigquery.LoadJobConfig(
                        source_format=bigquery.SourceFormat.PARQUET,
                        write_disposition=bigquery.WriteDisposition.WRITE_EMPTY,
                        schema=schema_of(pq.read_schema(path), where=f"staged {path}"),
                    )
                    _load(bq, path, table_id, job_config)
                    _expire(bq, table_id)
        for table, location, staging_id, leave_out_id in zip(
            staged, locations, staging, leave_out, strict=True
        ):
            target = _sql_table(location.bigquery_table)
            columns = ", ".join(f"`{c}`" for c in table.columns)
            rows = table.select(_sql_table(staging_id), _sql_table(leave_out_id), quote="`")
            replace += [
                f"DELETE FROM {target} WHERE `{key}` = {literal};",
                f"INSERT INTO {target} ({columns}) {rows};",
                # ASSERT as SELECT IF(..., ERROR()), which the emulator runs too.
                f"SELECT IF((SELECT COUNT(*) FROM {target} WHERE `{key}` = {literal}) = "
                f"{expected[table.uri]}, 1, ERROR('the rows under {key} are not the "
                f"{expected[table.uri]} staged'));",
            ]
        script = "\n".join(["BEGIN TRANSACTION;", *replace, "COMMIT TRANSACTION;"])
        bq.query(script).result()
    except GoogleAPIError as exc:
        raise SourceError(
            f"{staged[0].uri}: replacing the rows of {key} = {value} failed, the previous "
            f"rows are intact: {one_line(exc)}"
        ) from None
    finally:
        for table_id in staging + leave_out:
            try:
                bq.delete_table(table_id, not_found_ok=True)
            except GoogleAPIError as exc:  # it expires anyway; keep the publish's own outcome
                log.warning("could not drop staging table %s: %s", table_id, one_line(exc))


def _add_new_columns(bq: bigquery.Client, table: bigquery.Table, schema: list) -> None:
    """Add to `table` the (nullable) fields of `schema` it lacks: columns are only ever
    added at the end. By DDL (`ALTER TABLE ... ADD COLUMN`), which BigQuery runs in place
    and which, unlike a schema patch, the emulator applies too; DDL may not run inside the
    replacing transaction, so this runs before it."""
    have = {field.name for field in table.schema}
    target = _sql_table(f"{table.project}.{table.dataset_id}.{table.table_id}")
    # One column per statement: the emulator takes one ALTER command per statement
    # (BigQuery takes several); this runs once per new column, when a release adds it.
    for field in schema:
        if field.name not in have:
            add = f"ADD COLUMN IF NOT EXISTS `{field.name}` {field.field_type}"
            bq.query(f"ALTER TABLE {target} {add}").result()


def _sql_table(table_id: str) -> str:
    """A `PROJECT.DATASET.TABLE` id as a quoted SQL name. BigQuery takes no table name as a
    query parameter, so the id is parsed by the client library (`TableReference`), its
    parts put back inside one pair of backticks; `parse_uri` has refused every name that
    could end the quotes (a backtick, a backslash) before this is reached, and this
    refuses them again rather than trust that."""
    from google.cloud import bigquery

    reference = bigquery.TableReference.from_string(table_id)
    parts = (reference.project, reference.dataset_id, reference.table_id)
    if any(set(part) & set("`\\\n") for part in parts):
        raise SourceError(f"table id {table_id!r} cannot be written in SQL")
    return f"`{'.'.join(parts)}`"


def _expire(bq: bigquery.Client, table_id: str) -> None:
    from datetime import UTC, datetime, timedelta

    table = bq.get_table(table_id)
    table.expires = datetime.now(UTC) + timedelta(hours=_STAGING_HOURS)
    bq.update_table(table, ["expires"])
