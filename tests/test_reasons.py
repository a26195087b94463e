"""Reason codes: every family's contributions add up to the published probability, and a
model whose true drivers are known names them."""

import numpy as np
import pandas as pd
import pytest

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model import reasons
from components.model.calibration import ProbabilityCalibrator
from components.model.predict import predict_probability
from components.model.search import CandidateResult
from components.model.train import fit_final

PARAMS = {
    "logistic_regression": {"C": 0.3},
    "random_forest": {"max_depth": 6, "min_samples_leaf": 10},
    "gradient_boosting": {"max_leaf_nodes": 7, "learning_rate": 0.1},
    "extra_trees": {"max_depth": 6, "min_samples_leaf": 10},
    "k_nearest_neighbors": {"n_neighbors": 25, "weights": "distance"},
}
METHODS = {
    "logistic_regression": "linear terms",
    "random_forest": "tree paths",
    "gradient_boosting": "tree paths",
    "extra_trees": "tree paths",
    "k_nearest_neighbors": "permutation sampling",
}


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return validate(generate_customers(800, seed=3, messy=False), source="fixture").clean


@pytest.fixture(scope="module")
def scored() -> pd.DataFrame:
    """Customers to explain, with the generator's gaps and oddities (blank TotalCharges)."""
    return validate(generate_customers(300, seed=4), source="fixture").clean


def _fit(train: pd.DataFrame, family: str, calibration: str | None):
    calibrator = None
    if calibration:
        label = train["Churn"].to_numpy()
        rng = np.random.default_rng(0)
        noisy = np.clip(0.3 * rng.random(len(label)) + 0.6 * label, 0, 1)
        calibrator = ProbabilityCalibrator(calibration).fit(noisy, label)
    best = CandidateResult(family, PARAMS[family], [], [], np.empty(0), 0.0, resampling="none")
    return fit_final(train, best, seed=1, calibrator=calibrator)


@pytest.mark.parametrize("calibration", [None, "sigmoid", "isotonic"])
@pytest.mark.parametrize("family", list(PARAMS))
def test_contributions_add_up_to_the_published_probability(
    train: pd.DataFrame, scored: pd.DataFrame, family: str, calibration: str | None
):
    model = _fit(train, family, calibration)
    published = predict_probability(model, scored)
    explained = reasons.explain(model, scored)
    assert reasons.method(model) == METHODS[family]
    assert explained.features == [*model[0].feature_names_in_]  # original features only
    np.testing.assert_array_equal(explained.probability, published)
    np.testing.assert_allclose(
        explained.baseline + explained.effects.sum(axis=1), published, rtol=0, atol=1e-9
    )
    # A few rows (serving's path) get the numbers the whole frame gets.
    np.testing.assert_allclose(
        reasons.explain(model, scored.iloc[:3]).effects, explained.effects[:3], rtol=0, atol=1e-12
    )


def test_a_model_of_known_drivers_names_them(train: pd.DataFrame):
    """Churn here depends on the contract and tenure alone: those are the reasons."""
    known = train.copy()
    rng = np.random.default_rng(5)
    risk = (known["Contract"] == "Month-to-month") * 2.0 - known["tenure"] / 20.0
    known["Churn"] = (risk + rng.normal(scale=0.3, size=len(known)) > 0.5).astype(int)
    # Total charges grow with tenure: shuffled, they carry none of its signal.
    known["TotalCharges"] = rng.permutation(known["TotalCharges"].to_numpy())
    for family in ("gradient_boosting", "logistic_regression", "random_forest"):
        model = _fit(known, family, "sigmoid")
        explained = reasons.explain(model, known)
        at_risk = explained.probability > 0.6
        assert at_risk.sum() > 50, family
        first = np.array(explained.features)[np.argmax(explained.effects[at_risk], axis=1)]
        assert np.isin(first, ["Contract", "tenure"]).mean() > 0.95, family
        weight = pd.Series(np.abs(explained.effects).mean(axis=0), explained.features)
        others = weight.drop(["Contract", "tenure"])
        assert weight[["Contract", "tenure"]].min() > 3 * others.max(), (family, weight)


