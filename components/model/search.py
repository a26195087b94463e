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
The search honours its time budget at any size: a short probe (the first setting of every
family, cross-validated on a small sample of each fold) tells what one setting would take
on the whole training split, and a family whose setting would overrun its share of the
budget is cross-validated on a subsample of each fold's training part instead (validation
rows stay whole), or skipped when that subsample would be too small to judge it; the
reason is logged and recorded. SMOTE is prepared only for the folds and rows it is used on.
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
# The search's probe cross-validates each family on this many training rows per fold.
PROBE_ROWS = 3_000
# A family that cannot be cross-validated on this many training rows per fold within its
# share of the budget is skipped rather than judged on too few.
MIN_SEARCH_ROWS = 2_000


@dataclass(frozen=True)
class Family:
    """A model family: how to build one estimator from parameters, and what to search."""

    name: str
    build: Callable[..., ClassifierMixin]
    grid: dict[str, list[Any]]
    validation_cost: bool = False
    """Whether scoring a validation row costs in proportion to the training rows (k-nearest
    neighbours compares it with every one): then a setting's time grows with the training
    rows times the validation rows, not with the training rows alone."""


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
        validation_cost=True,
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
    train_rows: int | None = None
    """Training rows per fold when the budget made the search subsample them (None: all)."""
    train_share: float = 1.0
    """... as a share of each fold's training part: the least share of the training split
    the final model is fitted on (`components.model.train.final_rows`)."""
    note: str = ""
    """Why the setting was cross-validated on a subsample, if it was."""
    timing: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """(seconds fitting, seconds predicting, summed over folds; wall seconds of the folds
    side by side): what the search's budget extrapolates from."""

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
        } | ({"train_rows": self.train_rows, "note": self.note} if self.train_rows else {})


