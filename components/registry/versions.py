"""What every registry backend shares: a model version's record, the backend interface,
the `champion` alias and loading a version's model directory with its checks."""

from __future__ import annotations

import hashlib
from dataclasses import MISSING, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from components.errors import RegistryError
from components.registry.model_files import (
    PICKLED_LIBRARIES,
    RECORD_FILE,
    json_value_shown,
    load_checked_model,
)

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

CHAMPION = "champion"
# Recorded at registration: those a model file's unpickling depends on, and those that
# shaped its training.
_TRACKED_LIBRARIES = (*PICKLED_LIBRARIES, "imbalanced-learn", "pandas", "kfp")


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
    holdout: dict[str, Any] = field(default_factory=dict)
    """The persistent holdout the version was tested on (`salt`, `share`); empty: a random
    split. Later versions compare with it on the whole holdout only if theirs is the same."""

    @classmethod
    def from_record(cls, record: dict[str, Any], source: object) -> ModelVersion:
        """The version a record read from `source` describes, or RegistryError naming it."""
        known = {f.name for f in fields(cls)}
        required = {
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        }
        unknown, missing = sorted(set(record) - known), sorted(required - set(record))
        if unknown or missing or type(record["version"]) is not int:
            raise RegistryError(
                f"{source} is not a model version record (unknown fields: {unknown}, "
                f"missing: {missing}, version {record.get('version')!r}): it is damaged"
            )
        for name, value in record.items():
            expected, fits = _RECORD_FIELDS[name]
            if not fits(value):
                raise RegistryError(
                    f"{source}: field `{name}` is {json_value_shown(value)}, expected "
                    f"{expected}: the model version record is damaged"
                )
        return cls(**record)


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _text_map(value: Any, values: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and values(v) for k, v in value.items()
    )


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


# What each field of a record must hold, as a reader is told, and the check. JSON's types:
# a bool is no number here, and a number in quotes is text.
_RECORD_FIELDS: dict[str, tuple[str, Any]] = {
    "version": ("a whole number", lambda v: type(v) is int and v >= 0),
    "sha256": ("text", _is_text),
    "best_model": ("text", _is_text),
    "threshold": (
        "a number from 0 to 1",
        lambda v: _number(v) and 0.0 <= v <= 1.0,  # NaN fails both comparisons
    ),
    # A metric that could not be measured is null.
    "metrics": ("an object of numbers", lambda v: _text_map(v, lambda m: m is None or _number(m))),
    "data_fingerprint": ("text", _is_text),
    "run_id": ("text", _is_text),
    "created_at": ("text", _is_text),
    "library_versions": ("an object of texts", lambda v: _text_map(v, _is_text)),
    "params": ("an object", lambda v: _text_map(v, lambda _: True)),
    "promoted": ("true or false", lambda v: type(v) is bool),
    "promotion_reason": ("text", _is_text),
}


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

    def register_as_champion(
        self, directory: Path, *, replacing: int | None, **record: Any
    ) -> ModelVersion:
        """Register as `register` does and move the `champion` alias to the new version,
        if the champion is still `replacing` (the version the promotion gate compared the
        model with; None: there was none). If another run moved the alias meanwhile, the
        version is registered with `promoted=False` and `champion_changed`'s reason."""
        ...

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


def champion_changed(reason: str, current: int | None, replacing: int | None) -> str:
    """Why a model that passed the gate was not promoted: the champion it was compared
    with is no longer the champion. Re-evaluating here would need the test set, which the
    register step does not have: the next run compares it honestly."""
    was = f"v{replacing}" if replacing is not None else "no champion"
    now = f"v{current}" if current is not None else "none"
    return (
        f"not promoted: the champion changed to {now} while this run evaluated against "
        f"{was} ({reason}); it was not compared with {now}: re-run training to compare"
    )


def load_model_directory(
    directory: Path, *, sha256: str | None = None, accept_library_mismatch: bool = False
) -> tuple[Pipeline, ModelVersion]:
    """The model in a registry version's directory (`model.joblib` + `version.json`),
    unpickled only if its SHA-256 matches the record (and `sha256`, when given) and the
    libraries that pickled it are the running ones (unless `accept_library_mismatch`)."""
    model, record = load_checked_model(
        Path(directory), sha256=sha256, accept_library_mismatch=accept_library_mismatch
    )
    return model, ModelVersion.from_record(record, Path(directory) / RECORD_FILE)


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a table (order-sensitive), to tell which data a model saw."""
    import pandas as pd

    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in _TRACKED_LIBRARIES}
