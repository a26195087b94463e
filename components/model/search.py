"""Candidate search: every model family and resampling method, cross-validated on the
training split (step 4 of training, with `components.model.train`).

Honesty rules this module enforces by construction:
- it only ever sees the training split (the test set never enters this module);
- SMOTE runs inside each cross-validation fold, on that fold's training part only, after
  the preprocessor was fitted on that same part, so validation rows are never resampled;
- resampling (SMOTE, class weights or none) is chosen by CV like any other setting: every
  family is searched without resampling (the cheapest fits), then the selected setting is
  cross-validated with SMOTE and with class weights, on the same folds, and the best by
  the promotion metric wins;
- the probability calibration and the decision threshold come from out-of-fold
  predictions on the training split.
The saved model is one scikit-learn `Pipeline(preprocess, model)` with no imblearn step, so
serving applies exactly the preprocessing training used; with calibration, `model` is a
`components.model.calibration.CalibratedModel` (the estimator, then its calibrator).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from joblib import Parallel, delayed
from sklearn.base import ClassifierMixin
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.model_selection import ParameterSampler
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import has_fit_parameter
from threadpoolctl import threadpool_limits

from components.contract import TELCO_CHURN, DataContract
from components.data.split import cv_folds
from components.errors import ContractError
from components.model.features import build_preprocessor

log = logging.getLogger(__name__)

RESAMPLING = ("smote", "class_weight", "none")
# SMOTE's neighbours (imblearn's default, made explicit for `require_enough_rows`): each
# fold's training part needs one churner more than this.
SMOTE_NEIGHBOURS = 5


@dataclass(frozen=True)
class Family:
    """A model family: how to build one estimator from parameters, and what to search."""

    name: str
    build: Callable[..., ClassifierMixin]
    grid: dict[str, list[Any]]


FAMILIES: tuple[Family, ...] = (
    Family(
        "logistic_regression",
        lambda seed, **p: LogisticRegression(solver="newton-cholesky", random_state=seed, **p),
        {"C": [0.03, 0.1, 0.3, 1.0, 3.0]},
    ),
    Family(
        "random_forest",
        lambda seed, **p: RandomForestClassifier(
            n_estimators=60, max_samples=0.5, random_state=seed, **p
        ),
        {"max_depth": [8, 12], "min_samples_leaf": [5, 10, 20]},
    ),
    Family(
        "gradient_boosting",
        lambda seed, **p: HistGradientBoostingClassifier(
            max_iter=100, early_stopping=False, random_state=seed, **p
        ),
        {
            "learning_rate": [0.05, 0.1],
            "max_leaf_nodes": [7, 15, 31],
            "l2_regularization": [0.0, 1.0],
        },
    ),
    Family(
        "extra_trees",
        lambda seed, **p: ExtraTreesClassifier(
            n_estimators=60, max_samples=0.5, bootstrap=True, random_state=seed, **p
        ),
        {"max_depth": [8, 12], "min_samples_leaf": [3, 10, 20]},
    ),
    Family(
        "k_nearest_neighbors",
        lambda seed, **p: KNeighborsClassifier(**p),
        {"n_neighbors": [25, 50, 100], "weights": ["uniform", "distance"]},
    ),
)


@dataclass
class CandidateResult:
    """One family + parameter setting, scored by stratified group k-fold CV."""

    family: str
    params: dict[str, Any]
    fold_roc_auc: list[float]
    fold_f1: list[float]
    oof_probability: np.ndarray = field(repr=False)
    fit_seconds: float
    fold_pr_auc: list[float] = field(default_factory=list)
    oof_f1: float = 0.0
    """Churn-class F1 of the out-of-fold predictions at the threshold chosen on them, as
    the final model's threshold is chosen (F1 at 0.5 would penalise unresampled models)."""
    resampling: str = "smote"

    @property
    def cv_roc_auc_mean(self) -> float:
        return float(np.mean(self.fold_roc_auc))

    @property
    def cv_roc_auc_std(self) -> float:
        return float(np.std(self.fold_roc_auc))

    @property
    def cv_f1_mean(self) -> float:
        return float(np.mean(self.fold_f1))

    def cv_score(self, metric: str) -> float:
        """The CV estimate of a promotion metric (`roc_auc`, `pr_auc` or `f1`)."""
        if metric == "roc_auc":
            return self.cv_roc_auc_mean
        if metric == "pr_auc":
            return float(np.mean(self.fold_pr_auc))
        return self.oof_f1

    def summary(self) -> dict[str, Any]:
        """JSON-ready row for reports and the CLI."""
        return {
            "model": self.family,
            "params": self.params,
            "resampling": self.resampling,
            "cv_roc_auc_mean": round(self.cv_roc_auc_mean, 4),
            "cv_roc_auc_std": round(self.cv_roc_auc_std, 4),
            "cv_f1_mean": round(self.cv_f1_mean, 4),
            "fit_seconds": round(self.fit_seconds, 2),
        }


