"""The model registry: numbered model versions with a `champion` alias, behind one interface.

`open_registry(uri)` picks the backend by URI:
    a local directory     `LocalRegistry` (components/registry/local.py): `vNNNN/` version
                          directories and `aliases.json`
    vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH
                          `VertexRegistry` (components/registry/vertex.py): versions of the
                          Vertex AI model ID; model directories uploaded under `artifacts`

Both store and return a model directory (components/model_files.py): the model file, its
record with SHA-256 and the files registration writes beside them, and both refuse a model
file whose SHA-256 differs from the record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from sklearn.pipeline import Pipeline

from components.errors import RegistryError
from components.model_files import (
    MODEL_FILE,
    RECORD_FILE,
    file_sha256,
    load_checked_model,
    save_model,
)

__all__ = [
    "CHAMPION",
    "MODEL_FILE",
    "RECORD_FILE",
    "LocalRegistry",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "data_fingerprint",
    "file_sha256",
    "library_versions",
    "load_model_directory",
    "open_registry",
    "save_model",
]

CHAMPION = "champion"
_TRACKED_LIBRARIES = ("scikit-learn", "imbalanced-learn", "pandas", "numpy", "kfp")


@dataclass
class ModelVersion:
    """One registered model and everything needed to trust and reproduce it."""

    version: int
    sha256: str
    best_model: str
    threshold: float
    metrics: dict[str, float]
    data_fingerprint: str
    run_id: str
    created_at: str
    library_versions: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    promotion_reason: str = ""


class Registry(Protocol):
    """What every registry backend offers. `ref` is a version number (`3`, `"3"`, `"v3"`)
    or an alias (`"champion"`)."""

    def register(self, directory: Path, **record: Any) -> ModelVersion:
        """Store the model directory (`MODEL_FILE` and any files beside it) as the next
        version; `record` fills `ModelVersion`'s fields other than version, sha256 and
        created_at."""
        ...

    def get(self, ref: int | str) -> ModelVersion: ...

    def champion(self) -> ModelVersion | None: ...

    def promote(self, version: int) -> None:
        """Move the `champion` alias to `version`."""
        ...

    def fetch(self, ref: int | str, directory: Path) -> ModelVersion:
        """Copy a version's model directory into `directory`, refusing a model file whose
        SHA-256 differs from its record; return the record."""
        ...

    def load_model(self, ref: int | str) -> tuple[Pipeline, ModelVersion]:
        """The fitted pipeline of a version, after checking the file's SHA-256."""
        ...

    def resource_name(self, version: int) -> str:
        """Where the version lives, for lineage: a directory, or a Vertex model version's
        resource name (`projects/P/locations/R/models/ID@3`)."""
        ...


def open_registry(uri: str, *, serving_image: str = "") -> Registry:
    """The registry a URI names (see the module docstring). A malformed `vertex://` URI
    raises RegistryError without touching the network, so callers can check a URI before
    a run starts. `serving_image` is the container Vertex model versions are registered
    with (default: the project's serving image in Artifact Registry)."""
    if uri.startswith("vertex://"):
        from components.registry.vertex import VertexRegistry

        return VertexRegistry(uri, serving_image=serving_image)
    if "://" in uri:
        raise RegistryError(
            f"registry {uri!r}: expected a local directory or "
            "vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH"
        )
    return LocalRegistry(uri)


def load_model_directory(directory: Path) -> tuple[Pipeline, ModelVersion]:
    """The model in a registry version's directory (`model.joblib` + `version.json`),
    unpickled only if its SHA-256 matches the record."""
    model, record = load_checked_model(Path(directory))
    return model, ModelVersion(**record)


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a table (order-sensitive), to tell which data a model saw."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in _TRACKED_LIBRARIES}


# Last: the backend module builds on ModelVersion above.
from components.registry.local import LocalRegistry  # noqa: E402
