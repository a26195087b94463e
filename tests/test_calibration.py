"""Calibrated probabilities: fitted on out-of-fold predictions of the training split only,
resampling chosen by CV, and the published probability close to the churn rate."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kfp import compiler

from components.data.sample_data import generate_customers
from components.data.split import split_train_test
from components.data.validate import validate
from components.model.calibration import CalibratedModel, ProbabilityCalibrator
from components.model.evaluate import calibration_metrics, expected_calibration_error
from components.model.predict import predict_probability
from components.model.search import FAMILIES, resampling_choices, search_candidates, select_best
from components.model.train import fit_calibrator, fit_final
from components.settings import Settings
from pipelines.compiling import build_pipeline

training_pipeline = build_pipeline("training", Settings())


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    clean = validate(generate_customers(4_000, seed=11, messy=False), source="t").clean
    return split_train_test(clean, test_size=0.25, seed=0)


def test_the_training_step_is_never_given_the_test_set(tmp_path: Path):
    """Calibration happens in the training step; the compiled pipeline hands that step the
    split's `train` output and nothing else."""
    path = tmp_path / "training.yaml"
    compiler.Compiler().compile(training_pipeline, str(path))
    task = yaml.safe_load(path.read_text())["root"]["dag"]["tasks"]["train-candidates"]
    artifacts = task["inputs"]["artifacts"]
    assert {
        name: (
            a["taskOutputArtifact"]["producerTask"],
            a["taskOutputArtifact"]["outputArtifactKey"],
        )
        for name, a in artifacts.items()
    } == {"train": ("split-data", "train")}


def test_calibrator_is_fitted_on_out_of_fold_predictions_of_training_rows_only(split):
    train, test = split
    results = search_candidates(
        train, n_folds=3, seed=0, candidates_per_family=1, budget_seconds=60, families=FAMILIES[:1]
    )
    best = select_best(results)
    calibrator, brier = fit_calibrator(train, best, method="auto", n_folds=3, seed=0)
    assert set(brier) == {"sigmoid", "isotonic"} and calibrator.method == min(brier, key=brier.get)
    # One out-of-fold prediction per training row, each from a model that did not see it.
    assert len(best.oof_probability) == len(train) and not np.isnan(best.oof_probability).any()
    refitted = ProbabilityCalibrator(calibrator.method).fit(
        best.oof_probability, train["Churn"].to_numpy()
    )
    grid = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(calibrator.transform(grid), refitted.transform(grid))
    # The test customers took no part: none of them is a training row.
    assert not set(test["customerID"]) & set(train["customerID"])


def test_resampling_is_searched_and_class_weights_only_where_they_apply(split):
    train, _ = split
    assert resampling_choices(FAMILIES[0], "auto", 0) == ("smote", "class_weight", "none")
    knn = next(f for f in FAMILIES if f.name == "k_nearest_neighbors")
    assert resampling_choices(knn, "auto", 0) == ("smote", "none")
    assert resampling_choices(knn, "smote", 0) == ("smote",)
    results = search_candidates(
        train,
        n_folds=3,
        seed=0,
        candidates_per_family=1,
        budget_seconds=60,
        families=FAMILIES[:1],
        resampling="auto",
        metric="pr_auc",
    )
    assert [r.resampling for r in results] == ["none", "smote", "class_weight"]
    assert len({r.family for r in results}) == 1
    best = select_best(results, "pr_auc")
    assert best.cv_score("pr_auc") == max(r.cv_score("pr_auc") for r in results)


def test_calibrated_probabilities_match_the_churn_rate_where_smote_inflates_them(split):
    train, test = split
    label = test["Churn"].to_numpy()
    results = search_candidates(
        train,
        n_folds=3,
        seed=0,
        candidates_per_family=1,
        budget_seconds=60,
        families=FAMILIES[2:3],  # gradient boosting, the usual champion
    )
    best = select_best(results)
    assert best.resampling == "smote"
    raw_model = fit_final(train, best, seed=0)
    calibrator, _ = fit_calibrator(train, best, method="auto", n_folds=3, seed=0)
    model = fit_final(train, best, seed=0, calibrator=calibrator)
    assert isinstance(model[-1], CalibratedModel)
    raw = calibration_metrics(label, predict_probability(raw_model, test))
    calibrated = calibration_metrics(label, predict_probability(model, test))
    assert raw["mean_probability"] > raw["churn_rate"] + 0.05  # SMOTE's inflation
    assert abs(calibrated["mean_probability"] - calibrated["churn_rate"]) < 0.03
    assert calibrated["ece"] < 0.6 * raw["ece"]
    assert calibrated["brier"] < raw["brier"]


def test_expected_calibration_error_uses_ten_equal_width_bins():
    label = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1])
    probability = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55, 0.15, 0.15, 0.15, 0.15])
    # bins: [0,.1): 2 rows, gap .05; [.9,1]: 2 rows, gap .05; [.5,.6): 2 rows, predicted
    # .55, observed .5, gap .05; [.1,.2): 4 rows, predicted .15, observed .25, gap .1
    assert expected_calibration_error(label, probability) == pytest.approx(
        (2 * 0.05 + 2 * 0.05 + 2 * 0.05 + 4 * 0.1) / 10
    )
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
