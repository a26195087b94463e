"""Issue 20, step 4: the control group in the `high` tier (stable salted hash), its
`treatment_group` column in the predictions table and CSV, and the offer effect."""

import csv
from dataclasses import replace
from datetime import UTC, date, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.monitoring.control import in_control_group, offer_effect, treatment_groups
from components.scoring.chunked import stage_scores
from components.scoring.publish import publish_scores
from components.scoring.staged import PREDICTION_COLUMNS, ScoringJob

AS_OF = date(2026, 11, 26)


@pytest.fixture(scope="module")
def model(customers: pd.DataFrame):
    clean = validate(customers, source="fixture").clean
    best = CandidateResult("logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0)
    return fit_final(clean, best, seed=0)


def _job(**changes) -> ScoringJob:
    job = ScoringJob(
        source="test.csv",
        threshold=0.5,
        high=0.5,
        medium=0.3,
        model_version=1,
        as_of=AS_OF,
        scored_at=datetime(2026, 11, 26, 6, 0, tzinfo=UTC),
        run_id="run-1",
        control_share=0.3,
        control_salt="spring-2027",
    )
    return replace(job, **changes)


def test_the_control_group_is_a_stable_salted_share_of_the_high_tier():
    ids = [f"{i:04d}-ABCDE" for i in range(20_000)]
    control = in_control_group(ids, share=0.2, salt="spring-2027")
    assert 0.19 < control.mean() < 0.21
    # Stable: the same customers whatever the order or the run; a new salt, new customers.
    assert (
        in_control_group(ids[::-1], share=0.2, salt="spring-2027")[::-1].tolist()
        == control.tolist()
    )
    other = in_control_group(ids, share=0.2, salt="autumn-2027")
    assert 0.02 < (control & other).mean() < 0.06
    # Pinned: SHA-256 of "spring-2027:0000-ABCDE" picks these; a change of hash would move
    # customers between groups in the middle of a campaign.
    assert np.flatnonzero(control[:40]).tolist() == _PINNED
    groups = treatment_groups(["a", "b", "c"], ["high", "low", "medium"], share=0.5, salt="x")
    assert groups[1] is None and groups[2] is None and groups[0] in ("offer", "control")
    assert treatment_groups(["a"], ["high"], share=0.0, salt="x").tolist() == [None]


_PINNED = [0, 3, 8, 11, 14, 35]


@pytest.mark.parametrize("top_n", [0, 40])
def test_treatment_group_is_published_at_the_end_of_the_table_and_the_csv(model, tmp_path, top_n):
    frame = generate_customers(600, seed=4, messy=False)
    batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=200)
    run = stage_scores(batches, model, _job(top_n=top_n), tmp_path / "staged", tolerance=0.05)
    output = f"duckdb://{tmp_path / 'w.duckdb'}?table=churn_predictions"
    exports = tmp_path / "exports"
    publish_scores(tmp_path / "staged", output_uri=output, as_of=AS_OF, export_dir=exports)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        table = con.sql("SELECT * FROM churn_predictions").df()
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    # Added after run_id, before the later reason columns: columns only ever go at the end.
    assert PREDICTION_COLUMNS.index("treatment_group") == PREDICTION_COLUMNS.index("run_id") + 1
    high = table["risk_tier"] == "high"
    assert high.sum() == run.tiers["high"] > 20
    assert table.loc[~high, "treatment_group"].isna().all()
    assert set(table.loc[high, "treatment_group"]) == {"offer", "control"}
    expected = in_control_group(table.loc[high, "customer_id"], share=0.3, salt="spring-2027")
    assert (table.loc[high, "treatment_group"] == "control").tolist() == expected.tolist()
    (csv_file,) = [p for p in exports.rglob("*.csv") if "reject" not in p.name]
    with csv_file.open() as handle:
        header = next(csv.reader(handle))
    assert header == list(table.columns)


def test_a_predictions_table_made_before_the_column_gets_it(model, tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE churn_predictions (customer_id VARCHAR, churn_probability DOUBLE, "
            "churn_predicted BOOLEAN, risk_tier VARCHAR, model_version BIGINT, as_of_date DATE, "
            "scored_at TIMESTAMPTZ, run_id VARCHAR)"
        )
        con.execute(
            "INSERT INTO churn_predictions VALUES ('x', 0.9, true, 'high', 1, DATE '2026-11-01', "
            "now(), 'old')"
        )
    frame = generate_customers(300, seed=4, messy=False)
    batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches()
    stage_scores(batches, model, _job(), tmp_path / "staged", tolerance=0.05)
    publish_scores(tmp_path / "staged", output_uri=f"duckdb://{path}?table=churn_predictions",
                   as_of=AS_OF)  # fmt: skip
    with duckdb.connect(str(path), read_only=True) as con:
        table = con.sql("SELECT * FROM churn_predictions ORDER BY as_of_date").df()
    # The control group's and the reasons' columns, added in order.
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    assert table.iloc[0]["run_id"] == "old" and pd.isna(table.iloc[0]["treatment_group"])
    assert table["treatment_group"].notna().any()


def test_offer_effect_recovers_a_known_effect_within_its_interval():
    rng = np.random.default_rng(3)
    n = 6000
    groups = np.where(rng.random(n) < 0.3, "control", "offer")
    p = np.where(groups == "control", 0.6, 0.6 * (1 - 0.25))
    labels = (rng.random(n) < p).astype(int)
    labels[:100] = -1  # no outcome yet
    result = offer_effect(groups, labels)
    assert result["offered"] + result["control"] == n - 100
    assert result["effect_low"] < 0.15 < result["effect_high"]
    assert result["kept_per_100_offers"] == pytest.approx(100 * result["effect"])