@dataclass
class _Fold:
    """One CV fold, preprocessed once and shared by every candidate: `x_plain`/`y_plain` the
    training part, `x_valid` the validation part. SMOTE resamples the training part (or a
    subsample of it) the first time a candidate asks for it, and keeps the result."""

    x_plain: np.ndarray
    y_plain: np.ndarray
    x_valid: np.ndarray
    valid_index: np.ndarray
    seed: int = 0
    number: int = 0
    _smoted: dict[int | None, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    def subsample(self, rows: int | None) -> np.ndarray | None:
        """Indices of a seeded random `rows` of the training part (None: all of it)."""
        if rows is None or rows >= len(self.y_plain):
            return None
        rng = np.random.default_rng([self.seed, self.number, rows])
        return np.sort(rng.choice(len(self.y_plain), size=rows, replace=False))

    def training_rows(
        self, resampling: str, rows: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(x, y, sample weight) to fit on with this resampling, on `rows` training rows."""
        chosen = self.subsample(rows)
        key = None if chosen is None else len(chosen)
        x = self.x_plain if chosen is None else self.x_plain[chosen]
        y = self.y_plain if chosen is None else self.y_plain[chosen]
        if resampling == "smote":
            if key not in self._smoted:
                smote = SMOTE(k_neighbors=SMOTE_NEIGHBOURS, random_state=self.seed)
                self._smoted[key] = smote.fit_resample(x, y)
            return *self._smoted[key], None
        weight = compute_sample_weight("balanced", y)
        return x, y, weight if resampling == "class_weight" else None

    @property
    def x_train(self) -> np.ndarray:
        """The SMOTE-resampled training part."""
        return self.training_rows("smote")[0]

    @property
    def y_train(self) -> np.ndarray:
        return self.training_rows("smote")[1]


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
    for number, (train_index, valid_index) in enumerate(indices):
        preprocess = build_preprocessor(contract).fit(features.iloc[train_index])
        x_plain = preprocess.transform(features.iloc[train_index])
        x_valid = preprocess.transform(features.iloc[valid_index])
        folds.append(_Fold(x_plain, label[train_index], x_valid, valid_index, seed, number))
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
    on_skip: Callable[[str, str], None] | None = None,
) -> list[CandidateResult]:
    """Score up to `candidates_per_family` random settings of every family by CV on `train`
    within `budget_seconds` of wall time (from when the folds are prepared).

    The budget is shared fairly: each family gets the time left divided by the families
    left. A probe (the family's first setting cross-validated on `PROBE_ROWS` training rows
    per fold) tells what a setting would take on all of them; when that would overrun the
    family's share, the family is cross-validated on the largest subsample of each fold's
    training part that fits (validation rows stay whole), or skipped below
    `MIN_SEARCH_ROWS` (`on_skip(what, why)` hears it, as the log does). Further settings are
    tried while the last one's time still fits the share. Settings are searched with
    `resampling`, or with `auto` without resampling, whose fits are the cheapest (SMOTE adds
    a synthetic churner per excess stayer: 1.5 times the rows); then the best setting by CV
    `metric` is cross-validated with the other resampling methods too, each if its
    estimated time fits what is left of the budget.
    """
    label = train[contract.label_column].to_numpy()
    folds = _prepare_folds(train, n_folds, seed, contract, families)
    # The budget is the candidates': preparing the folds (grouping, preprocessing) grows
    # with the rows alone and comes first, whatever the budget (tens of seconds at 1M rows).
    started = time.perf_counter()
    fold_rows = min(len(f.y_plain) for f in folds)
    searched_with = "none" if resampling == "auto" else resampling
    total = len(families) * candidates_per_family + (len(RESAMPLING) - 1) * (resampling == "auto")
    results: list[CandidateResult] = []
    fallback: list[CandidateResult] = []

    def skip(what: str, why: str) -> None:
        log.info("%s: skipped: %s", what, why)
        if on_skip:
            on_skip(what, why)

    def record(result: CandidateResult) -> None:
        results.append(result)
        if on_result:
            on_result(result, len(results), total)

    for position, family in enumerate(families):
        family_started = time.perf_counter()
        share = (budget_seconds - (family_started - started)) / (len(families) - position)
        settings = list(
            ParameterSampler(family.grid, n_iter=candidates_per_family, random_state=seed)
        )
        probe_rows = min(PROBE_ROWS, fold_rows)
        probe = _cross_validate(
            family, settings[0], folds, label, seed, searched_with, _limit(probe_rows, fold_rows)
        )
        rows = _rows_within(family, probe, probe_rows, fold_rows, share)
        if rows < min(MIN_SEARCH_ROWS, fold_rows):
            estimated = _seconds_for(family, probe, probe_rows, fold_rows)
            fallback.append(_subsampled(probe, probe_rows, fold_rows, share, estimated))
            skip(
                family.name,
                f"one setting would take about "
                f"{estimated:.0f} s on "
                f"{fold_rows:,} training rows per fold, and even {MIN_SEARCH_ROWS:,} rows would "
                f"overrun its {max(share, 0):.0f} s share of the search budget",
            )
            continue
        estimated = _seconds_for(family, probe, probe_rows, fold_rows)
        last = 0.0
        for number, params in enumerate(settings):
            spent = time.perf_counter() - family_started
            if number and spent + last > share:
                log.info("%s: search budget used, skipping further settings", family.name)
                break
            if number == 0 and rows == probe_rows:
                result = probe  # the probe was the whole search on these rows
            else:
                result = _cross_validate(
                    family, params, folds, label, seed, searched_with, _limit(rows, fold_rows)
                )
            if rows < fold_rows:
                result = _subsampled(result, rows, fold_rows, share, estimated)
                if number == 0:
                    log.info("%s: %s", family.name, result.note)
            last = result.fit_seconds
            record(result)
    if not results:  # every family skipped: judge them on their probes all the same
        for result in fallback:
            record(result)
    if resampling == "auto":
        best = select_best(results, metric)
        family = next(f for f in families if f.name == best.family)
        for other in resampling_choices(family, "auto", seed):
            if other == best.resampling:
                continue
            # SMOTE fits 1.5 times the rows, after resampling them.
            expected = best.fit_seconds * (2.0 if other == "smote" else 1.0)
            left = budget_seconds - (time.perf_counter() - started)
            if expected > left:
                skip(
                    f"{family.name} with {other}",
                    f"it would take about {expected:.0f} s and {max(left, 0):.0f} s of the "
                    "search budget are left",
                )
                continue
            result = _cross_validate(
                family, best.params, folds, label, seed, other, best.train_rows
            )
            if best.train_rows:
                result.train_rows, result.train_share = best.train_rows, best.train_share
                result.note = best.note
            record(result)
    return results


def _limit(rows: int, fold_rows: int) -> int | None:
    """`rows` as `_cross_validate` takes it: None when it is every training row (folds
    differ by a few rows; the smallest's count must not trim the others)."""
    return None if rows >= fold_rows else rows


def _seconds_for(family: Family, probe: CandidateResult, probe_rows: int, rows: int) -> float:
    """A setting's estimated CV time on `rows` training rows per fold, from the probe's
    (`probe_rows` per fold): fitting grows a little faster than the rows (tree building
    sorts); predicting the validation part stays as it was, or, where scoring compares
    every validation row with every training row, grows with the rows; the rest (metrics
    over the out-of-fold predictions) stays. The folds' side-by-side speed-up is the
    probe's."""
    fitting, predicting, side_by_side = probe.timing
    scale = rows / probe_rows
    work = fitting * scale**1.1 + predicting * (scale if family.validation_cost else 1.0)
    speed_up = side_by_side / max(fitting + predicting, 1e-9)
    return (probe.fit_seconds - side_by_side) + work * speed_up


def _rows_within(
    family: Family, probe: CandidateResult, probe_rows: int, fold_rows: int, share: float
) -> int:
    """The most training rows per fold (at most all) whose estimated CV time fits `share`."""
    if _seconds_for(family, probe, probe_rows, fold_rows) <= share:
        return fold_rows
    low, high = 0, fold_rows  # the estimate grows with the rows: bisect
    while high - low > 1:
        middle = (low + high) // 2
        if _seconds_for(family, probe, probe_rows, middle) <= share:
            low = middle
        else:
            high = middle
    return low


def _subsampled(
    result: CandidateResult, rows: int, fold_rows: int, share: float, estimated: float
) -> CandidateResult:
    """`result`, marked as cross-validated on `rows` of the `fold_rows` training rows."""
    result.train_rows, result.train_share = rows, rows / fold_rows
    result.note = (
        f"cross-validated on {rows:,} of {fold_rows:,} training rows per fold: all of them "
        f"would take about {estimated:.0f} s, over its {max(share, 0):.0f} s share of the "
        "search budget"
    )
    return result


def _cross_validate(
    family: Family,
    params: dict[str, Any],
    folds: list[_Fold],
    label: np.ndarray,
    seed: int,
    resampling: str = "smote",
    rows: int | None = None,
) -> CandidateResult:
    """Fit and score one setting on every fold (on `rows` of each training part, None:
    all), folds in parallel."""
    started = time.perf_counter()
    # Threads share the folds without copying; the estimators release the GIL. Nested
    # BLAS/OpenMP threads would only oversubscribe the cores, so they are capped at one.
    with threadpool_limits(limits=1):
        fold_outcomes = Parallel(n_jobs=-1, prefer="threads")(
            delayed(_fit_and_predict)(family.build, params, fold, seed, resampling, rows)
            for fold in folds
        )
    side_by_side = time.perf_counter() - started
    oof = np.full(len(label), np.nan)
    roc_aucs, pr_aucs, f1s = [], [], []
    for fold, (probability, _, _) in zip(folds, fold_outcomes, strict=True):
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
        timing=(
            sum(fitting for _, fitting, _ in fold_outcomes),
            sum(predicting for _, _, predicting in fold_outcomes),
            side_by_side,
        ),
    )


def _fit_and_predict(
    build: Callable[..., ClassifierMixin],
    params: dict[str, Any],
    fold: _Fold,
    seed: int,
    resampling: str,
    rows: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """The fold's validation probabilities, and the seconds fitting (resampling included)
    and predicting took."""
    started = time.perf_counter()
    x, y, weight = fold.training_rows(resampling, rows)
    fit_weight = {} if weight is None else {"sample_weight": weight}
    estimator = build(seed, **params).fit(x, y, **fit_weight)
    fitted = time.perf_counter()
    probability = estimator.predict_proba(fold.x_valid)[:, 1]
    return probability, fitted - started, time.perf_counter() - fitted


def select_best(results: list[CandidateResult], metric: str = "roc_auc") -> CandidateResult:
    """Highest CV `metric`; ties go to the steadier (lower ROC-AUC std) candidate."""
    return max(results, key=lambda r: (round(r.cv_score(metric), 4), -r.cv_roc_auc_std))


def choose_threshold(label: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut-off that maximises churn-class F1 on out-of-fold predictions."""
    precision, recall, thresholds = precision_recall_curve(label, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])
