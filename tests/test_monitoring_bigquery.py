"""Issue 20 against the BigQuery emulator: the `churn_performance` table replaced per date,
the control group's `treatment_group` column added to a predictions table made before it,
and outcomes read from BigQuery."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.monitoring.control import in_control_group
from components.monitoring.performance import PERFORMANCE_COLUMNS
from components.monitoring.tables import performance_uri, read_outcomes, write_performance
from components.scoring.chunked import stage_scores
from components.scoring.publish import publish_scores
from components.scoring.staged import PREDICTION_COLUMNS, ScoringJob
from components.warehouse import bigquery, parse_uri, write_table

pytestmark = pytest.mark.bigquery

DAY = date(2026, 11, 2)


def _rows(uri: str) -> pa.Table:
    """A table's rows as the REST API lists them: not through the code under test."""
    location = parse_uri(uri)
    rows = bigquery.client(location).list_rows(location.bigquery_table)
    return rows.to_arrow(create_bqstorage_client=False)


def _performance(days: int) -> pd.DataFrame:
    frame = pd.DataFrame({name: [0.5] * days for name in PERFORMANCE_COLUMNS})
    frame["as_of_date"] = [DAY + timedelta(days=d) for d in range(days)]
    frame["outcome_closed"] = True
    for name in ("model_version", "scored", "high", "labelled", "no_outcome", "churned"):
        frame[name] = pd.array([100] * days, dtype="Int64")
    return frame


def test_the_performance_table_is_replaced_per_date_in_bigquery(bq_dataset):
    uri = performance_uri(f"bq://{bq_dataset}.churn_predictions?location=US")
    assert uri == f"bq://{bq_dataset}.churn_performance?location=US"
    write_performance(_performance(2), uri)
    again = _performance(2).iloc[1:].assign(roc_auc=0.9)
    write_performance(again, uri)  # the second date re-measured: replaced, not added
    rows = sorted(_rows(uri).to_pylist(), key=lambda r: r["as_of_date"])
    assert [r["as_of_date"] for r in rows] == [DAY, DAY + timedelta(days=1)]
    assert [r["roc_auc"] for r in rows] == [0.5, 0.9]
    created = bigquery.client(parse_uri(uri)).get_table(uri.removeprefix("bq://").split("?")[0])
    assert created.time_partitioning.field == "as_of_date"
    assert [f.name for f in created.schema] == list(PERFORMANCE_COLUMNS)


def test_treatment_group_joins_a_bigquery_predictions_table_made_before_it(bq_dataset, tmp_path):
    output = f"bq://{bq_dataset}.churn_predictions"
    frame = generate_customers(400, seed=8, messy=False)
    clean = validate(frame, source="fixture").clean
    best = CandidateResult(
        "logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0, resampling="none"
    )
    model = fit_final(clean, best, seed=0)
    job = ScoringJob(
        source="bq", threshold=0.5, high=0.5, medium=0.3, model_version=1, as_of=DAY,
        scored_at=datetime(2026, 11, 2, tzinfo=UTC), run_id="old",
    )  # fmt: skip
    batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches()
    # Yesterday's table, as the code before the control group (and the reasons) wrote it.
    stage_scores(batches, model, job, tmp_path / "old", tolerance=0.05)
    old = pd.read_parquet(tmp_path / "old" / "predictions.parquet")
    old = old[list(PREDICTION_COLUMNS[: PREDICTION_COLUMNS.index("treatment_group")])]
    write_table(old, output)
    later = replace(job, as_of=DAY + timedelta(days=1), run_id="new", control_share=0.4,
                    control_salt="winter")  # fmt: skip
    stage_scores(batches, model, later, tmp_path / "new", tolerance=0.05)
    publish_scores(tmp_path / "new", output_uri=output, as_of=later.as_of)
    # Read with a query: the emulator runs the ALTER TABLE but does not update the table's
    # metadata, which BigQuery does (so `get_table(...).schema` is not checked here).
    client = bigquery.client(parse_uri(output))
    query = f"SELECT * FROM `{bq_dataset}.churn_predictions`"
    result = client.query(query).result().to_arrow(create_bqstorage_client=False)
    assert result.schema.names == list(PREDICTION_COLUMNS)  # the new columns, in order
    rows = pd.DataFrame(result.to_pylist())
    new = rows[rows["run_id"] == "new"]
    assert rows.loc[rows["run_id"] == "old", "treatment_group"].isna().all()
    high = new[new["risk_tier"] == "high"]
    assert len(high) > 20 and new.loc[new["risk_tier"] != "high", "treatment_group"].isna().all()
    control = in_control_group(high["customer_id"], share=0.4, salt="winter")
    assert (high["treatment_group"] == "control").tolist() == control.tolist()
    assert set(high["treatment_group"]) == {"control", "offer"}


def test_outcomes_are_read_from_bigquery(bq_dataset):
    uri = f"bq://{bq_dataset}.churn_outcomes"
    assert read_outcomes(uri) is None  # none arrived yet
    write_table(
        pd.DataFrame(
            {"customer_id": ["a", "b"], "churned": [True, False],
             "observed_date": [DAY, DAY + timedelta(days=30)]}
        ),
        uri,
    )  # fmt: skip
    outcomes = read_outcomes(uri).sort_values("customer_id")
    assert outcomes["churned"].tolist() == [True, False]
    assert outcomes["observed_date"].tolist() == [DAY, DAY + timedelta(days=30)]
