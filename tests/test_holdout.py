"""The persistent holdout: every weekly version is tested on the same customers, none of
whom any version trained on, and the registry keeps which holdout that was."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.split import assert_no_leak, in_holdout, split_holdout
from components.data.validate import validate
from components.errors import ContractError
from components.model.evaluate import compare_with_champion
from components.model.features import build_preprocessor
from components.model.lineage import load_training_customers
from components.model.register import register_and_promote
from components.registry import LocalRegistry, save_model

HOLDOUT = {"salt": "week-test", "share": 0.2}


def _fit(train: pd.DataFrame) -> Pipeline:
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    return model.fit(train[TELCO_CHURN.feature_names], train[TELCO_CHURN.label_column])


def _weeks(customers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two weekly tables: week 2 lost 300 of week 1's customers and gained 500 new ones."""
    clean = validate(customers, source="t").clean
    return clean.iloc[:1_500], clean.iloc[300:2_000]


def _register(registry: LocalRegistry, model: Pipeline, train, test, tmp_path: Path, holdout):
    label = test[TELCO_CHURN.label_column].to_numpy()
    probability = model.predict_proba(test[TELCO_CHURN.feature_names])[:, 1]
    from components.model.evaluate import metric_value

    return register_and_promote(
        registry_uri=str(registry.root),
        model_file=save_model(model, tmp_path / f"fitted-{len(registry.versions())}"),
        model_info={"best_model": "logistic_regression", "threshold": 0.4},
        evaluation={
            "metrics": {"roc_auc": metric_value("roc_auc", label, probability, 0.4)},
            "champion_version": None,
            "holdout": holdout,
        },
        data_fingerprint="t",
        run_id="week",
        metric="roc_auc",
        margin=0.002,
        floor=0.5,
        training_customers=train[TELCO_CHURN.id_column],
    )


def _compare(registry: LocalRegistry, model: Pipeline, test: pd.DataFrame, holdout) -> dict:
    champion = registry.champion()
    champion_model, _ = registry.load_model(champion.version)
    features, label = test[TELCO_CHURN.feature_names], test[TELCO_CHURN.label_column].to_numpy()
    return compare_with_champion(
        metric="roc_auc",
        label=label,
        customer_ids=test[TELCO_CHURN.id_column].to_numpy(),
        probability=model.predict_proba(features)[:, 1],
        threshold=0.4,
        champion_probability=champion_model.predict_proba(features)[:, 1],
        champion_threshold=champion.threshold,
        champion_training_customers=load_training_customers(
            registry.model_path(champion.version).parent
        ),
        samples=100,
        seed=0,
        holdout=holdout,
        champion_holdout=champion.holdout,
    )


def test_two_weekly_retrains_compare_on_the_whole_persistent_holdout(customers, tmp_path):
    week1, week2 = _weeks(customers)
    registry = LocalRegistry(tmp_path / "registry")
    train1, test1 = split_holdout(week1, **HOLDOUT)
    first = _register(registry, _fit(train1), train1, test1, tmp_path, HOLDOUT)
    assert registry.get(first.version).holdout == HOLDOUT  # the registry keeps it

    train2, test2 = split_holdout(week2, **HOLDOUT)
    # The customers of both weeks are on the same side both weeks.
    both = set(week1["customerID"]) & set(week2["customerID"])
    assert set(test1["customerID"]) & both == set(test2["customerID"]) & both
    comparison = _compare(registry, _fit(train2), test2, HOLDOUT)
    assert comparison["rows"] == comparison["test_rows"] == len(test2)
    assert comparison["champion_trained_on"] == 0 and comparison["unseen_only"]
    assert comparison["note"].startswith(
        f"persistent holdout (salt 'week-test', share 20%), on all {len(test2):,} test "
        "customers, none of whom the champion trained on"
    )

    # A new holdout (as a random split each week was) puts most of the returning customers
    # it holds among the champion's training customers: only the rest can be compared.
    rotated = {"salt": "week-rotated", "share": 0.2}
    train3, test3 = split_holdout(week2, **rotated)
    changed = _compare(registry, _fit(train3), test3, rotated)
    assert changed["note"].startswith(
        "the persistent holdout changed since the champion (salt 'week-test', share 20% -> "
        "salt 'week-rotated', share 20%): on the "
    )
    assert changed["champion_trained_on"] > 0.5 * len(test3)
    assert changed["rows"] == len(test3) - changed["champion_trained_on"]


def test_the_holdout_is_the_salted_share_and_a_copy_pulls_its_group_into_it(customers):
    clean = validate(customers, source="t").clean
    ids = clean["customerID"].to_numpy()
    held = in_holdout(ids, salt="a", share=0.2)
    assert 0.17 < held.mean() < 0.23
    assert (in_holdout(ids, salt="a", share=0.2) == held).all()  # persistent
    assert 0.6 < (in_holdout(ids, salt="b", share=0.2) == held).mean() < 0.8  # rotated
    # A copy of a training customer under a fresh id that hashes into the holdout.
    original = clean[~held].iloc[[0]]
    fresh = next(f"COPY-{i}" for i in range(1000) if in_holdout([f"COPY-{i}"], salt="a", share=0.2))
    frame = pd.concat([clean, original.assign(customerID=fresh)], ignore_index=True)
    train, test = split_holdout(frame, salt="a", share=0.2)
    assert_no_leak(train, test)
    assert {original["customerID"].iloc[0], fresh} <= set(test["customerID"])
    assert set(ids[held]) <= set(test["customerID"])  # no held-out customer ever trains


def test_a_holdout_too_small_for_both_classes_is_refused_in_one_line(customers):
    clean = validate(customers, source="t").clean.iloc[:12]
    with pytest.raises(ContractError, match="give more rows, or change holdout_share"):
        split_holdout(clean, salt="a", share=0.05)


def test_the_salt_decides_not_the_order_of_rows(customers):
    clean = validate(customers, source="t").clean
    _, test = split_holdout(clean, **HOLDOUT)
    _, shuffled = split_holdout(clean.sample(frac=1, random_state=3), **HOLDOUT)
    assert sorted(test["customerID"]) == sorted(shuffled["customerID"])
    assert np.isclose(len(test) / len(clean), 0.2, atol=0.03)
