"""Table URIs: clear errors for what is not a table, same rows whichever way a file is read."""

from pathlib import Path

import pyarrow as pa
import pytest

from components.errors import SourceError
from components.warehouse import (
    check_output,
    check_source,
    iter_batches,
    parse_uri,
    read_table,
    related_table,
    table_exists,
    with_bigquery_job,
    write_table,
)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("customers.xlsx", "cannot read 'customers.xlsx': expected a .csv or .parquet path"),
        ("duckdb://w.duckdb", "needs a file and a table: duckdb://PATH\\?table=NAME"),
        ("duckdb://w.duckdb?table=a;drop", "must be letters, digits and _"),
        ("bq://project.table", "must name a table as bq://PROJECT.DATASET.TABLE"),
    ],
)
def test_malformed_uris_say_what_is_expected(uri: str, message: str):
    with pytest.raises(SourceError, match=message):
        parse_uri(uri)


def test_bigquery_uri_names_the_table():
    assert parse_uri("bq://p.d.t").bigquery_table == "p.d.t"


def test_a_related_bigquery_table_keeps_the_job_options():
    assert related_table("bq://p.d.t?location=EU", "_rejects") == "bq://p.d.t_rejects?location=EU"


@pytest.mark.parametrize("name", ["c.csv", "c.parquet", "w.duckdb"])
def test_round_trip_and_streaming_agree(customers, tmp_path: Path, name: str):
    uri = str(tmp_path / name)
    if name.endswith(".duckdb"):
        uri = f"duckdb://{uri}?table=customers"
    frame = customers.rename(columns={"gender": "gen,der"})  # a quoted CSV header
    assert not table_exists(uri)
    write_table(frame, uri)
    assert table_exists(uri)
    whole = read_table(uri)
    streamed = [batch.num_rows for batch in iter_batches(uri, 700)]
    assert len(whole) == sum(streamed) == len(customers)
    assert max(streamed) <= 700
    assert list(whole.columns) == list(frame.columns)


@pytest.mark.parametrize("name", ["c.csv", "c.parquet"])
def test_repetitive_columns_stream_dictionary_encoded(customers, tmp_path: Path, name: str):
    uri = str(tmp_path / name)
    write_table(customers, uri)
    batches = list(iter_batches(uri, 700, repetitive={"CONTRACT", "not a column"}))
    contract = pa.concat_arrays([b.column("Contract") for b in batches])
    assert pa.types.is_dictionary(contract.type)
    assert not pa.types.is_dictionary(batches[0].column("customerID").type)
    assert contract.cast(pa.string()).to_pylist() == customers["Contract"].tolist()


def test_streamed_csv_keeps_na_as_text_like_read_table(tmp_path: Path):
    path = tmp_path / "c.csv"
    path.write_text("customerID,Contract\nA,NA\nB,\nC,null\n")
    streamed = pa.Table.from_batches(list(iter_batches(str(path), 10, repetitive={"Contract"})))
    assert streamed.column("Contract").cast(pa.string()).to_pylist() == ["NA", None, "null"]
    assert read_table(str(path))["Contract"].tolist()[::2] == ["NA", "null"]


def test_missing_duckdb_table_lists_the_tables(customers, tmp_path: Path):
    write_table(customers, f"duckdb://{tmp_path}/w.duckdb?table=customers")
    with pytest.raises(SourceError, match=r"no table 'other' .*tables: customers"):
        read_table(f"duckdb://{tmp_path}/w.duckdb?table=other")


def test_bigquery_uris_carry_the_job_project_and_location():
    uri = with_bigquery_job("bq://data.telco.customers", "billing", "EU")
    assert uri == "bq://data.telco.customers?billing_project=billing&location=EU"
    location = parse_uri(uri)
    assert location.bigquery_table == "data.telco.customers"
    assert (location.billing_project, location.location) == ("billing", "EU")
    assert parse_uri("bq://data.telco.customers").billing_project == "data"
    # The URI's own options win; file URIs are left alone.
    assert with_bigquery_job(uri, "other", "US") == uri
    assert with_bigquery_job("c.csv", "billing", "EU") == "c.csv"
    with pytest.raises(SourceError, match="unknown option"):
        parse_uri("bq://data.telco.customers?region=EU")


def test_bigquery_responses_are_regrouped_into_batches_of_the_asked_size():
    from components.warehouse.bigquery import _rebatched

    responses = [pa.record_batch({"id": pa.array(range(n), pa.int64())}) for n in (3, 4, 0, 9, 1)]
    batches = list(_rebatched(iter(responses), 5))
    assert [b.num_rows for b in batches] == [5, 5, 5, 2]
    ids = pa.Table.from_batches(batches).column("id").to_pylist()
    assert ids == [i for r in responses for i in r.column("id").to_pylist()]


def test_sources_and_outputs_are_checked_without_reading_rows(customers, tmp_path: Path):
    with pytest.raises(SourceError, match=r"file .*missing.csv does not exist"):
        check_source(str(tmp_path / "missing.csv"))
    warehouse = f"duckdb://{tmp_path}/w.duckdb"
    write_table(customers, f"{warehouse}?table=customers")
    check_source(f"{warehouse}?table=customers")
    with pytest.raises(SourceError, match=r"no table 'other' .*tables: customers"):
        check_source(f"{warehouse}?table=other")
    check_output(f"{warehouse}?table=churn_predictions")  # created when publishing
    check_output(f"duckdb://{tmp_path}/new.duckdb?table=churn_predictions")
    with pytest.raises(SourceError, match=r"cannot write predictions to 'out.csv'"):
        check_output("out.csv")
