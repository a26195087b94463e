"""The split cannot leak: a customer, or a copy of a row under another id, never lands on
both sides of train/test, nor of a CV fold."""

import pandas as pd
import pytest

from components.data.split import assert_no_leak, cv_folds, split_train_test
from components.data.validate import validate
from components.errors import ContractError


def _with_copies(customers: pd.DataFrame) -> pd.DataFrame:
    """Clean rows plus 200 exact copies of existing rows under new customer ids."""
    clean = validate(customers, source="t").clean
    copies = clean.sample(200, random_state=1).assign(customerID=[f"COPY-{i}" for i in range(200)])
    return pd.concat([clean, copies], ignore_index=True)


def test_split_is_stratified_and_sized(customers):
    clean = validate(customers, source="t").clean
    train, test = split_train_test(clean, test_size=0.2, seed=1)
    assert len(train) + len(test) == len(clean)
    assert abs(len(test) / len(clean) - 0.2) < 0.01
    assert abs(train["Churn"].mean() - test["Churn"].mean()) < 0.02


def test_copied_rows_never_straddle_the_split(customers):
    frame = _with_copies(customers)
    train, test = split_train_test(frame, test_size=0.3, seed=3)
    assert_no_leak(train, test)  # would raise on a shared id or identical feature row
    features = [c for c in frame.columns if c not in ("customerID", "Churn")]
    shared = train[features].merge(test[features], how="inner")
    assert shared.empty


def test_assert_no_leak_catches_a_shared_customer(customers):
    clean = validate(customers, source="t").clean
    with pytest.raises(ContractError, match="1 customers on both sides"):
        assert_no_leak(clean.iloc[:100], clean.iloc[99:200])


def test_cv_folds_keep_copies_together(customers):
    frame = _with_copies(customers)
    for train_index, valid_index in cv_folds(frame, n_folds=5, seed=0):
        assert_no_leak(frame.iloc[train_index], frame.iloc[valid_index])
        assert 0.15 < len(valid_index) / len(frame) < 0.25


def test_split_is_seeded(customers):
    clean = validate(customers, source="t").clean
    first, _ = split_train_test(clean, test_size=0.2, seed=5)
    again, _ = split_train_test(clean, test_size=0.2, seed=5)
    other, _ = split_train_test(clean, test_size=0.2, seed=6)
    assert first["customerID"].tolist() == again["customerID"].tolist()
    assert first["customerID"].tolist() != other["customerID"].tolist()
