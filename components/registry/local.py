"""The local model registry: numbered version directories with a `champion` alias.

Layout under the registry directory:
    v0001/model.joblib     the fitted scikit-learn Pipeline
    v0001/version.json     sha256, metrics, threshold, data fingerprint, libraries, run id, ...
    v0001/...              files registered beside the model (reference profile, evaluation)
    aliases.json           {"champion": 1}
    .lock                  locked (flock) by the run registering a version or moving an alias

A version directory without `version.json` is incomplete (being written, or left by a write
that failed and could not clean up): readers ignore it. Everything a version is read from
must lie inside the registry directory: a link out of it is refused.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import RegistryError
from components.local_files import LockTimeout, exclusive_lock
from components.registry.live_run import require_live
from components.registry.model_files import (
    MODEL_FILE,
    RECORD_FILE,
    checked_model_bytes,
    file_sha256,
    read_json,
    read_record,
    write_json,
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

ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
LOCK_TIMEOUT = 300.0
"""Seconds a run waits for another run's registration (a copy of a model directory)."""
_VERSION_DIRECTORY = re.compile(r"v([0-9]+)")
_VERSION_REF = re.compile(r"v?([0-9]+)")

log = logging.getLogger(__name__)


class LocalRegistry:
    """Numbered model versions in a directory, with a `champion` alias."""

    def __init__(self, root: Path | str, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def register(self, directory: Path, **record: Any) -> ModelVersion:
        """Copy the model directory in as the next version (see `Registry.register`)."""
        with self._locked():
            return self._register(directory, record)

    def register_as_champion(
        self, directory: Path, *, replacing: int | None, **record: Any
    ) -> ModelVersion:
        """See `Registry.register_as_champion`: under the lock, so no other run can move
        the alias between the check and the move."""
        with self._locked():
            current = self._champion_version()
            if current == replacing:
                record["promoted"] = True
            else:
                reason = champion_changed(record["promotion_reason"], current, replacing)
                record |= {"promoted": False, "promotion_reason": reason}
                log.warning("%s", reason)
            entry = self._register(directory, record)
            if entry.promoted:
                try:
                    self._set_champion(entry.version)
                except OSError as exc:
                    # All or nothing: a version recorded as promoted that is not champion
                    # would mislead every later reader.
                    shutil.rmtree(self._directory(entry.version), ignore_errors=True)
                    raise self._unchanged(exc, "register a model in", ALIASES_FILE) from exc
            return entry

    def _register(self, directory: Path, record: dict[str, Any]) -> ModelVersion:
        if not (directory / MODEL_FILE).is_file():
            raise RegistryError(f"{directory} has no {MODEL_FILE}: nothing to register")
        version = self._claim_next_version()
        target = self._directory(version)
        try:
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
        except BaseException as exc:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, OSError):
                raise self._unchanged(exc, "register a model in", target.name) from exc
            raise
        return entry

    def _unchanged(self, exc: OSError, doing: str, writing: str) -> RegistryError:
        """A failed write of `writing` (a full disk, a read-only directory), as one line."""
        return RegistryError(
            f"could not {doing} {self.root}: {exc.strerror or exc} "
            f"({exc.filename or self.root / writing}); the registry is unchanged"
        )

    def _claim_next_version(self) -> int:
        """mkdir is atomic: a number is never given twice, even to a writer without the lock."""
        version = max(self._numbered_directories(), default=0) + 1
        while True:
            try:
                self._directory(version).mkdir()
                return version
            except FileExistsError:
                version += 1

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's lock (see `exclusive_lock`), waiting up to `lock_timeout`
        seconds for another run that holds it."""
        path = self.root / LOCK_FILE
        waited: list[str] = []

        def waiting(holder: str) -> None:
            log.warning(
                "registry %s is locked by %s, which is registering a model or moving an "
                "alias: waiting up to %gs",
                self.root,
                holder,
                self.lock_timeout,
            )
            waited.append(holder)

        with ExitStack() as held:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                held.enter_context(
                    exclusive_lock(path, timeout=self.lock_timeout, on_wait=waiting, announce=True)
                )
            except LockTimeout as exc:
                raise RegistryError(
                    f"registry {self.root} is still locked by {exc.holder} after "
                    f"{self.lock_timeout:g}s: nothing was changed; re-run when that run has "
                    "finished"
                ) from None
            except OSError as exc:
                raise RegistryError(
                    f"cannot open the registry lock {path}: {exc.strerror or exc}"
                ) from exc
            if waited:
                log.warning("registry %s: lock acquired", self.root)
            # Under the lock: a run stopped while this step waited for it changes nothing.
            require_live(f"change the registry {self.root}")
            yield

    def _numbered_directories(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return [
            int(match[1])
            for path in self.root.iterdir()
            if (match := _VERSION_DIRECTORY.fullmatch(path.name)) and path.is_dir()
        ]

    def versions(self) -> list[int]:
        """The registered versions (incomplete version directories are not)."""
        return sorted(
            v for v in self._numbered_directories() if (self._directory(v) / RECORD_FILE).exists()
        )

    def get(self, ref: int | str) -> ModelVersion:
        """A version by number (`3`, `"3"`, `"v3"`) or alias (`"champion"`)."""
        version = self._resolve(ref)
        directory = self._directory(version)
        path = directory / RECORD_FILE
        if not path.is_file():
            if isinstance(ref, str) and ref in self._aliases():
                raise RegistryError(
                    f"alias {ref!r} in {self.root / ALIASES_FILE} names model version "
                    f"{version}, which is not registered in {self.root}: the alias file is "
                    "damaged"
                )
            raise RegistryError(f"model version {version} is not registered in {self.root}")
        self._refuse_links_out(directory)
        entry = ModelVersion.from_record(read_record(directory), path)
        if entry.version != version:
            raise RegistryError(
                f"{path} records version {entry.version}, not {version}: refusing a record "
                "that belongs elsewhere"
            )
        return entry

    def champion(self) -> ModelVersion | None:
        return self.get(CHAMPION) if CHAMPION in self._aliases() else None

    def load_model(self, ref: int | str) -> tuple[Pipeline, ModelVersion]:
        entry = self.get(ref)
        return load_model_directory(self._directory(entry.version), sha256=entry.sha256)

    def fetch(self, ref: int | str, directory: Path) -> ModelVersion:
        """Copy a version's directory into `directory`; the model bytes written are the
        bytes checked."""
        entry = self.get(ref)
        source = self._directory(entry.version)
        content, _ = checked_model_bytes(source, sha256=entry.sha256)
        directory.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.name != MODEL_FILE:
                shutil.copyfile(path, directory / path.name)
        (directory / MODEL_FILE).write_bytes(content)
        return entry

    def resource_name(self, version: int) -> str:
        return str(self._directory(version).resolve())

    def model_path(self, version: int) -> Path:
        return self._directory(version) / MODEL_FILE

    def promote(self, version: int) -> None:
        with self._locked():
            self.get(version)  # must exist
            try:
                self._set_champion(version)
            except OSError as exc:
                raise self._unchanged(exc, "move the champion alias in", ALIASES_FILE) from exc

    def _set_champion(self, version: int) -> None:
        write_json(self.root / ALIASES_FILE, self._aliases() | {CHAMPION: version})

    def _champion_version(self) -> int | None:
        return self._aliases().get(CHAMPION)

    def _resolve(self, ref: int | str) -> int:
        if isinstance(ref, int):
            version = ref
        elif ref in (aliases := self._aliases()):
            return aliases[ref]
        elif match := _VERSION_REF.fullmatch(ref):
            version = int(match[1])
        elif ref == CHAMPION:
            raise RegistryError(f"no champion model in {self.root}: train one first")
        else:
            raise RegistryError(f"model {ref!r} is neither a version number nor an alias")
        if version < 1:
            raise RegistryError(f"model version {version}: versions are numbered from 1")
        return version

    def _aliases(self) -> dict[str, int]:
        """The alias file, refused unless every alias names a version number."""
        path = self.root / ALIASES_FILE
        if not path.exists():
            return {}
        aliases = read_json(path, "alias file")
        if not isinstance(aliases, dict):
            raise RegistryError(
                f'{path} is not an alias file (expected {{"{CHAMPION}": N}}, found '
                f"{type(aliases).__name__}): it is damaged"
            )
        for name, version in aliases.items():
            if type(version) is not int or version < 1:
                raise RegistryError(
                    f"{path}: alias {name!r} is {version!r}, not a version number: the alias "
                    f"file is damaged (registered versions: {self.versions() or 'none'})"
                )
        return aliases

    def _refuse_links_out(self, directory: Path) -> None:
        """Models load only from this registry: no part of a version may link elsewhere."""
        root = self.root.resolve()
        for path in (directory, *directory.iterdir()):
            if not path.resolve().is_relative_to(root):
                raise RegistryError(
                    f"{path} links to {path.resolve()}, outside the registry {self.root}: "
                    "refusing to load a model from elsewhere"
                )

    def _directory(self, version: int) -> Path:
        return self.root / f"v{version:04d}"
