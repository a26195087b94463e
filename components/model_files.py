"""A model directory: the one place that writes a model file and loads one back, checked.

A registered version's directory holds
    model.joblib           the fitted scikit-learn Pipeline (a pickle)
    version.json           its record: sha256 of model.joblib, metrics, threshold, run id, ...
and any file registration adds beside them (the drift reference profile). Every registry
backend stores and returns such a directory; a cloud backend downloads it first, then
calls the same check here.

Model files are pickles, so a model is unpickled only if its SHA-256 matches the record,
and the bytes hashed are the bytes unpickled: the file cannot be swapped between the
check and the load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
from sklearn.pipeline import Pipeline

from components.errors import RegistryError

MODEL_FILE = "model.joblib"
RECORD_FILE = "version.json"
EVALUATION_FILE = "evaluation.json"
"""The test-set evaluation (metrics, confusion matrix), registered beside the model."""


def save_model(model: Pipeline, directory: Path) -> Path:
    """Write the model file into `directory` (created if needed) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    joblib.dump(model, path)
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(directory: Path, record: dict[str, Any]) -> Path:
    """Write-then-rename, so a reader never sees half a record."""
    path = directory / RECORD_FILE
    handle, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(record, out, indent=2, default=str)
    os.replace(tmp, path)
    return path


def read_record(directory: Path) -> dict[str, Any]:
    path = directory / RECORD_FILE
    if not path.is_file():
        raise RegistryError(f"{directory} has no {RECORD_FILE}: not a registered model version")
    return json.loads(path.read_text())


def checked_model_bytes(directory: Path) -> tuple[bytes, dict[str, Any]]:
    """The model file's bytes and its record, refusing bytes whose SHA-256 differs from
    the one recorded at registration."""
    record = read_record(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise RegistryError(f"{directory} has no {MODEL_FILE}: not a registered model version")
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != record["sha256"]:
        raise RegistryError(
            f"{path} has SHA-256 {actual[:12]}…, registry records {record['sha256'][:12]}…: "
            "refusing to load a model file that changed after registration"
        )
    return content, record


def load_checked_model(directory: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The fitted pipeline in a model directory and its record, after the hash check."""
    content, record = checked_model_bytes(directory)
    return joblib.load(io.BytesIO(content)), record
