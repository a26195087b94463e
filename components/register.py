"""Register the new model and promote it to champion only if it earns it."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.drift import ReferenceProfile, save_profile
from components.lineage import save_training_customers
from components.registry import (
    ModelVersion,
    decide_promotion,
    library_versions,
    open_registry,
)
from components.stage import stage


def register_and_promote(
    *,
    registry_uri: str,
    model_file: Path,
    model_info: dict[str, Any],
    evaluation: dict[str, Any],
    data_fingerprint: str,
    run_id: str,
    metric: str,
    margin: float,
    floor: float,
    profile: ReferenceProfile | None = None,
    training_customers: Iterable[object] | None = None,
    require_significance: bool = False,
) -> ModelVersion:
    """Add the model as a new version; move the `champion` alias to it if it clears the
    floor and beats the champion's score on the same test rows by `margin` (and, with
    `require_significance`, the 95% interval of the difference lies above zero).
    `profile` (the training data's distributions) and the hashed ids of
    `training_customers` are stored beside it, for scoring's drift report and for later
    runs to compare it only on customers it never saw."""
    champion_metrics = evaluation.get("champion_metrics")
    comparison = evaluation.get("comparison") or {}
    decision = decide_promotion(
        metric=metric,
        candidate=evaluation["metrics"][metric],
        champion=comparison.get("champion"),
        margin=margin,
        floor=floor,
        interval=(evaluation.get("interval") or {}).get("low_high"),
        candidate_on_champion_rows=comparison.get("candidate"),
        difference_interval=comparison.get("difference_interval"),
        require_significance=require_significance,
        comparison=comparison.get("note", ""),
    )
    if champion_metrics:
        decision_reason = f"{decision.reason} (champion: v{evaluation['champion_version']})"
    else:
        decision_reason = decision.reason
    registry = open_registry(registry_uri)
    entry = registry.register(
        model_file,
        best_model=model_info["best_model"],
        params=model_info.get("params", {}),
        threshold=float(model_info["threshold"]),
        metrics=evaluation["metrics"],
        data_fingerprint=data_fingerprint,
        library_versions=library_versions(),
        run_id=run_id,
        promoted=decision.promote,
        promotion_reason=decision_reason,
    )
    if profile is not None:
        save_profile(profile, registry.model_path(entry.version).parent)
    if training_customers is not None:
        save_training_customers(training_customers, registry.model_path(entry.version).parent)
    if decision.promote:
        registry.promote(entry.version)
    return entry


@stage
def register_model(
    model: Input[Model],
    evaluation: Input[Artifact],
    train: Input[Dataset],
    predictions: Input[Dataset],
    registry_uri: str,
    run_id: str,
    promotion_metric: str,
    promotion_margin: float,
    promotion_floor: float,
    promotion_requires_significance: bool,
    registration: Output[Artifact],
) -> None:
    """Register the model with its training-data profile; promote it to champion if it
    beats the current one."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.drift import reference_profile
    from components.register import register_and_promote
    from components.registry import MODEL_FILE, data_fingerprint

    train_frame = pd.read_parquet(train.path)
    # Held-out scores as the reference: a model's scores on its own training rows are
    # over-confident and would make every honest scoring day look drifted.
    held_out_scores = pd.read_parquet(predictions.path)["probability"].to_numpy()
    entry = register_and_promote(
        registry_uri=registry_uri,
        model_file=Path(model.path) / MODEL_FILE,
        model_info=dict(model.metadata),
        evaluation=json.loads(Path(evaluation.path).read_text()),
        data_fingerprint=data_fingerprint(train_frame),
        run_id=run_id,
        metric=promotion_metric,
        margin=promotion_margin,
        floor=promotion_floor,
        profile=reference_profile(train_frame, held_out_scores),
        training_customers=train_frame[TELCO_CHURN.id_column],
        require_significance=promotion_requires_significance,
    )
    Path(registration.path).write_text(json.dumps(asdict(entry), indent=2))
    registration.metadata.update(
        {"version": entry.version, "promoted": entry.promoted, "reason": entry.promotion_reason}
    )
