"""Load champion: the model a scoring run uses, copied out of the registry, hash-checked."""

from pathlib import Path

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp.dsl import Model, Output

from components.registry import ModelVersion, open_registry
from components.stage import stage


def fetch_model(registry_uri: str, ref: str, directory: Path) -> tuple[ModelVersion, str]:
    """Copy a registered version's directory (the model file, refused if its SHA-256
    differs from the record, and its reference profile) into `directory`; return its
    record and the version's resource name."""
    registry = open_registry(registry_uri)
    entry = registry.fetch(ref, directory)
    return entry, registry.resource_name(entry.version)


@stage
def load_champion(
    registry_uri: str,
    model_ref: str,
    model: Output[Model],
    vertex_model: Output[VertexModel],
) -> None:
    """Copy the model to score with out of the registry, refusing a file whose SHA-256
    differs from the one recorded when it was registered. `vertex_model` names the version
    for Vertex batch prediction (for a local registry, its directory)."""
    from pathlib import Path

    from components.scoring.champion import fetch_model

    entry, resource = fetch_model(registry_uri, model_ref, Path(model.path))
    model.metadata.update(
        {
            "version": entry.version,
            "threshold": entry.threshold,
            "best_model": entry.best_model,
            "sha256": entry.sha256,
            "registry": registry_uri,
        }
    )
    vertex_model.metadata.update({"resourceName": resource, "version": entry.version})
