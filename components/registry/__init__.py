"""The model registry: numbered model versions with a `champion` alias, behind one interface.

`open_registry(uri)` picks the backend by URI:
    a local directory     `LocalRegistry` (components/registry/local.py): `vNNNN/` version
                          directories and `aliases.json`
    vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH
                          `VertexRegistry` (components/registry/vertex.py): versions of the
                          Vertex AI model ID; model directories uploaded under `artifacts`

Both store and return a model directory (components/registry/model_files.py): the model file, its
record with SHA-256 and the files registration writes beside them, and both refuse a model
file whose SHA-256 differs from the record.

Promotion is a compare-and-set: `register_as_champion` moves the alias only if the champion
is still the version the new model was evaluated against, so of two runs that evaluated at
once only the first promotes and the second is registered unpromoted, saying why. A step of
a local run that has stopped changes nothing (`live_run.require_live`, checked under the
lock): an orphaned registration step never promotes.

May import: the shared modules (settings, errors, local_files). It stores and hashes model
files and knows nothing of what a model is; `container` is what a registered version
promises of its serving container.
"""

from components.errors import RegistryError
from components.registry.local import LocalRegistry
from components.registry.model_files import MODEL_FILE, RECORD_FILE, file_sha256, save_model
from components.registry.versions import (
    CHAMPION,
    ModelVersion,
    Registry,
    champion_changed,
    data_fingerprint,
    library_versions,
    load_model_directory,
)

__all__ = [
    "CHAMPION",
    "MODEL_FILE",
    "RECORD_FILE",
    "LocalRegistry",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "champion_changed",
    "data_fingerprint",
    "file_sha256",
    "library_versions",
    "load_model_directory",
    "open_registry",
    "save_model",
]


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
