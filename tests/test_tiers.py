"""One meaning per number: the tier agrees with the model's yes/no call, and the summary
says which churn rate is which."""

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.scoring.chunked import stage_scores
from components.scoring.staged import PREDICTIONS_FILE, ScoringJob
from components.scoring.summary import scoring_summary
from components.scoring.tiers import risk_tier, score_frame


@pytest.fixture(scope="module")
def model(customers):
    clean = validate(customers, source="fixture").clean
    best = CandidateResult("logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0)
    return fit_final(clean, best, seed=0)


def _never_low_when_flagged(frame) -> None:
    flagged = frame["churn_predicted"].to_numpy()
    tier = np.asarray(frame["risk_tier"], dtype=object)
    assert flagged.any() and (~flagged).any()
    assert not (flagged & (tier == "low")).any()


@pytest.mark.parametrize("threshold", [0.25, 0.85])
def test_a_flagged_customer_is_never_low(model, customers, threshold: float):
    """A threshold below the `medium` cut-off (as an F1 threshold on calibrated
    probabilities usually is) or above the `high` one: the tier follows the call."""
    frame = validate(customers, source="t").clean
    scored = score_frame(model, frame, threshold=threshold, high=0.7, medium=0.4)
    _never_low_when_flagged(scored)
    tier = np.asarray(scored["risk_tier"], dtype=object)
    assert not (~scored["churn_predicted"].to_numpy() & (tier == "high")).any()
    low = scored["churn_probability"] < min(0.4, threshold)
    assert (tier[low.to_numpy()] == "low").all()  # below both, still low


def test_capacity_tiers_keep_the_call_and_the_tier_in_agreement(model, tmp_path: Path):
    frame = generate_customers(600, seed=3, messy=False)
    job = ScoringJob(
        source="t.csv", threshold=0.3, high=0.7, medium=0.4, model_version=1,
        as_of=date(2026, 12, 7), scored_at=datetime(2026, 12, 7, tzinfo=UTC), run_id="r",
        top_n=20,
    )  # fmt: skip
    batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=300)
    run = stage_scores(batches, model, job, tmp_path, tolerance=0.05)
    staged = pq.read_table(tmp_path / PREDICTIONS_FILE).to_pandas()
    assert run.tiers["high"] == 20
    _never_low_when_flagged(staged)
    # Without a capacity, the same agreement.
    plain = stage_scores(batches, model, replace(job, top_n=0), tmp_path / "plain", tolerance=0.05)
    _never_low_when_flagged(pq.read_table(tmp_path / "plain" / PREDICTIONS_FILE).to_pandas())

    summary = scoring_summary(
        staged={"run_id": "r", "model_version": 1, **plain.metadata()},
        published={
            "rows": {"scored": plain.rows_scored, "rejected": plain.rows_rejected},
            "as_of_date": "2026-12-07", "output": "o", "rejects_output": "r", "exports": {},
        },
        drift=None,
    )  # fmt: skip
    probability = staged["churn_probability"].to_numpy()
    assert summary["expected_churn_rate"] == round(probability.mean(), 4)
    assert summary["flagged_share"] == round((probability >= 0.3).mean(), 4)
    assert "churn_rate" not in summary  # one name per meaning


def test_risk_tier_agrees_at_the_edges():
    probability = np.array([0.1, 0.3, 0.35, 0.5, 0.75, 0.9])
    tier = risk_tier(probability, high=0.7, medium=0.4, threshold=0.3)
    assert list(tier) == ["low", "medium", "medium", "medium", "high", "high"]
    tier = risk_tier(probability, high=0.7, medium=0.4, threshold=0.8)
    assert list(tier) == ["low", "low", "low", "medium", "medium", "high"]