def test_the_scoring_report_shows_the_high_tiers_reasons_against_last_week(
    train: pd.DataFrame, tmp_path
):
    """Today's high tier by strongest reason, beside the share of each a week earlier as
    published in the warehouse; the training report shows the same attributions' global
    importance beside permutation importance."""
    from datetime import UTC, date, datetime

    import pyarrow as pa

    from components.model.evaluate import attribution_importance
    from components.reports.training_report import render_training_report
    from components.scoring.chunked import stage_scores
    from components.scoring.publish import publish_scores
    from components.scoring.reason_trend import (
        WEEK,
        published_high_tier_reasons,
        reason_section,
        staged_high_tier_reasons,
    )
    from components.scoring.staged import ScoringJob
    from components.scoring.summary import render_scoring_report

    model = _fit(train, "gradient_boosting", None)
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    today = date(2026, 12, 7)
    for day, seed in ((today - WEEK, 8), (today, 9)):
        customers = generate_customers(400, seed=seed).drop(columns="Churn")
        job = ScoringJob(
            source="test",
            threshold=0.5,
            high=0.6,
            medium=0.3,
            model_version=1,
            as_of=day,
            scored_at=datetime(2026, 12, 7, tzinfo=UTC),
            run_id=str(day),
        )
        staged = tmp_path / str(day)
        batch = pa.RecordBatch.from_pandas(customers, preserve_index=False)
        run = stage_scores([batch], model, job, staged, tolerance=0.05)
        publish_scores(staged, output_uri=output, as_of=day)

    counts = staged_high_tier_reasons(staged)
    assert sum(counts.values()) == run.tiers["high"] > 0
    before = published_high_tier_reasons(output, today - WEEK)
    assert before and sum(before.values()) > 0
    assert published_high_tier_reasons(output, today - 2 * WEEK) is None  # nothing published
    heading, body = reason_section(counts, before, today)
    top = max(counts, key=counts.get)
    assert heading == "Why the high tier is at risk" and top in body
    assert "share a week ago" in body and str(today - WEEK) in body
    html = render_scoring_report(
        title="t", summary={}, profile=None, rows=[], current_sample={}, threshold=0.2,
        reasons=(heading, body),
    )  # fmt: skip
    assert heading in html

    test = train.iloc[:200]
    importance = attribution_importance(model, test, seed=0)
    assert list(importance) == sorted(importance, key=importance.get, reverse=True)
    page = render_training_report(
        title="t",
        summary={},
        y_true=test["Churn"].to_numpy(),
        y_prob=predict_probability(model, test),
        threshold=0.5,
        candidates=[],
        feature_importance=dict.fromkeys(importance, 0.01),  # permutation's, as evaluate has it
        attribution_importance=importance,
    )
    assert "mean |contribution| (percentage points)" in page and "tenure" in page


def test_only_contributions_towards_churn_are_reasons(train: pd.DataFrame, scored: pd.DataFrame):
    """A customer with fewer than three features pushing towards churn has the rest of the
    reason columns empty; one with none has none, whatever the others in the frame have."""
    from components.scoring.reason_codes import reason_frame

    model = _fit(train, "logistic_regression", "sigmoid")
    probability = predict_probability(model, scored)
    explained = reasons.explain(model, scored)
    pushing = (explained.effects > 0).sum(axis=1)
    assert (pushing < 3).any()
    for rows in (scored.index, [int(np.argmin(pushing))]):  # one customer alone, as served
        frame = scored.loc[rows]
        columns = reason_frame(model, frame, probability[rows], np.ones(len(frame), dtype=bool))
        for k in (1, 2, 3):
            filled = columns[f"reason_{k}"].notna().to_numpy()
            np.testing.assert_array_equal(filled, pushing[rows] >= k)
            assert (columns[f"reason_{k}_effect"].dropna() > 0).all()
            assert columns[f"reason_{k}_phrase"].notna().to_numpy().tolist() == filled.tolist()
