"""Candidate search honesty: SMOTE inside training folds only, threshold from out-of-fold
predictions, a plain scikit-learn model at the end, and no leak through copied rows."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.split import split_train_test
from components.data.validate import validate
from components.model.features import build_preprocessor
from components.model.search import (
    FAMILIES,
    Family,
    _prepare_folds,
    choose_threshold,
    search_candidates,
    select_best,
)
from components.model.train import fit_final


@pytest.fixture(scope="module")
def train_frame(customers) -> pd.DataFrame:
    return validate(customers, source="t").clean


def test_at_least_five_families_each_cross_validated(train_frame):
    results = search_candidates(
        train_frame, n_folds=3, seed=0, candidates_per_family=1, budget_seconds=600
    )
    assert len({r.family for r in results}) == len(FAMILIES) >= 5
    for result in results:
        assert len(result.fold_roc_auc) == 3
        assert not np.isnan(result.oof_probability).any()
        assert 0.6 < result.cv_roc_auc_mean < 0.95
    assert select_best(results).cv_roc_auc_mean == max(r.cv_roc_auc_mean for r in results)


def test_smote_resamples_training_folds_only(train_frame):
    label = train_frame["Churn"].to_numpy()
    for fold in _prepare_folds(train_frame, 3, 0, TELCO_CHURN):
        assert len(fold.x_valid) == len(fold.valid_index)  # validation rows untouched
        assert fold.y_train.mean() == 0.5  # training part balanced by SMOTE
        assert len(fold.y_train) > len(train_frame) - len(fold.valid_index)
        assert label[fold.valid_index].mean() < 0.4  # validation keeps the real churn rate


def test_threshold_maximises_f1_of_the_given_predictions():
    label = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    probability = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.65, 0.7, 0.9])
    assert choose_threshold(label, probability) == 0.35


def test_final_model_is_one_plain_sklearn_pipeline(train_frame):
    results = search_candidates(
        train_frame,
        n_folds=3,
        seed=0,
        candidates_per_family=1,
        budget_seconds=60,
        families=FAMILIES[:1],
    )
    model = fit_final(train_frame, results[0], seed=0)
    assert isinstance(model, Pipeline)
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    assert all(not type(step).__module__.startswith("imblearn") for _, step in model.steps)
    unseen = train_frame.head(3).assign(PaymentMethod="Crypto", tenure=np.nan)
    assert model.predict_proba(unseen[TELCO_CHURN.feature_names]).shape == (3, 2)


def test_copied_customers_cannot_inflate_the_test_score(customers):
    """Every row copied under a new id: a naive row split scores a memorising forest on rows
    it trained on; our grouped split does not."""
    clean = validate(customers, source="t").clean
    copies = clean.assign(customerID=clean["customerID"] + "-copy")
    doubled = pd.concat([clean, copies], ignore_index=True)
    memoriser = Family(
        "memoriser",
        lambda seed, **p: RandomForestClassifier(n_estimators=50, random_state=seed),
        {},
    )

    def test_auc(train: pd.DataFrame, test: pd.DataFrame) -> float:
        model = Pipeline([("p", build_preprocessor()), ("m", memoriser.build(0))])
        model.fit(train[TELCO_CHURN.feature_names], train["Churn"])
        probability = model.predict_proba(test[TELCO_CHURN.feature_names])[:, 1]
        return roc_auc_score(test["Churn"], probability)

    naive = test_auc(*train_test_split(doubled, test_size=0.2, random_state=0))
    grouped = test_auc(*split_train_test(doubled, test_size=0.2, seed=0))
    honest = test_auc(*split_train_test(clean, test_size=0.2, seed=0))
    assert naive > 0.95  # the leak this project exists to prevent
    assert abs(grouped - honest) < 0.05 and grouped < 0.9
