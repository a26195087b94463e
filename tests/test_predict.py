"""The compiled tree kernel gives `predict_proba`'s probabilities bit for bit, and models it
cannot take are scored by `predict_proba` itself."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from components.calibration import CalibratedModel, ProbabilityCalibrator
from components.contract import TELCO_CHURN
from components.predict import CompiledTrees, compiled_trees, predict_probability, tree_kernel
from components.sample_data import generate_customers
from components.train import CandidateResult, fit_final
from components.validate import validate


def _numbers_with_gaps(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(rows, 6))
    x[:, 3] = rng.integers(0, 4, size=rows)  # few distinct values: many ties on thresholds
    label = (x[:, 0] + x[:, 1] * x[:, 3] + rng.normal(size=rows) > 0.5).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x, label


@pytest.mark.parametrize("max_leaf_nodes", [3, 15, 31])
def test_compiled_trees_equal_predict_proba_bit_for_bit(max_leaf_nodes: int):
    rng = np.random.default_rng(max_leaf_nodes)
    x, label = _numbers_with_gaps(rng, 3_000)
    estimator = HistGradientBoostingClassifier(
        max_iter=40, max_leaf_nodes=max_leaf_nodes, random_state=0
    ).fit(x, label)
    trees = compiled_trees(estimator)
    assert trees is not None
    unseen, _ = _numbers_with_gaps(rng, 1_003)  # not a multiple of the 8-row block
    for rows in (unseen, unseen[:1], np.nan_to_num(unseen, nan=0.0)):
        expected = estimator.predict_proba(rows)[:, 1]
        np.testing.assert_array_equal(trees.probability(rows), expected)
    assert trees.probability(unseen[:0]).shape == (0,)


def test_the_saved_gradient_boosting_pipeline_is_scored_by_the_kernel(customers: pd.DataFrame):
    train = validate(customers, source="fixture").clean
    best = CandidateResult("gradient_boosting", {"max_leaf_nodes": 15}, [], [], np.empty(0), 0.0)
    model = fit_final(train, best, seed=0)
    messy = validate(generate_customers(500, seed=3), source="messy", mode="serving").clean
    messy = messy.astype({"Contract": object})
    messy.loc[messy.index[:20], "Contract"] = "Five year"  # unseen category
    assert compiled_trees(model[-1]) is not None
    np.testing.assert_array_equal(
        predict_probability(model, messy),
        model.predict_proba(messy[TELCO_CHURN.feature_names])[:, 1],
    )


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_a_calibrated_gradient_boosting_pipeline_is_still_scored_by_the_kernel(
    customers: pd.DataFrame, method: str
):
    """The calibrator is a step after the kernel-scored trees: a silent fall-back to
    scikit-learn's evaluator fails here, as the estimator's own predict_proba is disabled."""
    train = validate(customers, source="fixture").clean
    rng = np.random.default_rng(0)
    oof = rng.random(len(train))  # any scores: this test is about the scoring path
    calibrator = ProbabilityCalibrator(method).fit(oof, train["Churn"].to_numpy())
    best = CandidateResult("gradient_boosting", {"max_leaf_nodes": 15}, [], [], oof, 0.0)
    model = fit_final(train, best, seed=0, calibrator=calibrator)
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    assert isinstance(model[-1], CalibratedModel)
    rows = validate(generate_customers(300, seed=4), source="t", mode="serving").clean
    expected = model.predict_proba(rows[TELCO_CHURN.feature_names])[:, 1]
    raw = model[-1].estimator.predict_proba(model[:-1].transform(rows[TELCO_CHURN.feature_names]))
    assert tree_kernel(model) is not None

    def not_the_kernel(*args, **kwargs):
        raise AssertionError("scored by scikit-learn's predict_proba, not the compiled kernel")

    model[-1].estimator.predict_proba = not_the_kernel
    np.testing.assert_array_equal(predict_probability(model, rows), expected)
    np.testing.assert_array_equal(predict_probability(model, rows, calibrated=False), raw[:, 1])
    assert not np.array_equal(expected, raw[:, 1])  # the calibrator did something


def test_models_the_kernel_cannot_take_are_scored_by_predict_proba():
    rng = np.random.default_rng(0)
    x, label = _numbers_with_gaps(rng, 600)
    three_classes = label + (x[:, 2] > 1)
    categorical = np.nan_to_num(x, nan=0.0)
    categorical[:, 3] = rng.integers(0, 5, size=len(x))
    estimators = [
        LogisticRegression().fit(np.nan_to_num(x), label),
        HistGradientBoostingClassifier(max_iter=5).fit(x, three_classes),
        HistGradientBoostingClassifier(max_iter=5, categorical_features=[3]).fit(
            categorical, label
        ),
    ]
    for estimator in estimators:
        assert compiled_trees(estimator) is None


def test_the_probe_catches_a_comparison_off_by_one_value():
    """The check run before a model is used would notice a kernel that sent values equal to
    a threshold the wrong way."""
    rng = np.random.default_rng(1)
    x, label = _numbers_with_gaps(rng, 2_000)
    estimator = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, label)
    trees = CompiledTrees.from_estimator(estimator)
    wrong = replace(trees, threshold=np.nextafter(trees.threshold, -np.inf))  # now `<` goes left
    probe = trees.probe(estimator.n_features_in_)
    expected = estimator.predict_proba(probe)[:, 1]
    np.testing.assert_array_equal(trees.probability(probe), expected)
    assert not np.array_equal(wrong.probability(probe), expected)