@dataclass
class _Fold:
    """One CV fold, preprocessed (and its training part resampled) once and shared by every
    candidate: `x_train`/`y_train` are the SMOTE-resampled training part, `x_plain`/
    `y_plain` the same part as it is."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    valid_index: np.ndarray
    x_plain: np.ndarray
    y_plain: np.ndarray

    def training_rows(self, resampling: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(x, y, sample weight) to fit on with this resampling."""
        if resampling == "smote":
            return self.x_train, self.y_train, None
        weight = compute_sample_weight("balanced", self.y_plain)
        return self.x_plain, self.y_plain, weight if resampling == "class_weight" else None


def require_enough_rows(
    train: pd.DataFrame,
    folds: list[tuple[np.ndarray, np.ndarray]],
    families: tuple[Family, ...],
    contract: DataContract = TELCO_CHURN,
) -> None:
    """Fail with one line when a cross-validation fold's training part is too small for
    SMOTE or for a family's largest `n_neighbors`, before anything is fitted."""
    label = train[contract.label_column].to_numpy()
    fewest = min(len(fit) for fit, _ in folds)
    fewest_by_class = min(
        min(int(label[fit].sum()), int((1 - label[fit]).sum())) for fit, _ in folds
    )
    n_folds = len(folds)
    churners, stayers = int(label.sum()), int(len(label) - label.sum())
    where = (
        f"the training split has {churners} churners and {stayers} stayers; with {n_folds}-fold "
        f"cross-validation its smallest fold trains on"
    )
    if fewest_by_class <= SMOTE_NEIGHBOURS:
        needed = -(-(SMOTE_NEIGHBOURS + 1) * n_folds // (n_folds - 1))
        raise ContractError(
            f"{where} {fewest_by_class} of one class, and SMOTE needs {SMOTE_NEIGHBOURS + 1}: "
            f"give at least {needed} of each (more rows), or lower cv_folds"
        )
    neighbours = max((max(f.grid.get("n_neighbors", [0])) for f in families), default=0)
    if fewest < neighbours:
        needed = -(-neighbours * n_folds // (n_folds - 1))
        raise ContractError(
            f"{where} {fewest} rows, and k_nearest_neighbors tries {neighbours} neighbours: "
            f"give at least {needed} training rows"
        )


def _prepare_folds(
    train: pd.DataFrame,
    n_folds: int,
    seed: int,
    contract: DataContract,
    families: tuple[Family, ...] = FAMILIES,
) -> list[_Fold]:
    features, label = train[contract.feature_names], train[contract.label_column].to_numpy()
    indices = cv_folds(train, n_folds=n_folds, seed=seed, contract=contract)
    require_enough_rows(train, indices, families, contract)
    folds = []
    for train_index, valid_index in indices:
        preprocess = build_preprocessor(contract).fit(features.iloc[train_index])
        x_plain = preprocess.transform(features.iloc[train_index])
        x_resampled, y_resampled = SMOTE(
            k_neighbors=SMOTE_NEIGHBOURS, random_state=seed
        ).fit_resample(x_plain, label[train_index])
        x_valid = preprocess.transform(features.iloc[valid_index])
        folds.append(
            _Fold(x_resampled, y_resampled, x_valid, valid_index, x_plain, label[train_index])
        )
    return folds


def resampling_choices(family: Family, resampling: str, seed: int) -> tuple[str, ...]:
    """The resampling methods to cross-validate for `family`: the one asked for, or with
    `auto` all that apply (class weights need an estimator that takes sample weights)."""
    if resampling != "auto":
        return (resampling,)
    weighted = has_fit_parameter(family.build(seed), "sample_weight")
    return tuple(r for r in RESAMPLING if r != "class_weight" or weighted)


def search_candidates(
    train: pd.DataFrame,
    *,
    n_folds: int,
    seed: int,
    candidates_per_family: int,
    budget_seconds: float,
    families: tuple[Family, ...] = FAMILIES,
    contract: DataContract = TELCO_CHURN,
    on_result: Callable[[CandidateResult, int, int], None] | None = None,
    resampling: str = "smote",
    metric: str = "roc_auc",
) -> list[CandidateResult]:
    """Score `candidates_per_family` random settings of every family by CV on `train`.

    The wall-time budget is shared fairly: a family stops trying further settings once it
    has used its share, but every family is scored with at least one setting. Settings
    are searched with `resampling`, or with `auto` without resampling, whose fits are the
    cheapest (SMOTE adds a synthetic churner per excess stayer: 1.5 times the rows); then
    the best setting by CV `metric` is cross-validated with the other resampling methods
    too (two more CV runs, not three times the search).
    """
    label = train[contract.label_column].to_numpy()
    folds = _prepare_folds(train, n_folds, seed, contract, families)
    share = budget_seconds / len(families)
    searched_with = "none" if resampling == "auto" else resampling
    total = len(families) * candidates_per_family + (len(RESAMPLING) - 1) * (resampling == "auto")
    results: list[CandidateResult] = []
    for family in families:
        family_started = time.perf_counter()
        for params in ParameterSampler(
            family.grid, n_iter=candidates_per_family, random_state=seed
        ):
            tried_one = bool(results) and results[-1].family == family.name
            if tried_one and time.perf_counter() - family_started > share:
                log.info("%s: search budget used, skipping further settings", family.name)
                break
            result = _cross_validate(family, params, folds, label, seed, searched_with)
            results.append(result)
            if on_result:
                on_result(result, len(results), total)
    if resampling == "auto":
        best = select_best(results, metric)
        family = next(f for f in families if f.name == best.family)
        for other in resampling_choices(family, "auto", seed):
            if other != best.resampling:
                result = _cross_validate(family, best.params, folds, label, seed, other)
                results.append(result)
                if on_result:
                    on_result(result, len(results), total)
    return results


def _cross_validate(
    family: Family,
    params: dict[str, Any],
    folds: list[_Fold],
    label: np.ndarray,
    seed: int,
    resampling: str = "smote",
) -> CandidateResult:
    """Fit and score one setting on every fold, folds in parallel."""
    started = time.perf_counter()
    # Threads share the folds without copying; the estimators release the GIL. Nested
    # BLAS/OpenMP threads would only oversubscribe the cores, so they are capped at one.
    with threadpool_limits(limits=1):
        fold_probabilities = Parallel(n_jobs=-1, prefer="threads")(
            delayed(_fit_and_predict)(family.build, params, fold, seed, resampling)
            for fold in folds
        )
    oof = np.full(len(label), np.nan)
    roc_aucs, pr_aucs, f1s = [], [], []
    for fold, probability in zip(folds, fold_probabilities, strict=True):
        oof[fold.valid_index] = probability
        truth = label[fold.valid_index]
        roc_aucs.append(float(roc_auc_score(truth, probability)))
        pr_aucs.append(float(average_precision_score(truth, probability)))
        f1s.append(float(f1_score(truth, probability >= 0.5)))
    oof_f1 = float(f1_score(label, oof >= choose_threshold(label, oof)))
    return CandidateResult(
        family.name,
        dict(params),
        roc_aucs,
        f1s,
        oof,
        time.perf_counter() - started,
        fold_pr_auc=pr_aucs,
        oof_f1=oof_f1,
        resampling=resampling,
    )


def _fit_and_predict(
    build: Callable[..., ClassifierMixin],
    params: dict[str, Any],
    fold: _Fold,
    seed: int,
    resampling: str,
) -> np.ndarray:
    x, y, weight = fold.training_rows(resampling)
    fit_weight = {} if weight is None else {"sample_weight": weight}
    estimator = build(seed, **params).fit(x, y, **fit_weight)
    return estimator.predict_proba(fold.x_valid)[:, 1]


def select_best(results: list[CandidateResult], metric: str = "roc_auc") -> CandidateResult:
    """Highest CV `metric`; ties go to the steadier (lower ROC-AUC std) candidate."""
    return max(results, key=lambda r: (round(r.cv_score(metric), 4), -r.cv_roc_auc_std))


def choose_threshold(label: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut-off that maximises churn-class F1 on out-of-fold predictions."""
    precision, recall, thresholds = precision_recall_curve(label, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])
