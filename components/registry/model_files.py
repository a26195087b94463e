"""A model directory: the one place that writes a model file and loads one back, checked.

A registered version's directory holds
    model.joblib           the fitted scikit-learn Pipeline (a pickle)
    version.json           its record: sha256 of model.joblib, metrics, threshold, run id, ...
and any file registration adds beside them (the drift reference profile). Every registry
backend stores and returns such a directory; a cloud backend downloads it first, then
calls the same check here.

Model files are pickles, so a model is unpickled only if its SHA-256 matches the record,
and the bytes hashed are the bytes unpickled: the file cannot be swapped between the
check and the load. Nor is it unpickled by other versions of the libraries that pickled it
(`check_library_versions`), unless the `accept_library_mismatch` setting says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib

from components.errors import RegistryError
from components.local_files import write_whole

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MODEL_FILE = "model.joblib"
RECORD_FILE = "version.json"
EVALUATION_FILE = "evaluation.json"
"""The test-set evaluation (metrics, confusion matrix), registered beside the model."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
PICKLED_LIBRARIES = ("scikit-learn", "numpy", "joblib")
"""The libraries whose classes a model file holds, compared with the running ones before
it is unpickled: scikit-learn's estimators (scikit-learn supports unpickling only with the
version that pickled), numpy's arrays and random states (numpy 2 moved the modules its
pickles name), joblib's file format. Not imbalanced-learn (used in training only: the saved
pipeline has no imblearn step, and the serving image does not install it), nor pandas or
scipy, which the file names no class of (tests/test_library_check.py proves the list)."""
log = logging.getLogger(__name__)


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


def write_json(path: Path, content: dict[str, Any]) -> Path:
    """Write `content` whole (see `write_whole`): a reader never sees half a file."""
    write_whole(path, json.dumps(content, indent=2, default=str))
    return path


def write_record(directory: Path, record: dict[str, Any]) -> Path:
    return write_json(directory / RECORD_FILE, record)


def read_json(path: Path, what: str, *, source: str = "") -> Any:
    """A JSON file's content, or RegistryError naming the file (or `source`) when it is
    not JSON."""
    try:
        return json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start + 1} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}" if exc.doc.strip() else "it is empty"
    raise RegistryError(f"{source or path} is not valid JSON ({where}): the {what} is damaged")


def json_value_shown(value: Any) -> str:
    """A value read from a JSON file as a reader of the file knows it: its JSON text,
    shortened, and its JSON type (for messages about a damaged file)."""
    kind = {
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str)
    return f"{text[:40] + '…' if len(text) > 40 else text} ({kind})"


def read_record(directory: Path, *, source: str = "") -> dict[str, Any]:
    """A version's record, refused unless it is a JSON object with a SHA-256. `source`:
    where the record came from, for messages (default: the file read)."""
    path = directory / RECORD_FILE
    if not path.is_file():
        raise RegistryError(f"{directory} has no {RECORD_FILE}: not a registered model version")
    record = read_json(path, "model version's record", source=source)
    if not isinstance(record, dict) or not _SHA256.fullmatch(str(record.get("sha256", ""))):
        raise RegistryError(
            f"{source or path} is not a model version record (no SHA-256 of {MODEL_FILE}): "
            "the record is damaged"
        )
    return record


def checked_model_bytes(
    directory: Path, *, sha256: str | None = None, source: str = ""
) -> tuple[bytes, dict[str, Any]]:
    """The model file's bytes and its record, refusing bytes whose SHA-256 differs from
    the one recorded at registration, or from `sha256` when given (the registry's record
    of a version copied out of it: a copied record proves nothing on its own). `source`:
    where the record came from, for messages."""
    record = read_record(directory, source=source)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise RegistryError(f"{directory} has no {MODEL_FILE}: not a registered model version")
    content = path.read_bytes()
    for expected, whose in ((record["sha256"], "registry records"), (sha256, "its run fetched")):
        if expected is not None:
            _refuse_changed(path, content, expected, whose, since="registration")
    return content, record


def load_model_file(path: Path, sha256: str) -> Pipeline:
    """The pipeline in a training step's model file, unpickled only if its bytes have the
    SHA-256 the step recorded in the artifact's metadata."""
    content = path.read_bytes()
    _refuse_changed(path, content, sha256, "its training step recorded", since="training")
    return _unpickled(path, content)


def _unpickled(path: Path, content: bytes) -> Pipeline:
    """The fitted model in a model file's bytes, whose hash was checked: bytes damaged
    before they were hashed (a bad copy registered, a hash rewritten to match) are refused
    naming the file, as is anything but a fitted model."""
    try:
        model = joblib.load(io.BytesIO(content))
    except Exception:  # any error unpickling damaged bytes can raise
        log.debug("unpickling %s failed", path, exc_info=True)
        raise RegistryError(
            f"{path} is not a readable model file though its SHA-256 is the one recorded: it "
            "was damaged before it was hashed; register the model again (re-run training)"
        ) from None
    if not hasattr(model, "predict_proba"):
        raise RegistryError(
            f"{path} holds a {type(model).__name__}, not a fitted model: register the model "
            "again (re-run training)"
        )
    return model


def _refuse_changed(path: Path, content: bytes, expected: str, whose: str, *, since: str) -> None:
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise RegistryError(
            f"{path} has SHA-256 {actual[:12]}…, {whose} {expected[:12]}…: "
            f"refusing to load a model file that changed after {since}"
        )


def check_library_versions(recorded: Mapping[str, str], *, accept: bool, model: str) -> None:
    """Refuse a model whose record says it was pickled with other versions of
    `PICKLED_LIBRARIES` than the running ones (a library the record does not name is not
    compared: records made before it was tracked); with `accept`, log a warning instead.
    `model`: how messages name it."""
    differing = [
        f"{name} {recorded[name]} (running {running})"
        for name in PICKLED_LIBRARIES
        if name in recorded and recorded[name] != (running := metadata.version(name))
    ]
    if not differing:
        return
    made = f"{model} was pickled with {', '.join(differing)}"
    if accept:
        log.warning("%s: unpickling it all the same, as accept_library_mismatch is set", made)
        return
    raise RegistryError(
        f"{made}: refusing to unpickle it; retrain it with this image, or set "
        "accept_library_mismatch = true (CHURN_ACCEPT_LIBRARY_MISMATCH=true) to use it anyway"
    )


def load_checked_model(
    directory: Path, *, sha256: str | None = None, accept_library_mismatch: bool = False
) -> tuple[Pipeline, dict[str, Any]]:
    """The fitted pipeline in a model directory and its record, after the hash check
    (see `checked_model_bytes`) and the library check (`check_library_versions`)."""
    content, record = checked_model_bytes(directory, sha256=sha256)
    check_library_versions(
        record.get("library_versions") or {},
        accept=accept_library_mismatch,
        model=f"model v{record.get('version', '?')} ({directory})",
    )
    return _unpickled(directory / MODEL_FILE, content), record
