"""The local model registry: numbered version directories with a `champion` alias.

Layout under the registry directory:
    v0001/model.joblib     the fitted scikit-learn Pipeline
    v0001/version.json     sha256, metrics, threshold, data fingerprint, libraries, run id, ...
    v0001/...              files registered beside the model (reference profile, evaluation)
    aliases.json           {"champion": 1}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from components.errors import RegistryError
from components.model_files import (
    MODEL_FILE,
    RECORD_FILE,
    checked_model_bytes,
    file_sha256,
    write_record,
)
from components.registry import CHAMPION, ModelVersion, load_model_directory


class LocalRegistry:
    """Numbered model versions in a directory, with a `champion` alias."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def register(self, directory: Path, **record: Any) -> ModelVersion:
        """Copy the model directory in as the next version (see `Registry.register`)."""
        if not (directory / MODEL_FILE).is_file():
            raise RegistryError(f"{directory} has no {MODEL_FILE}: nothing to register")
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._claim_next_version()
        target = self._directory(version)
        for path in directory.iterdir():
            if path.is_file() and path.name != RECORD_FILE:
                shutil.copyfile(path, target / path.name)
        entry = ModelVersion(
            version=version,
            sha256=file_sha256(target / MODEL_FILE),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            **record,
        )
        # The record last: a version directory with a record is complete.
        write_record(target, asdict(entry))
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
        return load_model_directory(self._directory(self.get(ref).version))

    def fetch(self, ref: int | str, directory: Path) -> ModelVersion:
        """Copy a version's directory into `directory`; the model bytes written are the
        bytes checked."""
        source = self._directory(self.get(ref).version)
        content, record = checked_model_bytes(source)
        directory.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.name != MODEL_FILE:
                shutil.copyfile(path, directory / path.name)
        (directory / MODEL_FILE).write_bytes(content)
        return ModelVersion(**record)

    def resource_name(self, version: int) -> str:
        return str(self._directory(version).resolve())

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
