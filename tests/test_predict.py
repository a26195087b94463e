"""The compiled tree kernel gives `predict_proba`'s probabilities bit for bit, and models it
cannot take are scored by `predict_proba` itself."""

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.calibration import CalibratedModel, ProbabilityCalibrator
from components.model.features import SMALL_FRAME_ROWS, SmallFramePreprocessor, build_preprocessor
from components.model.predict import (
    CompiledTrees,
    compiled_trees,
    predict_probability,
    probe_frame,
    small_frame_path,
    tree_kernel,
)
from components.model.search import FAMILIES, CandidateResult
from components.model.train import fit_final


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


def _serving_rows(rows: int, seed: int) -> pd.DataFrame:
    """Serving-mode validated rows with missing numbers and categories, unseen categories,
    and one object column (as concatenated chunks have)."""
    clean = validate(generate_customers(rows, seed=seed), source="messy", mode="serving").clean
    clean = clean.astype({"Contract": object})
    clean.loc[clean.index[::5], "Contract"] = "Five year"
    clean.loc[clean.index[::7], "tenure"] = np.nan
    clean["PaymentMethod"] = clean["PaymentMethod"].cat.add_categories("Cheque")
    clean.loc[clean.index[::3], "PaymentMethod"] = "Cheque"
    clean.loc[clean.index[1::4], "OnlineBackup"] = np.nan
    return clean


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_few_row_frames_take_the_fast_path_with_the_pipelines_scores(
    customers: pd.DataFrame, family: str
):
    """Serving's few-row path is taken for every family's saved pipeline, and gives
    `predict_proba`'s probabilities bit for bit."""
    train = validate(customers, source="fixture").clean
    model = fit_final(train, CandidateResult(family, {}, [], [], np.empty(0), 0.0), seed=0)
    path = small_frame_path(model)
    assert path is not None
    rows = _serving_rows(300, seed=4)
    for start in range(0, 300, SMALL_FRAME_ROWS // 4):
        frame = rows.iloc[start : start + SMALL_FRAME_ROWS // 8 + 1]
        expected = model.predict_proba(frame[TELCO_CHURN.feature_names])[:, 1]
        np.testing.assert_array_equal(path.probability(frame), expected)
        np.testing.assert_array_equal(predict_probability(model, frame), expected)


def test_a_calibrated_model_after_the_preprocessor_takes_the_fast_path(customers: pd.DataFrame):
    train = validate(customers, source="fixture").clean
    model = Pipeline(
        [
            ("preprocess", build_preprocessor()),
            ("model", CalibratedClassifierCV(LogisticRegression(max_iter=500), cv=3)),
        ]
    ).fit(train[TELCO_CHURN.feature_names], train[TELCO_CHURN.label_column].astype(int))
    assert small_frame_path(model) is not None
    frame = _serving_rows(40, seed=5)
    np.testing.assert_array_equal(
        predict_probability(model, frame),
        model.predict_proba(frame[TELCO_CHURN.feature_names])[:, 1],
    )


def test_the_probe_catches_a_few_row_preprocessor_off_by_one_ulp(customers: pd.DataFrame):
    """The check run when a model is loaded would notice a preprocessor a rounding step
    away from scikit-learn's, a wrong fill value, or a category or missing value in the
    wrong column."""
    train = validate(customers, source="fixture").clean
    step = build_preprocessor().fit(train[TELCO_CHURN.feature_names])
    fast = SmallFramePreprocessor.from_fitted(step)
    probe = probe_frame(step)
    np.testing.assert_array_equal(fast.transform(probe), step.transform(probe))
    shifted = [dict(zip(p, reversed(list(p.values())), strict=True)) for p in fast.positions]
    wrong = [
        replace(fast, scale=np.nextafter(fast.scale, np.inf)),
        replace(fast, statistics=fast.statistics + 1),
        replace(fast, positions=shifted),
        replace(fast, missing=[min(p.values()) for p in fast.positions]),  # NaN as a category
    ]
    for preprocessor in wrong:
        assert not np.array_equal(preprocessor.transform(probe), step.transform(probe))


def test_pipelines_of_another_shape_are_scored_whole(
    customers: pd.DataFrame, caplog: pytest.LogCaptureFixture
):
    train = validate(customers, source="fixture").clean
    features, label = train[TELCO_CHURN.feature_names], train[TELCO_CHURN.label_column]
    numeric = [c.name for c in TELCO_CHURN.numeric]
    categorical = [c.name for c in TELCO_CHURN.categorical]
    other = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric),  # no imputer
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = Pipeline([("preprocess", other), ("model", LogisticRegression())])
    model.fit(features.dropna(), label[features.notna().all(axis=1)].astype(int))
    with caplog.at_level(logging.INFO, logger="components.model.predict"):
        assert small_frame_path(model) is None
    assert "scored by the whole pipeline" in caplog.text
    frame = validate(generate_customers(20, seed=6, messy=False), source="x", mode="serving").clean
    frame = frame.dropna()
    np.testing.assert_array_equal(
        predict_probability(model, frame),
        model.predict_proba(frame[TELCO_CHURN.feature_names])[:, 1],
    )
