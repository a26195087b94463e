"""Register the new model and promote it to champion only if it earns it."""

import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.errors import RegistryError
from components.model.lineage import save_training_customers
from components.monitoring.drift import ReferenceProfile, save_profile
from components.registry import ModelVersion, library_versions, open_registry
from components.registry.model_files import EVALUATION_FILE, MODEL_FILE, file_sha256
from components.stage import stage


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    *,
    metric: str,
    candidate: float,
    champion: float | None,
    margin: float,
    floor: float,
    interval: list[float] | None = None,
    candidate_on_champion_rows: float | None = None,
    difference_interval: list[float] | None = None,
    require_significance: bool = False,
    comparison: str = "",
    rule: str = "non_inferiority",
    tolerance: float = 0.005,
    rows: int | None = None,
) -> PromotionDecision:
    """Promote only a model that clears `floor` and, against a champion (scored on the same
    test rows), passes `rule`:

    - `non_inferiority`: the 95% interval of the paired difference (new minus champion)
      lies above `-tolerance`: the newer model, trained on fresher data, replaces the
      champion unless it may be worse by more than the tolerance. A model truly worse by
      more than that is promoted at most 2.5% of the time, whatever the test set's size;
    - `superiority`: the interval lies above zero (the new model is better, at 95%);
    - `margin`: the point estimate beats the champion by `margin`, and with
      `require_significance` the interval lies above zero too (the rule before intervals).

    `require_significance` makes `non_inferiority` a `superiority` rule. Without an interval
    (`bootstrap_samples` 0) the interval rules cannot judge: `margin` decides, saying so.

    `candidate` is the test metric on all test rows (judged against the floor, with its
    bootstrap 95% `interval`); `candidate_on_champion_rows` the new model's metric on the
    `rows` the champion was scored on (default: `candidate`), `difference_interval` the
    paired difference's 95% interval, and `comparison` says which rows those are.
    """
    shown = f"test {metric} {candidate:.4f}" + (
        f" (95% CI {interval[0]:.4f} to {interval[1]:.4f})" if interval else ""
    )
    if candidate < floor:
        return PromotionDecision(False, f"{shown} is below the floor {floor:.4f}")
    if champion is None:
        return PromotionDecision(True, f"no champion yet; {shown} clears the floor {floor:.4f}")
    paired = candidate if candidate_on_champion_rows is None else candidate_on_champion_rows
    where = f"{shown}; {comparison}: {paired:.4f}" if comparison else shown
    if rule == "non_inferiority" and require_significance:
        rule = "superiority"
    fallback = ""
    if rule != "margin" and not difference_interval:
        fallback = f" ({rule.replace('_', '-')} needs the difference's bootstrap interval)"
        rule = "margin"
    if rule != "margin":
        assert difference_interval is not None
        low, high = difference_interval
        bound = 0.0 if rule == "superiority" else -tolerance
        named = (
            "superiority"
            if rule == "superiority"
            else f"non-inferiority (tolerance {tolerance:.4f})"
        )
        where = comparison or (f"on {rows:,} test customers" if rows is not None else "")
        stated = (
            f"{named}: {metric} {paired:.4f} against the champion's {champion:.4f}, "
            f"difference {paired - champion:+.4f} with 95% CI {low:+.4f} to {high:+.4f}"
        )
        if low > bound:
            verdict = f"lies above {bound:+.4f}"
        else:
            verdict = f"does not lie above {bound:+.4f}" + (
                " (it does not exclude zero)" if rule == "superiority" else ""
            )
        return PromotionDecision(low > bound, f"{stated}, {verdict}; {where}; {shown}")
    difference = ""
    if difference_interval:
        low, high = difference_interval
        difference = f" (difference {paired - champion:+.4f}, 95% CI {low:+.4f} to {high:+.4f})"
    if paired < champion + margin:
        return PromotionDecision(
            False,
            f"{where} does not beat the champion's {champion:.4f} by the margin "
            f"{margin:.4f}{difference}{fallback}",
        )
    if require_significance and not (difference_interval and difference_interval[0] > 0):
        return PromotionDecision(
            False,
            f"{where} beats the champion's {champion:.4f} by the margin {margin:.4f}, but "
            f"the 95% interval of the difference does not exclude zero{difference} "
            "(promotion_requires_significance)",
        )
    return PromotionDecision(
        True,
        f"{where} beats the champion's {champion:.4f} by at least the margin "
        f"{margin:.4f}{difference}{fallback}",
    )


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
    serving_image: str = "",
    rule: str = "non_inferiority",
    tolerance: float = 0.005,
) -> ModelVersion:
    """Add the model as a new version; move the `champion` alias to it if it clears the
    floor and passes the promotion `rule` against the champion on the same test rows
    (`decide_promotion`: `tolerance`, `margin`, `require_significance`). The
    evaluation, `profile` (the training data's distributions, for scoring's drift report)
    and the hashed ids of `training_customers` (so later runs compare it only on customers
    it never saw) are registered beside the model file.

    The alias moves only if the champion is still the one `evaluation` compared against
    (`champion_version`): when another run promoted meanwhile, the model was never compared
    with the new champion, so it is registered unpromoted, saying so."""
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
        rule=rule,
        tolerance=tolerance,
        rows=comparison.get("rows"),
    )
    if champion_metrics:
        decision_reason = f"{decision.reason} (champion: v{evaluation['champion_version']})"
    else:
        decision_reason = decision.reason
    registry = open_registry(registry_uri, serving_image=serving_image)
    with tempfile.TemporaryDirectory(prefix="churn-register-") as staging:
        directory = Path(staging)
        shutil.copyfile(model_file, directory / MODEL_FILE)
        trained = model_info.get("sha256")  # recorded by the training step
        if trained and (staged := file_sha256(directory / MODEL_FILE)) != trained:
            raise RegistryError(
                f"{model_file} has SHA-256 {staged[:12]}…, its training step recorded "
                f"{trained[:12]}…: refusing to register a model file that changed after training"
            )
        (directory / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2))
        if profile is not None:
            save_profile(profile, directory)
        if training_customers is not None:
            save_training_customers(training_customers, directory)
        record = {
            "best_model": model_info["best_model"],
            "params": model_info.get("params", {}),
            "threshold": float(model_info["threshold"]),
            "metrics": evaluation["metrics"],
            "data_fingerprint": data_fingerprint,
            "library_versions": library_versions(),
            "run_id": run_id,
            "promotion_reason": decision_reason,
            "holdout": evaluation.get("holdout") or {},
        }
        if not decision.promote:
            return registry.register(directory, promoted=False, **record)
        # A compare-and-set: another run may have promoted since this one evaluated.
        return registry.register_as_champion(
            directory, replacing=evaluation.get("champion_version"), **record
        )


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
    serving_image: str,
    registration: Output[Artifact],
    registered_model: Output[VertexModel],
    promotion_rule: str = "non_inferiority",
    promotion_tolerance: float = 0.005,
) -> NamedTuple("Registered", [("promoted", bool)]):
    """Register the model with its evaluation and training-data profile; promote it to
    champion if it beats the current one. `registered_model` names the version (a Vertex
    model version's resource name, or the local version directory) for lineage and for
    Google Cloud Pipeline Components that take a model."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    import pandas as pd

    from components.contract import TELCO_CHURN
    from components.model.register import register_and_promote
    from components.monitoring.drift import reference_profile
    from components.registry import data_fingerprint, open_registry
    from components.registry.model_files import MODEL_FILE

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
        serving_image=serving_image,
        rule=promotion_rule,
        tolerance=promotion_tolerance,
    )
    Path(registration.path).write_text(json.dumps(asdict(entry), indent=2))
    registration.metadata.update(
        {"version": entry.version, "promoted": entry.promoted, "reason": entry.promotion_reason}
    )
    resource = open_registry(registry_uri).resource_name(entry.version)
    registered_model.metadata.update({"resourceName": resource, "version": entry.version})
    return (entry.promoted,)
