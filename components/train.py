"""Candidate search and the final model.

Honesty rules this module enforces by construction:
- it only ever sees the training split (the test set never enters this module);
- SMOTE runs inside each cross-validation fold, on that fold's training part only, after
  the preprocessor was fitted on that same part, so validation rows are never resampled;
- the decision threshold comes from out-of-fold predictions on the training split.
The saved model is one scikit-learn `Pipeline(preprocess, model)` with no imblearn step, so
serving applies exactly the preprocessing training used.
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
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import ParameterSampler
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from components.contract import TELCO_CHURN, DataContract
from components.features import build_preprocessor
from components.split import cv_folds
from components.stage import stage

log = logging.getLogger(__name__)


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

    @property
    def cv_roc_auc_mean(self) -> float:
        return float(np.mean(self.fold_roc_auc))

    @property
    def cv_roc_auc_std(self) -> float:
        return float(np.std(self.fold_roc_auc))

    @property
    def cv_f1_mean(self) -> float:
        return float(np.mean(self.fold_f1))

    def summary(self) -> dict[str, Any]:
        """JSON-ready row for reports and the CLI."""
        return {
            "model": self.family,
            "params": self.params,
            "cv_roc_auc_mean": round(self.cv_roc_auc_mean, 4),
            "cv_roc_auc_std": round(self.cv_roc_auc_std, 4),
            "cv_f1_mean": round(self.cv_f1_mean, 4),
            "fit_seconds": round(self.fit_seconds, 2),
        }


@dataclass
class _Fold:
    """One CV fold, preprocessed and resampled once and shared by every candidate."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    valid_index: np.ndarray


def _prepare_folds(
    train: pd.DataFrame, n_folds: int, seed: int, contract: DataContract
) -> list[_Fold]:
    features, label = train[contract.feature_names], train[contract.label_column].to_numpy()
    folds = []
    for train_index, valid_index in cv_folds(train, n_folds=n_folds, seed=seed, contract=contract):
        preprocess = build_preprocessor(contract).fit(features.iloc[train_index])
        x_resampled, y_resampled = SMOTE(random_state=seed).fit_resample(
            preprocess.transform(features.iloc[train_index]), label[train_index]
        )
        x_valid = preprocess.transform(features.iloc[valid_index])
        folds.append(_Fold(x_resampled, y_resampled, x_valid, valid_index))
    return folds


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
) -> list[CandidateResult]:
    """Score `candidates_per_family` random settings of every family by CV on `train`.

    The wall-time budget is shared fairly: a family stops trying further settings once it
    has used its share, but every family is scored with at least one setting.
    """
    label = train[contract.label_column].to_numpy()
    folds = _prepare_folds(train, n_folds, seed, contract)
    share = budget_seconds / len(families)
    total = len(families) * candidates_per_family
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
            result = _cross_validate(family, params, folds, label, seed)
            results.append(result)
            if on_result:
                on_result(result, len(results), total)
    return results


def _cross_validate(
    family: Family, params: dict[str, Any], folds: list[_Fold], label: np.ndarray, seed: int
) -> CandidateResult:
    """Fit and score one setting on every fold, folds in parallel."""
    started = time.perf_counter()
    # Threads share the folds without copying; the estimators release the GIL. Nested
    # BLAS/OpenMP threads would only oversubscribe the cores, so they are capped at one.
    with threadpool_limits(limits=1):
        fold_probabilities = Parallel(n_jobs=-1, prefer="threads")(
            delayed(_fit_and_predict)(family.build, params, fold, seed) for fold in folds
        )
    oof = np.full(len(label), np.nan)
    roc_aucs, f1s = [], []
    for fold, probability in zip(folds, fold_probabilities, strict=True):
        oof[fold.valid_index] = probability
        truth = label[fold.valid_index]
        roc_aucs.append(float(roc_auc_score(truth, probability)))
        f1s.append(float(f1_score(truth, probability >= 0.5)))
    return CandidateResult(
        family.name, dict(params), roc_aucs, f1s, oof, time.perf_counter() - started
    )


