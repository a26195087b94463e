"""Train/test split that cannot leak.

Rows are grouped so that everything that could let a model "remember" a test row lands on
the same side: one customer is one group, and rows with identical features (copies under
new ids) share a group too. Groups, not rows, are split, stratified by label and seeded.
"""

import math

import numpy as np
import pandas as pd
from kfp.dsl import Dataset, Input, Output
from sklearn.model_selection import StratifiedKFold, train_test_split

from components.contract import TELCO_CHURN, DataContract
from components.errors import ContractError
from components.stage import stage


def leakage_groups(frame: pd.DataFrame, contract: DataContract = TELCO_CHURN) -> np.ndarray:
    """Group number per row: rows sharing a customer id or an identical feature vector
    get one group (union of the two relations)."""
    by_id = pd.factorize(frame[contract.id_column])[0]
    by_features = pd.util.hash_pandas_object(frame[contract.feature_names], index=False)
    by_features = pd.factorize(by_features)[0]
    # Union-find over the two partitions; tiny in practice (duplicates are rare).
    parent = np.arange(len(frame))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in (by_id, by_features):
        first: dict[int, int] = {}
        for row in np.flatnonzero(pd.Series(keys).duplicated(keep=False).to_numpy()):
            key = keys[row]
            if key in first:
                parent[find(row)] = find(first[key])
            else:
                first[key] = row
    return pd.factorize(np.array([find(i) for i in range(len(frame))]))[0]


def split_train_test(
    frame: pd.DataFrame, *, test_size: float, seed: int, contract: DataContract = TELCO_CHURN
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded split of whole leakage groups into (train, test)."""
    groups = leakage_groups(frame, contract)
    label = frame[contract.label_column].to_numpy()
    group_label = pd.Series(label).groupby(groups).max()
    churners, stayers = group_label.value_counts().reindex([1, 0], fill_value=0).tolist()
    # A stratified split puts at least one of each class on each side.
    needed = max(4, math.ceil(2 / test_size), math.ceil(2 / (1 - test_size)))
    if min(churners, stayers) < 2 or churners + stayers < needed:
        raise ContractError(
            f"{churners} churners and {stayers} stayers (counting copies once) are too few to "
            f"split into training and test sets ({test_size:.0%} test): give at least "
            f"{needed} customers, 2 of each (more rows)"
        )
    _, test_groups = train_test_split(
        group_label.index.to_numpy(),
        test_size=test_size,
        random_state=seed,
        stratify=group_label.to_numpy(),
    )
    in_test = np.isin(groups, test_groups)
    train, test = frame[~in_test].reset_index(drop=True), frame[in_test].reset_index(drop=True)
    assert_no_leak(train, test, contract)
    return train, test


def assert_no_leak(
    train: pd.DataFrame, test: pd.DataFrame, contract: DataContract = TELCO_CHURN
) -> None:
    """Fail loudly if a customer or an identical feature row is on both sides."""
    shared_ids = set(train[contract.id_column]) & set(test[contract.id_column])
    if shared_ids:
        raise ContractError(f"leak: {len(shared_ids)} customers on both sides of the split")
    hashes = [
        set(pd.util.hash_pandas_object(side[contract.feature_names], index=False))
        for side in (train, test)
    ]
    if hashes[0] & hashes[1]:
        raise ContractError(
            f"leak: {len(hashes[0] & hashes[1])} identical feature rows on both sides"
        )


def cv_folds(
    frame: pd.DataFrame, *, n_folds: int, seed: int, contract: DataContract = TELCO_CHURN
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold row indices over the training split, grouped as the split
    is. Folds are drawn over groups (stratified by each group's label), which keeps
    groups whole and is far faster than sklearn's StratifiedGroupKFold's per-group loop."""
    groups = leakage_groups(frame, contract)
    group_label = pd.Series(frame[contract.label_column].to_numpy()).groupby(groups).max()
    fewest = int(group_label.value_counts().reindex([0, 1], fill_value=0).min())
    if fewest < n_folds:
        counts = group_label.value_counts().reindex([1, 0], fill_value=0).tolist()
        raise ContractError(
            f"the training split has {counts[0]} churners and {counts[1]} stayers (counting "
            f"copies once): {n_folds}-fold cross-validation needs at least {n_folds} of each; "
            "give more rows, or lower cv_folds"
        )
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for _, valid_groups in splitter.split(group_label.index, group_label.to_numpy()):
        in_valid = np.isin(groups, group_label.index[valid_groups])
        folds.append((np.flatnonzero(~in_valid), np.flatnonzero(in_valid)))
    return folds


@stage
def split_data(
    clean: Input[Dataset],
    test_size: float,
    seed: int,
    train: Output[Dataset],
    test: Output[Dataset],
) -> None:
    """Hold out an untouched, leak-free test set."""
    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.data.split import split_train_test

    train_frame, test_frame = split_train_test(
        pd.read_parquet(clean.path), test_size=test_size, seed=seed
    )
    train_frame.to_parquet(train.path, index=False)
    test_frame.to_parquet(test.path, index=False)
    for artifact, frame in ((train, train_frame), (test, test_frame)):
        artifact.metadata.update(
            {"rows": len(frame), "churn_rate": float(frame[TELCO_CHURN.label_column].mean())}
        )
