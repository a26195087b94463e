"""Test-set evaluation: the only place the held-out split is scored.

Beside the headline metrics it measures how far the probabilities can be taken at face
value (Brier score, expected calibration error), how uncertain the test metric is (a
bootstrap 95% interval over the test set's leakage groups), and compares the champion
fairly: only on test customers it never trained on, with the paired difference's
bootstrap interval.
"""

import math
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from components.contract import TELCO_CHURN, DataContract
from components.stage import stage

# Permutation importance on more rows than this adds time, not information.
IMPORTANCE_ROWS = 2_000
# Fewer unseen test customers than this and a metric's 95% interval is typically wider than
# +-0.03 ROC-AUC: the comparison still decides, labelled as thin.
MIN_COMPARISON_ROWS = 500
CALIBRATION_BINS = 10


def expected_calibration_error(
    label: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Mean |predicted - observed churn rate| over equal-width probability bins, weighted
    by the bins' share of rows."""
    which = np.minimum((probability * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, probability, bins) - np.bincount(which, label.astype(float), bins)
    )
    return float(gap.sum() / max(count.sum(), 1))


def calibration_metrics(label: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """How far probabilities can be read at face value: Brier score, expected calibration
    error (10 bins), and the mean probability beside the actual churn rate."""
    return {
        "brier": float(brier_score_loss(label, probability)),
        "ece": expected_calibration_error(label, probability),
        "mean_probability": float(np.mean(probability)),
        "churn_rate": float(np.mean(label)),
    }


def classification_metrics(
    label: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """Headline metrics of churn probabilities against true labels at `threshold`."""
    predicted = probability >= threshold
    return {
        "roc_auc": float(roc_auc_score(label, probability)),
        "pr_auc": float(average_precision_score(label, probability)),
        "f1": float(f1_score(label, predicted, zero_division=0)),
        "precision": float(precision_score(label, predicted, zero_division=0)),
        "recall": float(recall_score(label, predicted, zero_division=0)),
        "threshold": float(threshold),
    } | calibration_metrics(label, probability)


def metric_value(
    metric: str, label: np.ndarray, probability: np.ndarray, threshold: float
) -> float:
    """One promotion metric (`roc_auc`, `pr_auc`, or `f1` at `threshold`)."""
    if metric == "roc_auc":
        return float(roc_auc_score(label, probability))
    if metric == "pr_auc":
        return float(average_precision_score(label, probability))
    return float(f1_score(label, probability >= threshold, zero_division=0))


def bootstrap_interval(
    metric: str,
    label: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    *,
    samples: int,
    seed: int,
    baseline: tuple[np.ndarray, float] | None = None,
    groups: np.ndarray | None = None,
) -> list[float] | None:
    """The bootstrap 95% interval (percentiles 2.5 and 97.5) of `metric` over resamples
    of the rows, or with `groups` (a label per row, as the split's leakage groups) of
    whole groups: copies of one customer profile are not independent draws, and
    resampling them as if they were makes the interval too narrow. With `baseline`
    (another model's probabilities of the same rows and its threshold), the interval of
    the paired difference `metric(probability) - metric(baseline)`, both computed on
    each same resample. None when `samples` is 0. Resamples with one class only
    (possible on tiny sets) are skipped."""
    if samples == 0 or len(label) == 0:
        return None
    rng = np.random.default_rng(seed)
    n = len(label)
    # Resampling rows is resampling groups of one row each.
    group = np.arange(n) if groups is None else pd.factorize(groups)[0]
    n_groups = int(group.max()) + 1
    values = []
    for start in range(0, samples, _BOOTSTRAP_BLOCK):
        block = min(_BOOTSTRAP_BLOCK, samples - start)
        # A resample as how often it draws each row (a row is drawn as often as its
        # group): the metrics below take row weights, which computes every resample of a
        # block at once (a loop over scikit-learn's metrics takes about 4 ms per resample).
        drawn = rng.integers(0, n_groups, size=(block, n_groups))
        drawn += n_groups * np.arange(block)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=block * n_groups)
        counts = counts.reshape(block, n_groups)[:, group]
        value = _weighted_metric(metric, label, probability, threshold, counts)
        if baseline is not None:
            value -= _weighted_metric(metric, label, baseline[0], baseline[1], counts)
        values.append(value)
    kept = np.concatenate(values)
    kept = kept[~np.isnan(kept)]
    if not len(kept):
        return None
    low, high = np.percentile(kept, [2.5, 97.5])
    return [float(low), float(high)]


_BOOTSTRAP_BLOCK = 100


def _weighted_metric(
    metric: str, label: np.ndarray, probability: np.ndarray, threshold: float, counts: np.ndarray
) -> np.ndarray:
    """`metric_value` of each row of `counts` (how often each row is drawn), as if the rows
    were repeated that often; NaN where a resample lacks a class."""
    churn = label.astype(bool)
    if metric == "f1":
        flagged = probability >= threshold
        true_pos = counts @ (churn & flagged)
        wrong = counts @ (churn ^ flagged)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(true_pos > 0, 2 * true_pos / (2 * true_pos + wrong), 0.0)
        return np.where(counts @ churn > 0, f1, np.nan)
    # Rows in order of probability, and where each run of tied probabilities starts.
    order = np.argsort(probability, kind="stable")
    sorted_probability = probability[order]
    starts = np.flatnonzero(np.r_[True, sorted_probability[1:] != sorted_probability[:-1]])
    weights = counts[:, order].astype(float)
    pos = np.add.reduceat(weights * churn[order], starts, axis=1)
    neg = np.add.reduceat(weights * ~churn[order], starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc":
            below = np.cumsum(neg, axis=1) - neg
            value = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        else:  # pr_auc, average precision as scikit-learn computes it: from the top down
            true_pos = np.cumsum(pos[:, ::-1], axis=1)
            false_pos = np.cumsum(neg[:, ::-1], axis=1)
            precision = np.where(true_pos > 0, true_pos / (true_pos + false_pos), 0.0)
            value = (pos[:, ::-1] * precision).sum(axis=1) / total_pos
    return np.where((total_pos > 0) & (total_neg > 0), value, np.nan)


def compare_with_champion(
    *,
    metric: str,
    label: np.ndarray,
    customer_ids: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    champion_probability: np.ndarray,
    champion_threshold: float,
    champion_training_customers: np.ndarray | None,
    samples: int,
    seed: int,
    holdout: dict[str, Any] | None = None,
    champion_holdout: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """The new model against the champion on the same test rows: those of customers the
    champion never trained on, or, when they are too few to score (one class or none),
    all test rows, labelled as flattering the champion. Both models' metric on those rows,
    the difference and its paired bootstrap 95% interval, how many rows, and a `note`
    saying on what the comparison rests. `groups` (the split's leakage group of each row)
    makes the bootstrap resample whole groups.

    `holdout` and `champion_holdout` are the persistent holdouts (salt, share) of this
    test set and of the champion's: when they are the same the champion never trained on
    a held-out customer, and the note says the comparison is on the persistent holdout;
    when they differ the note says so, and the comparison falls back to the customers the
    champion never saw, as without a holdout."""
    from components.model.lineage import trained_on

    total = len(label)
    if champion_training_customers is None:
        seen = None
        rows = np.ones(total, dtype=bool)
        note = (
            f"on all {total:,} test customers: the champion's training customers are not "
            "recorded (it was registered before they were kept)"
        )
    else:
        seen = trained_on(customer_ids, champion_training_customers)
        rows = ~seen
        unseen = int(rows.sum())
        if unseen == 0 or label[rows].min() == label[rows].max():
            rows = np.ones(total, dtype=bool)
            note = (
                f"on all {total:,} test customers, although the champion trained on "
                f"{int(seen.sum()):,} of them: the {unseen:,} it never saw are too few to "
                "score, so its score is flattered"
            )
        else:
            note = f"on the {unseen:,} of {total:,} test customers the champion never trained on"
            if unseen == total:
                note = f"on all {total:,} test customers, none of whom the champion trained on"
            if unseen < MIN_COMPARISON_ROWS:
                note += f" (only {unseen:,}, fewer than {MIN_COMPARISON_ROWS:,}: a thin comparison)"
    note = _holdout_note(holdout or {}, champion_holdout or {}) + note
    truth = label[rows]
    candidate = metric_value(metric, truth, probability[rows], threshold)
    champion = metric_value(metric, truth, champion_probability[rows], champion_threshold)
    return {
        "metric": metric,
        "rows": int(rows.sum()),
        "test_rows": total,
        "champion_trained_on": None if seen is None else int(seen.sum()),
        "unseen_only": bool(seen is not None and not rows[seen].any()),
        "note": note,
        "candidate": candidate,
        "champion": champion,
        "difference": candidate - champion,
        "difference_interval": bootstrap_interval(
            metric,
            truth,
            probability[rows],
            threshold,
            samples=samples,
            seed=seed,
            baseline=(champion_probability[rows], champion_threshold),
            groups=None if groups is None else groups[rows],
        ),
        "champion_metrics": classification_metrics(
            truth, champion_probability[rows], champion_threshold
        ),
    }


def _holdout_note(holdout: dict[str, Any], champion_holdout: dict[str, Any]) -> str:
    """What the champion comparison owes to the persistent holdout, as the note's start."""
    if not holdout:
        return ""
    if not champion_holdout:
        return "the champion was tested on a random split, not this persistent holdout: "

    def shown(h: dict[str, Any]) -> str:
        return f"salt {h['salt']!r}, share {float(h['share']):.0%}"

    if holdout["salt"] != champion_holdout["salt"] or not math.isclose(
        float(holdout["share"]), float(champion_holdout["share"])
    ):
        return (
            f"the persistent holdout changed since the champion ({shown(champion_holdout)} "
            f"-> {shown(holdout)}): "
        )
    return f"persistent holdout ({shown(holdout)}), "


def confusion(label: np.ndarray, probability: np.ndarray, threshold: float) -> list[list[int]]:
    """2x2 confusion matrix, rows = truth (stays, churns), columns = prediction."""
    return confusion_matrix(label, probability >= threshold, labels=[0, 1]).tolist()


def roc_points(label: np.ndarray, probability: np.ndarray) -> tuple[list, list, list]:
    """(fpr, tpr, thresholds) with sklearn's leading `inf` threshold clamped to 1.0, as
    KFP's `ClassificationMetrics.log_roc_curve` rejects infinities."""
    fpr, tpr, thresholds = roc_curve(label, probability)
    return fpr.tolist(), tpr.tolist(), np.minimum(thresholds, 1.0).tolist()


def feature_importance(
    model: Pipeline, test: pd.DataFrame, *, seed: int, contract: DataContract = TELCO_CHURN
) -> dict[str, float]:
    """Mean drop in test ROC-AUC when each raw feature is shuffled (model-agnostic, so
    every candidate family is explained the same way)."""
    sample = test.sample(n=min(len(test), IMPORTANCE_ROWS), random_state=seed)
    # Dozens of small predictions: OpenMP thread start-up costs more than it saves (and on
    # a busy machine, many times more), so they run on one thread.
    with threadpool_limits(limits=1):
        result = permutation_importance(
            model,
            sample[contract.feature_names],
            sample[contract.label_column].to_numpy(),
            scoring="roc_auc",
            n_repeats=3,
            random_state=seed,
            n_jobs=1,
        )
    ranked = sorted(
        zip(contract.feature_names, result.importances_mean, strict=True), key=lambda kv: -kv[1]
    )
    return {name: round(float(value), 5) for name, value in ranked}


def attribution_importance(
    model: Pipeline, test: pd.DataFrame, *, seed: int, contract: DataContract = TELCO_CHURN
) -> dict[str, float]:
    """Mean absolute contribution of each raw feature to the published probability, from
    the attributions behind the reason codes (`components.model.reasons`), on the rows
    `feature_importance` shuffles."""
    from components.model.reasons import global_importance

    sample = test.sample(n=min(len(test), IMPORTANCE_ROWS), random_state=seed)
    with threadpool_limits(limits=1):
        return global_importance(model, sample, contract)


def load_model_dir(directory: str, sha256: str) -> Pipeline:
    """The pipeline saved in a Model artifact by the training step, unpickled only if its
    bytes have the SHA-256 that step recorded (`sha256`, from the artifact's metadata)."""
    from pathlib import Path

    from components.registry.model_files import MODEL_FILE, load_model_file

    return load_model_file(Path(directory) / MODEL_FILE, sha256)


@stage
def evaluate_model(
    model: Input[Model],
    test: Input[Dataset],
    registry_uri: str,
    seed: int,
    promotion_metric: str,
    bootstrap_samples: int,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    predictions: Output[Dataset],
    evaluation: Output[Artifact],
) -> None:
    """Score the held-out test set with the new model and, if there is one, the current
    champion, so the promotion gate compares both on the same rows: those of customers the
    champion never trained on. Bootstrap 95% intervals of the test metric and of the
    paired difference."""
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.data.split import leakage_groups
    from components.model.evaluate import (
        attribution_importance,
        bootstrap_interval,
        calibration_metrics,
        classification_metrics,
        compare_with_champion,
        confusion,
        feature_importance,
        load_model_dir,
        roc_points,
    )
    from components.model.lineage import load_training_customers
    from components.model.predict import predict_probability
    from components.registry import load_model_directory, open_registry

    frame = pd.read_parquet(test.path)
    holdout = dict(test.metadata.get("holdout") or {})  # the split step's
    label = frame[TELCO_CHURN.label_column].to_numpy()
    candidate = load_model_dir(model.path, model.metadata["sha256"])
    threshold = float(model.metadata["threshold"])
    probability = predict_probability(candidate, frame)
    raw_probability = predict_probability(candidate, frame, calibrated=False)
    scores = classification_metrics(label, probability, threshold)
    for name, value in scores.items():
        metrics.log_metric(name, value)
    groups = leakage_groups(frame)  # the bootstrap resamples what the split kept whole
    interval = bootstrap_interval(
        promotion_metric,
        label,
        probability,
        threshold,
        samples=bootstrap_samples,
        seed=seed,
        groups=groups,
    )

    comparison, champion_version = None, None
    registry = open_registry(registry_uri)
    champion = registry.champion()
    out = pd.DataFrame(
        {"label": label, "probability": probability, "raw_probability": raw_probability}
    )
    if champion is not None:
        # The whole version directory (a download from a Vertex registry): the model file,
        # hash-checked, and the ids of the customers it trained on.
        with tempfile.TemporaryDirectory(prefix="churn-champion-") as scratch:
            champion_dir = Path(scratch)
            entry = registry.fetch(champion.version, champion_dir)
            # A champion pickled by other library versions is compared all the same, with
            # the check's warning in the log: it is only compared with here, never scored
            # with, and refusing would block the retrain that moves the registry onto the
            # image's libraries.
            champion_model, _ = load_model_directory(
                champion_dir, sha256=entry.sha256, accept_library_mismatch=True
            )
            out["champion_probability"] = predict_probability(champion_model, frame)
            comparison = compare_with_champion(
                metric=promotion_metric,
                label=label,
                customer_ids=frame[TELCO_CHURN.id_column].to_numpy(),
                probability=probability,
                threshold=threshold,
                champion_probability=out["champion_probability"].to_numpy(),
                champion_threshold=entry.threshold,
                champion_training_customers=load_training_customers(champion_dir),
                samples=bootstrap_samples,
                seed=seed,
                holdout=holdout,
                champion_holdout=entry.holdout,
                groups=groups,
            )
        champion_version = entry.version
        metrics.log_metric(f"champion_v{entry.version}_{promotion_metric}", comparison["champion"])
        metrics.log_metric("champion_comparison_rows", comparison["rows"])
    out.to_parquet(predictions.path, index=False)

    fpr, tpr, thresholds = roc_points(label, probability)
    roc.log_roc_curve(fpr, tpr, thresholds)
    matrix = confusion(label, probability, threshold)
    roc.log_confusion_matrix(["stays", "churns"], matrix)
    Path(evaluation.path).write_text(
        json.dumps(
            {
                "metrics": scores,
                "uncalibrated": calibration_metrics(label, raw_probability),
                "interval": {
                    "metric": promotion_metric,
                    "low_high": interval,
                    "samples": bootstrap_samples,
                },
                "confusion_matrix": matrix,
                "champion_version": champion_version,
                "holdout": holdout,
                "champion_metrics": comparison["champion_metrics"] if comparison else None,
                "comparison": comparison,
                "feature_importance": feature_importance(candidate, frame, seed=seed),
                "attribution_importance": attribution_importance(candidate, frame, seed=seed),
            },
            indent=2,
        )
    )
