"""The Vertex AI Model Registry backend: versions of one Vertex model, `champion` an alias.

URI: `vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH`
    ID          the parent model; the first registration creates it with this id (a
                lowercase letter, then up to 62 of a-z 0-9 _ -); every later one uploads a
                new version under it
    artifacts   where model directories are uploaded (`<artifacts>/<ID>/<time>-<nonce>/`);
                needed to register; when given, a version whose files lie elsewhere is
                refused before anything is downloaded
    api_endpoint  optional API host instead of `R-aiplatform.googleapis.com` (Private
                Service Connect; the tests' stand-in)

A version is its Vertex version id (1, 2, ...). Each carries our serving image as its
container, labels (run id, best model family, data fingerprint) and the test metrics as a
model evaluation (the console's Evaluate tab). Versions are found by resource name or alias
(`models/ID@champion`), never by display name, which two models may share. Reads download
the version's directory from its `artifactUri` and apply the local hash check to it.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from components.errors import RegistryError, google_reason
from components.registry.container import HEALTH_ROUTE, MODEL_SHA256_VARIABLE, PREDICT_ROUTE
from components.registry.live_run import require_live
from components.registry.model_files import (
    EVALUATION_FILE,
    MODEL_FILE,
    RECORD_FILE,
    checked_model_bytes,
    file_sha256,
    read_record,
    write_record,
)
from components.registry.versions import (
    CHAMPION,
    ModelVersion,
    champion_changed,
    load_model_directory,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

CLASSIFICATION_METRICS_SCHEMA = (
    "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
)
CLASS_NAMES = ("stays", "churns")
"""Confusion-matrix classes in label order (0, 1), as the evaluate step reports them."""
SERVING_PORT = 8080
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_URI = re.compile(
    # Project and region as given: Vertex checks them, and placeholders (`--project P`
    # for a dry run) must pass here.
    r"vertex://projects/(?P<project>[^/?]+)/locations/(?P<location>[^/?]+)"
    r"/models/(?P<model>[^/?@]+)"
)
_QUERY_KEYS = ("artifacts", "api_endpoint")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")
_OPERATION_TIMEOUT = 600.0

log = logging.getLogger(__name__)


def parse_vertex_uri(uri: str) -> dict[str, str]:
    """The parts of a `vertex://` registry URI (see the module docstring), or RegistryError
    naming what is wrong."""
    form = "vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH"
    parts = urlsplit(uri)
    match = _URI.fullmatch(uri.split("?", 1)[0])
    if not match:
        raise RegistryError(f"registry {uri!r} is not of the form {form}")
    if not _MODEL_ID.fullmatch(match["model"]):
        raise RegistryError(
            f"registry {uri!r}: model id {match['model']!r} must be 1-63 of a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise RegistryError(
            f"registry {uri!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(_QUERY_KEYS)}"
        )
    values = {key: query[key][-1] for key in query}
    artifacts = values.get("artifacts", "").rstrip("/")
    if artifacts and not re.fullmatch(r"gs://[^/\s]+(/.*)?", artifacts):
        raise RegistryError(
            f"registry {uri!r}: artifacts must be a gs://BUCKET/PATH URI, got {artifacts!r}"
        )
    return match.groupdict() | {
        "artifacts": artifacts,
        "api_endpoint": values.get("api_endpoint", ""),
    }


def vertex_label(value: str) -> str:
    """`value` as a Vertex label value: lowercase letters, digits, `_` and `-`, at most 63
    characters (anything else becomes `-`)."""
    return _LABEL_INVALID.sub("-", value.lower())[:63]


def classification_evaluation(evaluation: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The evaluate step's test-set results in Vertex's classification metrics schema, so
    the console's Evaluate tab shows them; the confidence metrics are those at the model's
    decision threshold."""
    metrics = evaluation["metrics"]
    return {
        "auRoc": metrics["roc_auc"],
        "auPrc": metrics["pr_auc"],
        "confidenceMetrics": [
            {
                "confidenceThreshold": threshold,
                "precision": metrics["precision"],
                "recall": metrics["recall"],
                "f1Score": metrics["f1"],
            }
        ],
        "confusionMatrix": {
            "annotationSpecs": [{"displayName": name} for name in CLASS_NAMES],
            "rows": evaluation["confusion_matrix"],
        },
    }


