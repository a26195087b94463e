"""The local model registry and the promotion gate.

Layout under the registry directory:
    v0001/model.joblib     the fitted scikit-learn Pipeline
    v0001/version.json     sha256, metrics, threshold, data fingerprint, libraries, run id, ...
    aliases.json           {"champion": 1}

Model files are pickles, so `load_model` refuses a file whose SHA-256 does not match the
record written when it was registered.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.pipeline import Pipeline

from components.errors import RegistryError

CHAMPION = "champion"
MODEL_FILE = "model.joblib"
RECORD_FILE = "version.json"
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
) -> PromotionDecision:
    """Promote only a model that clears `floor` and beats the champion (scored on the same
    test set) by at least `margin`."""
    if candidate < floor:
        return PromotionDecision(
            False, f"test {metric} {candidate:.4f} is below the floor {floor:.4f}"
        )
    if champion is None:
        return PromotionDecision(
            True, f"no champion yet; test {metric} {candidate:.4f} clears the floor {floor:.4f}"
        )
    if candidate >= champion + margin:
        return PromotionDecision(
            True,
            f"test {metric} {candidate:.4f} beats the champion's {champion:.4f} "
            f"by at least the margin {margin:.4f}",
        )
    return PromotionDecision(
        False,
        f"test {metric} {candidate:.4f} does not beat the champion's {champion:.4f} "
        f"by the margin {margin:.4f}",
    )


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a table (order-sensitive), to tell which data a model saw."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in _TRACKED_LIBRARIES}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: Pipeline, directory: Path) -> Path:
    """Write the model file into `directory` (created if needed) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    joblib.dump(model, path)
    return path


def open_registry(uri: str) -> LocalRegistry:
    """The registry a URI names: a local directory (Vertex AI Model Registry URIs,
    `vertex://...`, are not supported yet and are refused with that message)."""
    if "://" in uri:
        raise RegistryError(f"registry {uri!r}: only local directories are supported so far")
    return LocalRegistry(uri)


def load_model_directory(directory: Path) -> tuple[Pipeline, ModelVersion]:
    """The model in a registry version's directory (`model.joblib` + `version.json`).

    The file is a pickle, so it is unpickled only if its SHA-256 matches the one recorded
    when it was registered; the bytes hashed are the bytes unpickled, so the file cannot be
    swapped between the check and the load.
    """
    content, entry = _checked_model_file(directory)
    return joblib.load(io.BytesIO(content)), entry


def _checked_model_file(directory: Path) -> tuple[bytes, ModelVersion]:
    """The model file's bytes and its record, refusing bytes whose SHA-256 differs from
    the one recorded at registration."""
    for name in (RECORD_FILE, MODEL_FILE):
        if not (directory / name).is_file():
            raise RegistryError(f"{directory} has no {name}: not a registered model version")
    entry = ModelVersion(**json.loads((directory / RECORD_FILE).read_text()))
    path = directory / MODEL_FILE
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != entry.sha256:
        raise RegistryError(
            f"{path} has SHA-256 {actual[:12]}…, registry records {entry.sha256[:12]}…: "
            "refusing to load a model file that changed after registration"
        )
    return content, entry


class LocalRegistry:
    """Numbered model versions in a directory, with a `champion` alias."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def register(self, model_file: Path, **record: Any) -> ModelVersion:
        """Copy `model_file` in as the next version; `record` fills `ModelVersion`'s
        fields other than version, sha256 and created_at."""
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._claim_next_version()
        directory = self._directory(version)
        shutil.copyfile(model_file, directory / MODEL_FILE)
        entry = ModelVersion(
            version=version,
            sha256=file_sha256(directory / MODEL_FILE),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            **record,
        )
        self._write_json(directory / RECORD_FILE, asdict(entry))
        return entry

    def _claim_next_version(self) -> int:
        """mkdir is atomic, so two runs registering at once get distinct numbers."""
        version = max(self.versions(), default=0) + 1
        while True:
            try:
                self._directory(version).mkdir()
                return version
            except FileExistsError:
                version += 1

    def versions(self) -> list[int]:
        if not self.root.exists():
            return []
        return sorted(int(p.name[1:]) for p in self.root.glob("v[0-9]*") if p.is_dir())

    def get(self, ref: int | str) -> ModelVersion:
        """A version by number (`3`, `"3"`, `"v3"`) or alias (`"champion"`)."""
        version = self._resolve(ref)
        path = self._directory(version) / RECORD_FILE
        if not path.exists():
            raise RegistryError(f"model version {version} is not registered in {self.root}")
        return ModelVersion(**json.loads(path.read_text()))

    def champion(self) -> ModelVersion | None:
        return self.get(CHAMPION) if CHAMPION in self._aliases() else None

    def load_model(self, ref: int | str) -> tuple[Pipeline, ModelVersion]:
        """The fitted pipeline of a version, after checking the file's SHA-256."""
        return load_model_directory(self._directory(self.get(ref).version))

    def copy_model(self, ref: int | str, directory: Path) -> ModelVersion:
        """Copy a version's model file into `directory` after checking its SHA-256 (the
        bytes checked are the bytes written); return its record."""
        content, entry = _checked_model_file(self._directory(self.get(ref).version))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(content)
        return entry

    def model_path(self, version: int) -> Path:
        return self._directory(version) / MODEL_FILE

    def promote(self, version: int) -> None:
        self.get(version)  # must exist
        aliases = self._aliases() | {CHAMPION: version}
        self._write_json(self.root / "aliases.json", aliases)

    def _resolve(self, ref: int | str) -> int:
        if isinstance(ref, int):
            return ref
        aliases = self._aliases()
        if ref in aliases:
            return int(aliases[ref])
        text = ref.removeprefix("v")
        if text.isdigit():
            return int(text)
        if ref == CHAMPION:
            raise RegistryError(f"no champion model in {self.root}: train one first")
        raise RegistryError(f"model {ref!r} is neither a version number nor an alias")

    def _aliases(self) -> dict[str, int]:
        path = self.root / "aliases.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _directory(self, version: int) -> Path:
        return self.root / f"v{version:04d}"

    @staticmethod
    def _write_json(path: Path, content: dict[str, Any]) -> None:
        """Write-then-rename, so a reader never sees half a file."""
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(content, out, indent=2, default=str)
        os.replace(tmp, path)
