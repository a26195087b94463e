"""Damaged registry files, generated as the hostile data cases are: every file of a
registered version that a reader trusts (its record `version.json`, the reference profile,
the hashed training customers, the model file with its hash rewritten to match, and the
champion pointer `aliases.json`) is either read correctly or refused in one line naming the
file (and, for JSON, the field), in the project's words, never a library's."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.errors import RegistryError
from components.model.features import build_preprocessor
from components.model.lineage import (
    TRAINING_CUSTOMERS_FILE,
    load_training_customers,
    save_training_customers,
)
from components.monitoring.drift import PROFILE_FILE, load_profile, reference_profile, save_profile
from components.registry import LocalRegistry, save_model
from components.registry.model_files import MODEL_FILE, RECORD_FILE

pytestmark = pytest.mark.hostile
# Examples share one registry and put each file back: no state is carried between them.
SHARED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
# Words of the libraries underneath, which a user should never have to read.
LIBRARY_WORDS = re.compile(
    r"Traceback|Error\b|Exception|Expecting|pickle|numpy|joblib|dtype\(|char \d", re.I
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> LocalRegistry:
    """A registry with one champion version holding every file a version can have."""
    clean = validate(generate_customers(400, seed=41, messy=False), source="t").clean
    features = clean[TELCO_CHURN.feature_names]
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(features, clean[TELCO_CHURN.label_column])
    directory = save_model(model, tmp_path_factory.mktemp("fitted")).parent
    save_profile(reference_profile(clean, model.predict_proba(features)[:, 1]), directory)
    save_training_customers(clean["customerID"], directory)
    registry = LocalRegistry(tmp_path_factory.mktemp("hostile") / "registry")
    entry = registry.register(
        directory,
        best_model="logistic_regression",
        threshold=0.4,
        metrics={"roc_auc": 0.8, "f1": None},
        data_fingerprint="abc",
        run_id="run-1",
    )
    registry.promote(entry.version)
    return registry


def _refused(exc: RegistryError, path: Path, *names: str) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert str(path) in message, f"{message!r} does not name {path}"
    assert all(name in message for name in names), f"{message!r} names none of {names}"
    words = message
    for name in (str(path), MODEL_FILE, TRAINING_CUSTOMERS_FILE):  # file names are no words
        words = words.replace(name, "")
    words = re.sub(r'"[^"]*"|\'[^\']*\'', "", words)  # nor are the damaged values quoted
    assert not LIBRARY_WORDS.search(words), f"library words in {message!r}"
    return message


class _Damaged:
    """A registry file replaced for one example, put back after it."""

    def __init__(self, path: Path) -> None:
        self.path, self.kept = path, path.read_bytes()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.write_bytes(self.kept)


FIELDS = [
    "version", "sha256", "best_model", "threshold", "metrics", "data_fingerprint", "run_id",
    "created_at", "library_versions", "params", "promoted", "promotion_reason",
]  # fmt: skip
OPTIONAL = {"library_versions", "params", "promoted", "promotion_reason"}


@given(field=st.sampled_from(FIELDS), value=json_values, drop=st.booleans())
@SHARED
def test_a_damaged_version_record_is_refused_naming_the_file_and_field(
    registry: LocalRegistry, field: str, value, drop: bool, reliability
) -> None:
    path = registry.root / "v0001" / RECORD_FILE
    with _Damaged(path):
        record = json.loads(path.read_text())
        if drop:
            del record[field]
        else:
            record[field] = value
        path.write_text(json.dumps(record))
        try:
            _, entry = registry.load_model("champion")
        except RegistryError as exc:
            _refused(exc, path, "SHA-256" if field == "sha256" else field)
            outcome = "refused"
        else:  # a value the field may hold, read as written, never coerced
            assert (
                field in OPTIONAL
                if drop
                else json.dumps(getattr(entry, field)) == json.dumps(value)
            )
            outcome = "handled"
    what = f"without `{field}`" if drop else f"`{field}` = {json.dumps(value)[:30]}"
    reliability.record("input", "registry", f"version.json {what}", outcome=outcome)


def _paths(value, prefix=()):
    """Every place in a JSON document (key paths), to damage one of them."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, (*prefix, index))


