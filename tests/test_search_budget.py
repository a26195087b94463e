"""Training that scales: the candidate search keeps to its time budget at any size, by
subsampling or skipping what would overrun, saying so; SMOTE is prepared only when used."""

import numpy as np
import pytest

from components.contract import TELCO_CHURN
from components.data.validate import validate
from components.model.search import (
    FAMILIES,
    MIN_SEARCH_ROWS,
    PROBE_ROWS,
    CandidateResult,
    _prepare_folds,
    _rows_within,
    _seconds_for,
    search_candidates,
)
from components.model.train import final_rows, fit_final
from components.reports.training_report import _candidates_body

KNN = next(f for f in FAMILIES if f.name == "k_nearest_neighbors")
BOOSTING = next(f for f in FAMILIES if f.name == "gradient_boosting")


@pytest.fixture(scope="module")
def train_frame(customers):
    return validate(customers, source="t").clean


def _probe(fitting: float, predicting: float) -> CandidateResult:
    """A probe's timing: work summed over folds, run two at a time, plus 0.5 s of metrics."""
    side_by_side = (fitting + predicting) / 2
    return CandidateResult(
        "probe", {}, [], [], np.empty(0), side_by_side + 0.5,
        timing=(fitting, predicting, side_by_side),
    )  # fmt: skip


def test_a_family_that_would_overrun_its_share_is_cross_validated_on_what_fits():
    # 1 s fitting and 3 s predicting (the whole validation part) on 3,000 rows per fold;
    # 800,000 rows per fold; a 24 s share.
    probe = _probe(1.0, 3.0)
    boosting = _rows_within(BOOSTING, probe, PROBE_ROWS, 800_000, 24.0)
    knn = _rows_within(KNN, probe, PROBE_ROWS, 800_000, 24.0)
    # Predicting the same validation rows costs the same whatever the training rows, but
    # k-nearest neighbours compares each with every training row.
    assert 30 * PROBE_ROWS < boosting < 32 * PROBE_ROWS
    assert 11 * PROBE_ROWS < knn < 12 * PROBE_ROWS
    assert _seconds_for(BOOSTING, probe, PROBE_ROWS, boosting) <= 24.0
    assert _seconds_for(BOOSTING, probe, PROBE_ROWS, boosting + 1) > 24.0
    assert _rows_within(BOOSTING, probe, PROBE_ROWS, 10_000, 24.0) == 10_000  # all fit
    assert _rows_within(KNN, _probe(60.0, 60.0), PROBE_ROWS, 800_000, 24.0) < MIN_SEARCH_ROWS


def test_with_no_budget_left_every_family_is_skipped_with_its_reason(train_frame):
    skipped: list[tuple[str, str]] = []
    results = search_candidates(
        train_frame, n_folds=3, seed=0, candidates_per_family=2, budget_seconds=0.0,
        resampling="auto", on_skip=lambda what, why: skipped.append((what, why)),
    )  # fmt: skip
    assert [what for what, _ in skipped[: len(FAMILIES)]] == [f.name for f in FAMILIES]
    assert "would overrun its 0 s share of the search budget" in skipped[0][1]
    # Nothing fitted beyond the probes (one setting per family, no resampling methods),
    # which are all there is to choose from.
    assert len(results) == len(FAMILIES)
    assert {w for w, _ in skipped[len(FAMILIES) :]} <= {
        f"{r.family} with {m}" for r in results for m in ("smote", "class_weight")
    }


def test_smote_is_prepared_only_for_the_folds_and_rows_that_use_it(train_frame):
    folds = _prepare_folds(train_frame, 3, 0, TELCO_CHURN)
    for fold in folds:
        fold.training_rows("none")
        fold.training_rows("class_weight", rows=500)
    assert not any(fold._smoted for fold in folds)
    _, y, _ = folds[0].training_rows("smote", rows=500)
    assert y.mean() == 0.5 and len(y) > 500
    assert list(folds[0]._smoted) == [500] and not folds[1]._smoted


def test_the_final_model_is_fitted_on_the_share_the_search_judged(train_frame):
    best = CandidateResult(
        "k_nearest_neighbors", {"n_neighbors": 25, "weights": "uniform"}, [], [], np.empty(0),
        0.0, resampling="none", train_rows=600, train_share=0.5,
    )  # fmt: skip
    model = fit_final(train_frame, best, seed=0)
    assert model.named_steps["model"].n_samples_fit_ == round(0.5 * len(train_frame))


def test_the_report_lists_a_skipped_family_with_its_reason():
    html = _candidates_body(
        [
            {"model": "logistic_regression", "cv_roc_auc_mean": 0.84, "cv_roc_auc_std": 0.01},
            {"model": "k_nearest_neighbors", "skipped": "it would overrun its 0 s share"},
        ]
    )
    assert "it would overrun its 0 s share" in html


def test_the_final_fit_takes_as_many_rows_as_its_budget_allows():
    # The search could afford 10,000 rows per fold; one fit of them took 4 s (20 s summed
    # over 5 folds).
    best = CandidateResult(
        "gradient_boosting", {}, [0.8] * 5, [], np.empty(0), 30.0,
        train_rows=10_000, train_share=0.0125, timing=(20.0, 5.0, 15.0),
    )  # fmt: skip
    rows = final_rows(best, 1_000_000, 40.0, BOOSTING)
    assert 75_000 < rows < 85_000  # ten times the time: a little under ten times the rows
    assert final_rows(best, 1_000_000, 0.0, BOOSTING) == 12_500  # the share it judged
    assert final_rows(best, 50_000, 40.0, BOOSTING) == 50_000  # all of them fit
    assert final_rows(best, 1_000_000, 40.0, KNN) == 12_500  # scoring cost grows with rows