class VertexRegistry:
    """Model versions in Vertex AI Model Registry, directories in Cloud Storage."""

    def __init__(self, uri: str, *, serving_image: str = "") -> None:
        parts = parse_vertex_uri(uri)
        self.uri = uri
        self.project = parts["project"]
        self.location = parts["location"]
        self.model_id = parts["model"]
        self.artifacts = parts["artifacts"]
        self.api_endpoint = parts["api_endpoint"] or f"{self.location}-aiplatform.googleapis.com"
        self.model_name = (
            f"projects/{self.project}/locations/{self.location}/models/{self.model_id}"
        )
        self._serving_image = serving_image
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The Model Service client, made on first use (REST: works wherever HTTPS does)."""
        if self._client is None:
            from google.cloud import aiplatform_v1

            self._client = aiplatform_v1.ModelServiceClient(
                transport="rest", client_options={"api_endpoint": self.api_endpoint}
            )
        return self._client

    @property
    def serving_image(self) -> str:
        if self._serving_image:
            return self._serving_image
        from components.settings import Settings

        return Settings(project=self.project, region=self.location).serving_image_uri

    def register(self, directory: Path, **record: Any) -> ModelVersion:
        """Upload the directory to `artifacts`, then upload a model version pointing at it
        (creating the model on first use) and import its evaluation."""
        return self._register(directory, record)

    def register_as_champion(
        self, directory: Path, *, replacing: int | None, **record: Any
    ) -> ModelVersion:
        """See `Registry.register_as_champion`."""
        record["promoted"] = True
        return self._register(directory, record, promote=True, replacing=replacing)

    def _register(
        self,
        directory: Path,
        record: dict[str, Any],
        *,
        promote: bool = False,
        replacing: int | None = None,
    ) -> ModelVersion:
        """With `promote`, move the alias to the new version if the champion is still
        `replacing`."""
        if not self.artifacts:
            raise RegistryError(
                f"registry {self.uri!r} has no artifacts=gs://BUCKET/PATH: nowhere to upload "
                "the model directory"
            )
        if not (directory / MODEL_FILE).is_file():
            raise RegistryError(f"{directory} has no {MODEL_FILE}: nothing to register")
        require_live(f"register a model in {self.model_name}")
        created = datetime.now(UTC)
        entry = ModelVersion(
            version=0,  # Vertex numbers the version on upload; rewritten below
            sha256=file_sha256(directory / MODEL_FILE),
            created_at=created.isoformat(timespec="seconds"),
            **record,
        )
        write_record(directory, asdict(entry))
        artifact_uri = (
            f"{self.artifacts}/{self.model_id}/"
            f"{created.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        )
        _upload_directory(directory, artifact_uri, project=self.project)
        entry.version = self._upload_version(artifact_uri, entry)
        if promote:
            # Vertex has no lock across processes, so the champion is re-read right before
            # the alias moves. Left open: another run moving the alias between this read
            # and the move (one request apart; without the re-check, a whole training run).
            current = self._champion_version()
            if current == replacing:
                require_live(f"promote model v{entry.version} of {self.model_name}")
                self.promote(entry.version)
            else:
                entry.promoted = False
                entry.promotion_reason = champion_changed(
                    entry.promotion_reason, current, replacing
                )
                log.warning("%s", entry.promotion_reason)
        write_record(directory, asdict(entry))
        _upload_directory(directory, artifact_uri, project=self.project, only=RECORD_FILE)
        if (directory / EVALUATION_FILE).is_file():
            evaluation = json.loads((directory / EVALUATION_FILE).read_text())
            self._import_evaluation(entry, evaluation)
        return entry

    def _upload_version(self, artifact_uri: str, entry: ModelVersion) -> int:
        from google.api_core import exceptions
        from google.cloud import aiplatform_v1

        model = aiplatform_v1.Model(
            display_name=self.model_id,
            artifact_uri=artifact_uri,
            container_spec=aiplatform_v1.ModelContainerSpec(
                image_uri=self.serving_image,
                predict_route=PREDICT_ROUTE,
                health_route=HEALTH_ROUTE,
                ports=[aiplatform_v1.Port(container_port=SERVING_PORT)],
                env=[aiplatform_v1.EnvVar(name=MODEL_SHA256_VARIABLE, value=entry.sha256)],
            ),
            labels={
                "run_id": vertex_label(entry.run_id),
                "best_model": vertex_label(entry.best_model),
                "data_fingerprint": vertex_label(entry.data_fingerprint),
            },
            version_description=(
                f"{entry.best_model} from run {entry.run_id}; sha256 {entry.sha256}"
            ),
        )
        parent = f"projects/{self.project}/locations/{self.location}"
        exists = self._model_exists()
        request = aiplatform_v1.UploadModelRequest(
            parent=parent,
            model=model,
            parent_model=self.model_name if exists else "",
            model_id="" if exists else self.model_id,
        )
        try:
            try:
                response = self.client.upload_model(request=request).result(_OPERATION_TIMEOUT)
            except exceptions.AlreadyExists:
                # Another run created the model since we looked: upload under it instead.
                request.model_id, request.parent_model = "", self.model_name
                response = self.client.upload_model(request=request).result(_OPERATION_TIMEOUT)
        except exceptions.GoogleAPICallError as exc:
            # A missing serving image or a missing permission: Vertex's reason, as one line.
            raise RegistryError(
                f"uploading a version of {self.model_name} with serving image "
                f"{self.serving_image} failed: {google_reason(exc)}"
            ) from None
        return int(response.model_version_id)

    def _model_exists(self) -> bool:
        from google.api_core import exceptions

        try:
            self.client.get_model(name=self.model_name)
        except exceptions.NotFound:
            return False
        return True

    def _import_evaluation(self, entry: ModelVersion, evaluation: dict[str, Any]) -> None:
        from google.cloud import aiplatform_v1

        self.client.import_model_evaluation(
            parent=self.resource_name(entry.version),
            model_evaluation=aiplatform_v1.ModelEvaluation(
                display_name=f"test set, run {entry.run_id}",
                metrics_schema_uri=CLASSIFICATION_METRICS_SCHEMA,
                metrics=classification_evaluation(evaluation, entry.threshold),
            ),
        )

    def promote(self, version: int) -> None:
        """Move the `champion` alias to `version` (an alias names one version at a time)."""
        self.client.merge_version_aliases(
            name=self.resource_name(version), version_aliases=[CHAMPION]
        )

    def get(self, ref: int | str) -> ModelVersion:
        model = self._model(ref)
        uri = self._artifact_uri(model)
        with tempfile.TemporaryDirectory(prefix="churn-record-") as scratch:
            _download_directory(uri, Path(scratch), project=self.project, only=RECORD_FILE)
            record = read_record(Path(scratch), source=f"{uri}/{RECORD_FILE}")
            return self._entry(record, model, uri)

    def champion(self) -> ModelVersion | None:
        return None if self._champion_version() is None else self.get(CHAMPION)

    def _champion_version(self) -> int | None:
        from google.api_core import exceptions

        try:
            model = self.client.get_model(name=f"{self.model_name}@{CHAMPION}")
        except exceptions.NotFound:
            return None
        return int(model.version_id)

    def fetch(self, ref: int | str, directory: Path) -> ModelVersion:
        """Download the version's directory into `directory`, then check the model file's
        SHA-256 against the record."""
        model = self._model(ref)
        uri = self._artifact_uri(model)
        _download_directory(uri, directory, project=self.project)
        _, record = checked_model_bytes(directory, source=f"{uri}/{RECORD_FILE}")
        return self._entry(record, model, uri)

    def load_model(self, ref: int | str) -> tuple[Pipeline, ModelVersion]:
        with tempfile.TemporaryDirectory(prefix="churn-model-") as scratch:
            entry = self.fetch(ref, Path(scratch))
            model, _ = load_model_directory(Path(scratch), sha256=entry.sha256)
        return model, entry

    def resource_name(self, version: int) -> str:
        return f"{self.model_name}@{version}"

    def _model(self, ref: int | str) -> Any:
        """The Vertex model version a reference names: `3`, `"3"`, `"v3"` or an alias."""
        from google.api_core import exceptions

        text = str(ref)
        version = text.removeprefix("v") if text.removeprefix("v").isdigit() else text
        try:
            return self.client.get_model(name=f"{self.model_name}@{version}")
        except exceptions.NotFound:
            if version == CHAMPION:
                raise RegistryError(
                    f"no champion model in {self.model_name}: train one first"
                ) from None
            raise RegistryError(
                f"model {ref!r} is neither a version nor an alias of {self.model_name}"
            ) from None

    def _artifact_uri(self, model: Any) -> str:
        """Where a version's files are, refused (before any download) unless under this
        registry's `artifacts` (when set: a registry read-only to this run may omit it)."""
        uri = model.artifact_uri.rstrip("/")
        inside = f"{self.artifacts}/{self.model_id}/" if self.artifacts else "gs://"
        if not uri.startswith(inside) or ".." in uri.split("/"):
            raise RegistryError(
                f"model version {model.version_id} of {self.model_name} has its files at "
                f"{uri!r}, outside {inside}: refusing to load a model from elsewhere"
            )
        return uri

    @staticmethod
    def _entry(record: dict[str, Any], model: Any, uri: str) -> ModelVersion:
        # Vertex's version id is the truth: the record is written before Vertex numbers it.
        version = {"version": int(model.version_id)}
        return ModelVersion.from_record(record | version, f"{uri}/{RECORD_FILE}")


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def _upload_directory(directory: Path, uri: str, *, project: str, only: str | None = None) -> None:
    from google.cloud import storage

    bucket_name, prefix = _bucket_and_prefix(uri)
    bucket = storage.Client(project=project).bucket(bucket_name)
    for path in sorted(directory.iterdir()):
        if path.is_file() and only in (None, path.name):
            bucket.blob(f"{prefix}/{path.name}").upload_from_filename(path)


def _download_directory(
    uri: str, directory: Path, *, project: str, only: str | None = None
) -> None:
    """Copy the files directly under `uri` into `directory` (`only`: just that file)."""
    from google.cloud import storage

    bucket_name, prefix = _bucket_and_prefix(uri)
    client = storage.Client(project=project)
    directory.mkdir(parents=True, exist_ok=True)
    found = False
    for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/", delimiter="/"):
        name = blob.name.rsplit("/", 1)[-1]
        if name and only in (None, name):
            blob.download_to_filename(directory / name)
            found = True
    if not found:
        raise RegistryError(
            f"{uri} has no {only or 'files'}: the model version's directory is missing"
        )
