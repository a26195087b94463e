"""Register the new model and promote it to champion only if it earns it."""

from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Model, Output

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
) -> ModelVersion:
    """Add the model as a new version; move the `champion` alias to it if it clears the
    floor and beats the champion's score on the same test set by `margin`."""
    champion_metrics = evaluation.get("champion_metrics")
    decision = decide_promotion(
        metric=metric,
        candidate=evaluation["metrics"][metric],
        champion=champion_metrics[metric] if champion_metrics else None,
        margin=margin,
        floor=floor,
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
    if decision.promote:
        registry.promote(entry.version)
    return entry


@stage
def register_model(
    model: Input[Model],
    evaluation: Input[Artifact],
    train: Input[Dataset],
    registry_uri: str,
    run_id: str,
    promotion_metric: str,
    promotion_margin: float,
    promotion_floor: float,
    registration: Output[Artifact],
) -> None:
    """Register the model; promote it to champion if it beats the current one."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    import pandas as pd

    from components.register import register_and_promote
    from components.registry import MODEL_FILE, data_fingerprint

    entry = register_and_promote(
        registry_uri=registry_uri,
        model_file=Path(model.path) / MODEL_FILE,
        model_info=dict(model.metadata),
        evaluation=json.loads(Path(evaluation.path).read_text()),
        data_fingerprint=data_fingerprint(pd.read_parquet(train.path)),
        run_id=run_id,
        metric=promotion_metric,
        margin=promotion_margin,
        floor=promotion_floor,
    )
    Path(registration.path).write_text(json.dumps(asdict(entry), indent=2))
    registration.metadata.update(
        {"version": entry.version, "promoted": entry.promoted, "reason": entry.promotion_reason}
    )
