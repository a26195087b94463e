"""Test-set evaluation: the only place the held-out split is scored."""

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
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
    }


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


def load_model_dir(directory: str) -> Pipeline:
    """The pipeline saved in a Model artifact by the training step. Artifacts move only
    between steps of one run, so no hash check is needed here (unlike the registry)."""
    import joblib

    from components.registry import MODEL_FILE

    return joblib.load(f"{directory}/{MODEL_FILE}")


@stage
def evaluate_model(
    model: Input[Model],
    test: Input[Dataset],
    registry_uri: str,
    seed: int,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    predictions: Output[Dataset],
    evaluation: Output[Artifact],
) -> None:
    """Score the held-out test set with the new model and, if there is one, the current
    champion, so the promotion gate compares both on the same rows."""
    import json
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.evaluate import (
        classification_metrics,
        confusion,
        feature_importance,
        load_model_dir,
        roc_points,
    )
    from components.predict import predict_probability
    from components.registry import open_registry

    frame = pd.read_parquet(test.path)
    label = frame[TELCO_CHURN.label_column].to_numpy()
    candidate = load_model_dir(model.path)
    threshold = float(model.metadata["threshold"])
    probability = predict_probability(candidate, frame)
    scores = classification_metrics(label, probability, threshold)
    for name, value in scores.items():
        metrics.log_metric(name, value)

    champion_scores, champion_version = None, None
    registry = open_registry(registry_uri)
    champion = registry.champion()
    out = pd.DataFrame({"label": label, "probability": probability})
    if champion is not None:
        champion_model, entry = registry.load_model(champion.version)
        out["champion_probability"] = predict_probability(champion_model, frame)
        champion_scores = classification_metrics(
            label, out["champion_probability"].to_numpy(), entry.threshold
        )
        champion_version = entry.version
        metrics.log_metric(f"champion_v{entry.version}_roc_auc", champion_scores["roc_auc"])
    out.to_parquet(predictions.path, index=False)

    fpr, tpr, thresholds = roc_points(label, probability)
    roc.log_roc_curve(fpr, tpr, thresholds)
    matrix = confusion(label, probability, threshold)
    roc.log_confusion_matrix(["stays", "churns"], matrix)
    Path(evaluation.path).write_text(
        json.dumps(
            {
                "metrics": scores,
                "confusion_matrix": matrix,
                "champion_version": champion_version,
                "champion_metrics": champion_scores,
                "feature_importance": feature_importance(candidate, frame, seed=seed),
            },
            indent=2,
        )
    )