def _fit_and_predict(
    build: Callable[..., ClassifierMixin], params: dict[str, Any], fold: _Fold, seed: int
) -> np.ndarray:
    estimator = build(seed, **params).fit(fold.x_train, fold.y_train)
    return estimator.predict_proba(fold.x_valid)[:, 1]


def select_best(results: list[CandidateResult]) -> CandidateResult:
    """Highest mean CV ROC-AUC; ties go to the steadier (lower std) candidate."""
    return max(results, key=lambda r: (round(r.cv_roc_auc_mean, 4), -r.cv_roc_auc_std))


def choose_threshold(label: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut-off that maximises churn-class F1 on out-of-fold predictions."""
    precision, recall, thresholds = precision_recall_curve(label, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def fit_final(
    train: pd.DataFrame,
    best: CandidateResult,
    *,
    seed: int,
    families: tuple[Family, ...] = FAMILIES,
    contract: DataContract = TELCO_CHURN,
) -> Pipeline:
    """Refit the chosen candidate on the whole training split (SMOTE on it only) and return
    the servable `Pipeline(preprocess, model)`."""
    family = next(f for f in families if f.name == best.family)
    features, label = train[contract.feature_names], train[contract.label_column].to_numpy()
    preprocess = build_preprocessor(contract).fit(features)
    x_resampled, y_resampled = SMOTE(random_state=seed).fit_resample(
        preprocess.transform(features), label
    )
    # One thread: OpenMP's gain on two cores is small and turns into a loss many times over
    # when the machine is busy (measured: 16 s instead of 2 s for gradient boosting).
    with threadpool_limits(limits=1):
        estimator: BaseEstimator = family.build(seed, **best.params).fit(x_resampled, y_resampled)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


@stage
def train_candidates(
    train: Input[Dataset],
    cv_folds: int,
    seed: int,
    candidates_per_family: int,
    search_budget_seconds: float,
    model: Output[Model],
    candidates: Output[Artifact],
    cv_metrics: Output[Metrics],
) -> None:
    """Cross-validate every candidate family, pick the best, refit it on the whole
    training split, and choose its threshold from out-of-fold predictions."""
    import json
    import logging
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.registry import save_model
    from components.train import choose_threshold, fit_final, search_candidates, select_best

    logging.basicConfig(level=logging.INFO)
    log = logging.getLogger("train")
    frame = pd.read_parquet(train.path)

    def report(result, done: int, total: int) -> None:
        log.info(
            "[%d/%d] %s %s: CV ROC-AUC %.4f ± %.4f (%.1fs)",
            done, total, result.family, result.params,
            result.cv_roc_auc_mean, result.cv_roc_auc_std, result.fit_seconds,
        )  # fmt: skip

    results = search_candidates(
        frame,
        n_folds=cv_folds,
        seed=seed,
        candidates_per_family=candidates_per_family,
        budget_seconds=search_budget_seconds,
        on_result=report,
    )
    best = select_best(results)
    threshold = choose_threshold(frame[TELCO_CHURN.label_column].to_numpy(), best.oof_probability)
    save_model(fit_final(frame, best, seed=seed), Path(model.path))
    model.metadata.update(
        {
            "best_model": best.family,
            "params": best.params,
            "threshold": threshold,
            "framework": "scikit-learn",
        }
    )
    rows = [{**r.summary(), "selected": r is best} for r in results]
    Path(candidates.path).write_text(json.dumps(rows, indent=2))
    for family in dict.fromkeys(r.family for r in results):
        cv_metrics.log_metric(
            f"cv_roc_auc_{family}", max(r.cv_roc_auc_mean for r in results if r.family == family)
        )
    cv_metrics.log_metric("cv_roc_auc_selected", best.cv_roc_auc_mean)
    cv_metrics.log_metric("threshold", threshold)
