"""The final model (step 4 of training): the best candidate of the search
(`components.model.search`) calibrated and thresholded on its out-of-fold predictions,
then refitted on the whole training split. The honesty rules of the search hold here too:
only the training split, SMOTE on it alone, calibration from out-of-fold predictions.

The saved model is one scikit-learn `Pipeline(preprocess, model)` with no imblearn step, so
serving applies exactly the preprocessing training used; with calibration, `model` is a
`components.model.calibration.CalibratedModel` (the estimator, then its calibrator).
"""

import logging

import pandas as pd
from imblearn.over_sampling import SMOTE
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from components.contract import TELCO_CHURN, DataContract
from components.data.split import cv_folds
from components.model.calibration import CalibratedModel, ProbabilityCalibrator, choose_method
from components.model.features import build_preprocessor
from components.model.search import (
    FAMILIES,
    SMOTE_NEIGHBOURS,
    CandidateResult,
    Family,
)
from components.stage import stage

log = logging.getLogger(__name__)


def fit_calibrator(
    train: pd.DataFrame,
    best: CandidateResult,
    *,
    method: str,
    n_folds: int,
    seed: int,
    contract: DataContract = TELCO_CHURN,
) -> tuple[ProbabilityCalibrator | None, dict[str, float]]:
    """The calibrator of `best`'s probabilities, fitted on its out-of-fold predictions of
    `train` (with `auto`, the method with the lower Brier score in CV over the search's
    own folds), and each method's CV Brier score; `None` for `method="none"`."""
    if method == "none":
        return None, {}
    label = train[contract.label_column].to_numpy()
    brier: dict[str, float] = {}
    if method == "auto":
        folds = cv_folds(train, n_folds=n_folds, seed=seed, contract=contract)
        method, brier = choose_method(label, best.oof_probability, [v for _, v in folds])
    return ProbabilityCalibrator(method).fit(best.oof_probability, label), brier


def final_rows(best: CandidateResult, rows: int, budget_seconds: float, family: Family) -> int:
    """How many of the training split's `rows` the final model is fitted on: all of them
    when the search cross-validated the candidate on all; otherwise the most whose fit,
    estimated from the search's own fits of it (as the search estimates), takes at most
    `budget_seconds`, and never fewer than the share the search judged. More rows than the
    search could afford make a better model of the same kind. Not so for k-nearest
    neighbours: scoring a customer compares them with every training row, so its model
    keeps the share the search judged."""
    if best.train_share >= 1.0 or not best.train_rows:
        return rows
    judged = min(rows, round(best.train_share * rows))
    per_fit = best.timing[0] / max(len(best.fold_roc_auc), 1)
    if family.validation_cost or per_fit <= 0 or budget_seconds <= 0:
        return judged
    affordable = int(best.train_rows * (budget_seconds / per_fit) ** (1 / 1.1))
    return max(judged, min(rows, affordable))


def fit_final(
    train: pd.DataFrame,
    best: CandidateResult,
    *,
    seed: int,
    calibrator: ProbabilityCalibrator | None = None,
    families: tuple[Family, ...] = FAMILIES,
    contract: DataContract = TELCO_CHURN,
    budget_seconds: float = 0.0,
) -> Pipeline:
    """Refit the chosen candidate on the whole training split (or, when the search could
    only afford a subsample, on as many rows as `final_rows` allows within `budget_seconds`;
    resampled as it was in CV, on that split only) and return the servable
    `Pipeline(preprocess, model)`, its model followed by `calibrator` when one is given."""
    family = next(f for f in families if f.name == best.family)
    rows = final_rows(best, len(train), budget_seconds, family)
    if rows < len(train):
        log.info(
            "%s: fitted on %d of %d training rows (all of them would overrun the budget)",
            best.family, rows, len(train),
        )  # fmt: skip
        train = train.sample(n=rows, random_state=seed)
    features, label = train[contract.feature_names], train[contract.label_column].to_numpy()
    preprocess = build_preprocessor(contract).fit(features)
    x, y, weight = preprocess.transform(features), label, None
    if best.resampling == "smote":
        x, y = SMOTE(k_neighbors=SMOTE_NEIGHBOURS, random_state=seed).fit_resample(x, y)
    elif best.resampling == "class_weight":
        weight = {"sample_weight": compute_sample_weight("balanced", y)}
    # One thread: OpenMP's gain on two cores is small and turns into a loss many times over
    # when the machine is busy (measured: 16 s instead of 2 s for gradient boosting).
    with threadpool_limits(limits=1):
        estimator: BaseEstimator = family.build(seed, **best.params).fit(x, y, **(weight or {}))
    if calibrator is not None:
        estimator = CalibratedModel(estimator, calibrator)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