@given(data=st.data(), value=json_values)
@SHARED
def test_a_damaged_reference_profile_is_refused_naming_the_file(
    registry: LocalRegistry, data, value, reliability
) -> None:
    directory = registry.root / "v0001"
    path = directory / PROFILE_FILE
    with _Damaged(path):
        profile = json.loads(path.read_text())
        # The plots' sample is free-form: every other place is damaged in turn.
        places = list(_paths({k: v for k, v in profile.items() if k != "sample"}))[1:]
        place = data.draw(st.sampled_from(places))
        *parents, last = place
        holder = profile
        for key in parents:
            holder = holder[key]
        holder[last] = value
        path.write_text(json.dumps(profile))
        try:
            loaded = load_profile(directory)
        except RegistryError as exc:
            _refused(exc, path)
            outcome = "refused"
        else:
            outcome = "handled"
            read_back = json.loads(loaded.to_json())
            for key in place:
                read_back = read_back[key]
            assert read_back == value  # accepted as it was written, not altered
    where = ".".join(map(str, place))
    reliability.record(
        "input",
        "registry",
        f"reference profile `{where}` = {json.dumps(value)[:30]}",
        outcome=outcome,
    )


@pytest.mark.parametrize(
    ("damage", "content"),
    [
        ("random bytes", lambda kept: b"\x93NUMPY garbage"),
        ("cut short", lambda kept: kept[: len(kept) // 2]),
        ("empty", lambda kept: b""),
        ("floats", lambda kept: _npy(np.array([1.5, 2.5]))),
        ("a matrix", lambda kept: _npy(np.zeros((2, 2), dtype=np.uint64))),
        ("pickled objects", lambda kept: _npy(np.array([{"a": 1}], dtype=object))),
        ("JSON", lambda kept: b'["7590-VHVEG"]'),
    ],
)
def test_a_damaged_hashed_customers_file_is_refused_naming_the_file(
    registry: LocalRegistry, damage: str, content, reliability
) -> None:
    directory = registry.root / "v0001"
    path = directory / TRAINING_CUSTOMERS_FILE
    with _Damaged(path) as target:
        target.write_bytes(content(target.read_bytes()))
        with pytest.raises(RegistryError) as refused:
            load_training_customers(directory)
        _refused(refused.value, path, "hashed-customers file is damaged")
    assert load_training_customers(directory).dtype == np.uint64
    reliability.record("input", "registry", f"hashed customers: {damage}", outcome="refused")


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("damage", "content"),
    [
        ("random bytes", lambda kept: bytes(range(256))),
        ("cut short", lambda kept: kept[: len(kept) // 2]),
        ("empty", lambda kept: b""),
        ("a pickled dict", lambda kept: pickle.dumps({"model": "none"})),
        ("a pickled number", lambda kept: pickle.dumps(3)),
    ],
)
def test_a_corrupt_model_whose_hash_was_updated_to_match_is_refused(
    registry: LocalRegistry, damage: str, content, reliability
) -> None:
    directory = registry.root / "v0001"
    model, record = directory / MODEL_FILE, directory / RECORD_FILE
    with _Damaged(model), _Damaged(record):
        model.write_bytes(content(model.read_bytes()))
        rewritten = json.loads(record.read_text())
        rewritten["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        record.write_text(json.dumps(rewritten))
        for load in (lambda: registry.load_model(1), lambda: registry.load_model("champion")):
            with pytest.raises(RegistryError) as refused:
                load()
            _refused(refused.value, model, "re-run training")
    registry.load_model(1)
    reliability.record(
        "input", "registry", f"model file {damage}, hash rewritten to match", outcome="refused"
    )


@given(value=json_values)
@SHARED
def test_a_damaged_champion_pointer_is_refused_naming_the_file(
    registry: LocalRegistry, value, reliability
) -> None:
    path = registry.root / "aliases.json"
    with _Damaged(path):
        path.write_text(json.dumps({"champion": value}))
        try:
            champion = registry.champion()
        except RegistryError as exc:
            _refused(exc, path, "champion")
            outcome = "refused"
        else:
            assert value == 1 and type(value) is int and champion.version == 1
            outcome = "handled"
    reliability.record(
        "input", "registry", f"aliases.json champion = {json.dumps(value)[:30]}", outcome=outcome
    )


def test_every_field_of_a_version_record_has_its_check() -> None:
    # A field added to ModelVersion without its check made every record holding it
    # unreadable ("holdout", found by the monitoring end-to-end test).
    from dataclasses import fields

    from components.registry.versions import _RECORD_FIELDS, ModelVersion

    assert set(_RECORD_FIELDS) == {f.name for f in fields(ModelVersion)}
