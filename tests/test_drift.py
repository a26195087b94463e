"""Drift: PSI, the reference profile saved with a model, and the streamed tally of today's
input: a shifted input is flagged, an unshifted one is not."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.monitoring.drift import (
    MISSING,
    SCORE,
    UNSEEN,
    DriftTally,
    drift_rows,
    drift_summary,
    load_profile,
    population_stability_index,
    reference_profile,
    save_profile,
)
from components.scoring.summary import render_scoring_report


@pytest.fixture(scope="module")
def model(customers: pd.DataFrame):
    clean = validate(customers, source="fixture").clean
    best = CandidateResult("logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0)
    return fit_final(clean, best, seed=0)


def _clean(rows: int, seed: int) -> pd.DataFrame:
    return validate(generate_customers(rows, seed=seed, messy=False), source="test").clean


def _scores(model, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(frame[TELCO_CHURN.feature_names])[:, 1]


@pytest.fixture(scope="module")
def profile(model):
    reference = _clean(4_000, seed=11)
    return reference_profile(reference, _scores(model, reference))


def _tally(profile, model, frame: pd.DataFrame, chunks: int = 3) -> DriftTally:
    tally = DriftTally.empty(profile)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), chunks)):
        rows = frame.iloc[part].reset_index(drop=True)
        tally.add(rows, _scores(model, rows), np.random.default_rng(i))
    return tally


def test_psi_is_zero_for_equal_distributions_and_matches_the_formula():
    assert population_stability_index([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0)
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)


def test_an_empty_bucket_does_not_make_psi_infinite():
    assert math.isfinite(population_stability_index([1.0, 0.0], [0.5, 0.5]))


def test_drift_is_flagged_for_a_shifted_input_and_not_for_an_unshifted_one(profile, model):
    unshifted = drift_rows(profile, _counts(_tally(profile, model, _clean(3_000, 12))), 0.2)
    summary = drift_summary(unshifted, 0.2)
    assert summary["drifted_features"] == []
    assert not summary["score_drifted"]
    assert summary["max_feature_psi"] < 0.05

    shifted_frame = _clean(3_000, 13)
    shifted_frame["Contract"] = "Month-to-month"  # every long contract lapsed
    shifted_frame["MonthlyCharges"] = shifted_frame["MonthlyCharges"] * 1.4  # a price rise
    shifted = drift_rows(profile, _counts(_tally(profile, model, shifted_frame)), 0.2)
    summary = drift_summary(shifted, 0.2)
    assert set(summary["drifted_features"]) == {"Contract", "MonthlyCharges"}
    assert summary["score_drifted"]  # month-to-month customers churn far more
    contract = next(r for r in shifted if r["feature"] == "Contract")
    assert contract["largest move"].startswith("Month-to-month")


def test_unseen_categories_and_missing_values_have_buckets_of_their_own(profile, model):
    frame = _clean(1_000, 14).astype({"InternetService": object})
    frame.loc[:99, "InternetService"] = "Satellite"
    already_blank = int(frame.loc[50:, "TotalCharges"].isna().sum())  # brand-new customers
    frame.loc[:49, "TotalCharges"] = np.nan
    tally = _tally(profile, model, frame, chunks=1)
    internet = next(b for b in profile.buckets if b.name == "InternetService")
    counts = dict(zip(internet.labels(), tally.counts["InternetService"], strict=True))
    assert counts[UNSEEN] == 100
    total = next(b for b in profile.buckets if b.name == "TotalCharges")
    missing = dict(zip(total.labels(), tally.counts["TotalCharges"], strict=True))[MISSING]
    assert missing == 50 + already_blank
    row = next(
        r for r in drift_rows(profile, _counts(tally), 0.2) if r["feature"] == "InternetService"
    )
    assert row["unseen today"] == "10.00%"


def test_tallies_of_chunks_merge_into_the_tally_of_the_whole(profile, model):
    frame = _clean(2_000, 15)
    whole = _tally(profile, model, frame, chunks=1)
    first, second = frame.iloc[:700].reset_index(drop=True), frame.iloc[700:].reset_index(drop=True)
    merged = DriftTally.empty(profile, sample_rows=300)
    merged.add(first, _scores(model, first), np.random.default_rng(1))
    other = DriftTally.empty(profile, sample_rows=300)
    other.add(second, _scores(model, second), np.random.default_rng(2))
    merged.merge(other)
    merged.merge(DriftTally.empty(profile, sample_rows=300))  # a chunk with no valid row
    assert _counts(merged) == _counts(whole)
    assert len(merged.sample) == 300  # bounded, whatever the input size
    assert merged.sample["_key"].is_unique


def test_profile_is_saved_beside_the_model_and_read_back(profile, tmp_path: Path):
    assert load_profile(tmp_path) is None  # a model registered before profiles existed
    save_profile(profile, tmp_path)
    loaded = load_profile(tmp_path)
    assert loaded is not None
    assert loaded.buckets == profile.buckets
    assert loaded.shares == profile.shares
    assert set(loaded.sample) == {*TELCO_CHURN.feature_names, SCORE}
    # edges come from the reference's deciles: ~10% of training rows per bucket
    tenure = np.asarray(loaded.shares["tenure"][:-1])
    assert tenure.max() < 0.2


def test_report_shows_drifted_features_and_stays_self_contained(profile, model):
    frame = _clean(1_000, 16)
    frame["Contract"] = "Two year"
    tally = _tally(profile, model, frame)
    rows = drift_rows(profile, _counts(tally), 0.2)
    html = render_scoring_report(
        title="scoring",
        summary={"rows read": 1_000},
        profile=profile,
        rows=rows,
        current_sample=_sample(tally),
        threshold=0.2,
    )
    assert "Contract" in html and "Population stability index" in html
    assert "Score distribution" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html

    without = render_scoring_report(
        title="scoring", summary={}, profile=None, rows=[], current_sample={}, threshold=0.2
    )
    assert "drift was not measured" in without


def _counts(tally: DriftTally) -> dict[str, list[int]]:
    return {name: counts.tolist() for name, counts in tally.counts.items()}


def _sample(tally: DriftTally) -> dict[str, list]:
    return {name: tally.sample[name].tolist() for name in tally.sample.columns}