@stage
def train_candidates(
    train: Input[Dataset],
    cv_folds: int,
    seed: int,
    candidates_per_family: int,
    search_budget_seconds: float,
    promotion_metric: str,
    resampling: str,
    calibration: str,
    model: Output[Model],
    candidates: Output[Artifact],
    cv_metrics: Output[Metrics],
) -> None:
    """Cross-validate every candidate family and resampling method, pick the best by CV
    `promotion_metric`, calibrate it and choose its threshold from out-of-fold predictions,
    and refit it on the whole training split."""
    import json
    import logging
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.model.search import FAMILIES, choose_threshold, search_candidates, select_best
    from components.model.train import final_rows, fit_calibrator, fit_final
    from components.registry import file_sha256, save_model

    logging.basicConfig(level=logging.INFO)
    log = logging.getLogger("train")
    frame = pd.read_parquet(train.path)

    def report(result, done: int, total: int) -> None:
        log.info(
            "[%d/%d] %s %s, %s: CV ROC-AUC %.4f ± %.4f (%.1fs)",
            done, total, result.family, result.params, result.resampling,
            result.cv_roc_auc_mean, result.cv_roc_auc_std, result.fit_seconds,
        )  # fmt: skip

    skipped: list[dict[str, str]] = []
    results = search_candidates(
        frame,
        n_folds=cv_folds,
        seed=seed,
        candidates_per_family=candidates_per_family,
        budget_seconds=search_budget_seconds,
        on_result=report,
        resampling=resampling,
        metric=promotion_metric,
        on_skip=lambda what, why: skipped.append({"model": what, "skipped": why}),
    )
    best = select_best(results, promotion_metric)
    calibrator, calibration_brier = fit_calibrator(
        frame, best, method=calibration, n_folds=cv_folds, seed=seed
    )
    # The threshold is a cut-off on the published (calibrated) probability.
    oof = best.oof_probability if calibrator is None else calibrator.transform(best.oof_probability)
    threshold = choose_threshold(frame[TELCO_CHURN.label_column].to_numpy(), oof)
    final = fit_final(
        frame, best, seed=seed, calibrator=calibrator, budget_seconds=search_budget_seconds
    )
    saved = save_model(final, Path(model.path))
    model.metadata.update(
        {
            "sha256": file_sha256(saved),  # checked by every later step that reads it
            "best_model": best.family,
            "params": best.params,
            "resampling": best.resampling,
            "calibration": calibrator.method if calibrator else "none",
            "calibration_cv_brier": calibration_brier,
            "threshold": threshold,
            "framework": "scikit-learn",
        }
    )
    # Skipped families are in the report too, with the reason.
    family = next(f for f in FAMILIES if f.name == best.family)
    fitted_on = final_rows(best, len(frame), search_budget_seconds, family)
    rows = [
        {**r.summary(), "selected": r is best}
        | ({"final_rows": fitted_on} if r is best and fitted_on < len(frame) else {})
        for r in results
    ] + skipped
    Path(candidates.path).write_text(json.dumps(rows, indent=2))
    for family in dict.fromkeys(r.family for r in results):
        cv_metrics.log_metric(
            f"cv_roc_auc_{family}", max(r.cv_roc_auc_mean for r in results if r.family == family)
        )
    cv_metrics.log_metric("cv_roc_auc_selected", best.cv_roc_auc_mean)
    cv_metrics.log_metric("threshold", threshold)
