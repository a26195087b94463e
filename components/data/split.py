"""Train/test split that cannot leak.

Rows are grouped so that everything that could let a model "remember" a test row lands on
the same side: one customer is one group, and rows with identical features (copies under
new ids) share a group too. Groups, not rows, are split.

The test set is a persistent holdout (`split_holdout`): a customer is in it when a salted
hash of their id falls below the holdout share, so every weekly version is tested on the
same customers and none of them trains any version while the salt and share stay the same.
A leakage group goes to the test side when any of its members' hash does: a copy under a
fresh id can pull its original into the test set (a customer an earlier version may have
trained on, which the champion comparison leaves out), but a held-out customer is never
pulled into training. Without a salt, groups are split at random, stratified by label and
seeded (`split_train_test`).
"""

import hashlib
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


def in_holdout(ids: np.ndarray, *, salt: str, share: float) -> np.ndarray:
    """True for each customer id in the persistent holdout: the first 8 bytes of
    SHA-256(salt, NUL, id as text), read as a fraction of 2**64, fall below `share`.
    SHA-256 rather than pandas' hashing: the choice must not change with a library."""
    prefix = salt.encode() + b"\0"
    cut = int(share * 2**64)
    return np.fromiter(
        (
            int.from_bytes(hashlib.sha256(prefix + str(i).encode()).digest()[:8], "big") < cut
            for i in ids
        ),
        dtype=bool,
        count=len(ids),
    )


def split_holdout(
    frame: pd.DataFrame, *, salt: str, share: float, contract: DataContract = TELCO_CHURN
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) with the persistent holdout as the test set: the leakage groups with
    any member `in_holdout`."""
    groups = leakage_groups(frame, contract)
    held = in_holdout(frame[contract.id_column].to_numpy(), salt=salt, share=share)
    in_test = np.isin(groups, np.unique(groups[held]))
    label = frame[contract.label_column].to_numpy()
    for side, rows in (("test", in_test), ("training", ~in_test)):
        churners = int(label[rows].sum())
        stayers = int(rows.sum()) - churners
        if min(churners, stayers) < 2:
            raise ContractError(
                f"the persistent holdout (holdout_share {share:.0%}) leaves {churners} "
                f"churners and {stayers} stayers in the {side} set; each side needs at least "
                "2 of each: give more rows, or change holdout_share"
            )
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
    holdout_salt: str = "",
    holdout_share: float = 0.2,
) -> None:
    """Hold out an untouched, leak-free test set: the persistent holdout of `holdout_salt`
    and `holdout_share`, or without a salt a random `test_size` share. The test set's
    metadata says which (`holdout`), for the champion comparison and the registry."""
    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.data.split import split_holdout, split_train_test

    frame = pd.read_parquet(clean.path)
    if holdout_salt:
        train_frame, test_frame = split_holdout(frame, salt=holdout_salt, share=holdout_share)
        holdout = {"salt": holdout_salt, "share": holdout_share}
    else:
        train_frame, test_frame = split_train_test(frame, test_size=test_size, seed=seed)
        holdout = {}
    train_frame.to_parquet(train.path, index=False)
    test_frame.to_parquet(test.path, index=False)
    for artifact, frame in ((train, train_frame), (test, test_frame)):
        artifact.metadata.update(
            {
                "rows": len(frame),
                "churn_rate": float(frame[TELCO_CHURN.label_column].mean()),
                "holdout": holdout,
            }
        )
