"""Issue 20, steps 1-3: sample outcomes, realized performance with bootstrap intervals,
estimated performance before outcomes arrive, and the `churn_performance` table."""

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from components.data.sample_data import churn_probabilities, generate_customers
from components.data.sample_outcomes import daily_customers, generate_outcomes
from components.errors import SourceError
from components.monitoring.performance import (
    PERFORMANCE_COLUMNS,
    Scores,
    estimated_roc_auc,
    outcome_labels,
    performance_rows,
    realized_metrics,
)
from components.monitoring.tables import performance_uri, read_outcomes, write_performance

DAY = date(2026, 11, 1)


def _predictions(n: int = 2000, days: int = 3, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """`days` days of predictions scored by the truth itself (a perfectly calibrated model)."""
    frames, truths = [], []
    for day in range(days):
        customers, truth = daily_customers(n, seed, day)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": customers["customerID"],
                    "churn_probability": truth.to_numpy(),
                    "risk_tier": np.where(truth.to_numpy() >= 0.6, "high", "low"),
                    "as_of_date": DAY + timedelta(days=day),
                    "model_version": 1,
                }
            )
        )
        truths.append(truth)
    return pd.concat(frames, ignore_index=True), pd.concat(truths)


def test_churn_probabilities_are_those_the_labels_were_drawn_with():
    customers = generate_customers(20_000, seed=3, messy=False)
    p = churn_probabilities(20_000, seed=3)
    churned = (customers["Churn"] == "Yes").to_numpy()
    assert abs(churned.mean() - p.mean()) < 0.01
    assert roc_auc_score(churned, p) > 0.8
    # Drawing them changed nothing the generator returns.
    assert customers.equals(generate_customers(20_000, seed=3, messy=False))


def test_outcomes_are_seeded_and_carry_the_injected_offer_effect():
    predictions, truth = _predictions(days=2)
    predictions["treatment_group"] = np.where(
        predictions["risk_tier"] == "high",
        np.where(np.arange(len(predictions)) % 2, "offer", "control"),
        None,
    )
    outcomes = generate_outcomes(predictions, truth, window_days=10, seed=1, offer_effect=0.5)
    again = generate_outcomes(predictions, truth, window_days=10, seed=1, offer_effect=0.5)
    pd.testing.assert_frame_equal(outcomes, again)
    assert 0.97 < len(outcomes) / len(predictions) < 1.0  # a few customers never report
    joined = predictions.merge(outcomes, on="customer_id")
    rate = joined.groupby("treatment_group")["churned"].mean()
    assert rate["offer"] < 0.65 * rate["control"]
    delay = pd.to_datetime(joined["observed_date"]) - pd.to_datetime(joined["as_of_date"])
    assert delay.dt.days.between(1, 10).all()


def test_realized_metrics_agree_with_scikit_learn_and_their_intervals_cover_them():
    rng = np.random.default_rng(0)
    p = np.round(rng.random(1500), 2)  # ties, as real scores have
    y = (rng.random(1500) < p).astype(np.int8)
    y[:50] = -1  # no outcome: left out
    result = realized_metrics(Scores(p, p >= 0.7, np.ones(1500), y), top_n=100, samples=200, seed=0)
    known = y >= 0
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y[known], p[known]))
    assert result["pr_auc"] == pytest.approx(average_precision_score(y[known], p[known]))
    assert result["brier"] == pytest.approx(brier_score_loss(y[known], p[known]))
    for name in ("roc_auc", "pr_auc", "brier", "high_precision", "top_lift"):
        assert result[f"{name}_low"] < result[name] < result[f"{name}_high"]


def test_estimated_roc_auc_tracks_the_realized_one_for_calibrated_scores():
    rng = np.random.default_rng(1)
    p = churn_probabilities(5000, seed=9)
    y = (rng.random(5000) < p).astype(int)
    assert estimated_roc_auc(p) == pytest.approx(roc_auc_score(y, p), abs=0.02)


def test_performance_rows_wait_for_the_window_and_count_customers_without_outcome():
    predictions, truth = _predictions(days=3)
    outcomes = generate_outcomes(predictions, truth, window_days=10, seed=2, missing_share=0.05)
    today = DAY + timedelta(days=11)  # the first two dates' windows have closed
    rows = performance_rows(
        predictions, outcomes, today=today, window_days=10, top_n=100, samples=100, seed=0
    )
    assert list(rows.columns) == list(PERFORMANCE_COLUMNS)
    assert rows["outcome_closed"].tolist() == [True, True, False]
    first = rows.iloc[0]
    assert first["labelled"] + first["no_outcome"] == first["scored"] == 2000
    assert 50 < first["no_outcome"] < 150
    assert first["roc_auc_low"] < first["estimated_roc_auc"] < first["roc_auc_high"]
    assert abs(first["estimate_error"]) < 0.03
    assert pd.isna(rows.iloc[2]["roc_auc"]) and not pd.isna(rows.iloc[2]["estimated_roc_auc"])
    again = performance_rows(
        predictions, outcomes, today=today, window_days=10, top_n=100, samples=100, seed=0
    )
    pd.testing.assert_frame_equal(rows, again)


def test_outcome_labels_count_only_churns_inside_the_window():
    predictions = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "as_of_date": [DAY] * 4})
    outcomes = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "churned": [True, True, False],
            "observed_date": [
                DAY + timedelta(days=3),
                DAY + timedelta(days=40),
                DAY + timedelta(days=30),
            ],
        }
    )
    # a churned inside; b churned after the window but was there at its end? no sighting:
    # unknown; c was seen at the window's end; d has no outcome.
    assert outcome_labels(predictions, outcomes, window_days=30).tolist() == [1, -1, 0, -1]


def test_performance_table_is_replaced_per_date_never_duplicated(tmp_path):
    predictions, truth = _predictions(n=500, days=2)
    outcomes = generate_outcomes(predictions, truth, window_days=5, seed=2)
    rows = performance_rows(
        predictions,
        outcomes,
        today=DAY + timedelta(days=30),
        window_days=5,
        top_n=50,
        samples=50,
        seed=0,
    )
    uri = performance_uri(f"duckdb://{tmp_path / 'w.duckdb'}?table=churn_predictions")
    assert uri.endswith("?table=churn_performance")
    assert write_performance(rows, uri) == {DAY: 1, DAY + timedelta(days=1): 1}
    write_performance(rows.iloc[1:], uri)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        stored = con.sql("SELECT as_of_date, roc_auc FROM churn_performance ORDER BY 1").fetchall()
    assert [d for d, _ in stored] == [DAY, DAY + timedelta(days=1)]
    assert stored[0][1] == pytest.approx(rows.iloc[0]["roc_auc"])


def test_outcomes_read_from_a_csv_with_yes_no_labels(tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_text("Customer_ID,Churned,Observed_Date\na,Yes,2026-11-03\nb,no,2026-12-01\n")
    outcomes = read_outcomes(str(path))
    assert outcomes["churned"].tolist() == [True, False]
    assert outcomes["observed_date"].tolist() == [date(2026, 11, 3), date(2026, 12, 1)]
    assert read_outcomes(str(tmp_path / "none.csv")) is None
    path.write_text("customer_id,churned,observed_date\na,maybe,2026-11-03\n")
    with pytest.raises(SourceError, match="`churned` must be"):
        read_outcomes(str(path))
