"""The registry's numbering, hash check and the promotion gate, on a real directory."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.data.validate import validate
from components.errors import RegistryError
from components.model.features import build_preprocessor
from components.model.lineage import load_training_customers, trained_on
from components.model.register import decide_promotion, register_and_promote
from components.registry import MODEL_FILE, LocalRegistry, open_registry, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_file(customers, tmp_path: Path) -> Path:
    clean = validate(customers, source="t").clean
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(clean.drop(columns=["customerID", "Churn"]), clean["Churn"])
    return save_model(model, tmp_path / "artifact")


def _register(
    registry: LocalRegistry,
    model_file: Path,
    roc_auc: float,
    champion: dict | None,
    *,
    difference_interval: list[float] | None = None,
    require_significance: bool = False,
    training_customers: list[str] | None = None,
):
    comparison = champion and {
        "champion": champion["roc_auc"],
        "candidate": roc_auc,
        "note": "on the 900 of 1,000 test customers the champion never trained on",
        "difference_interval": difference_interval,
    }
    return register_and_promote(
        registry_uri=str(registry.root),
        model_file=model_file,
        model_info={"best_model": "logistic_regression", "threshold": 0.4},
        evaluation={
            "metrics": {"roc_auc": roc_auc},
            "interval": {"metric": "roc_auc", "low_high": [roc_auc - 0.02, roc_auc + 0.02]},
            "champion_metrics": champion,
            # As evaluation writes it: the champion when the run evaluated.
            "champion_version": champion and registry.champion().version,
            "comparison": comparison,
        },
        data_fingerprint="abc",
        run_id="run-1",
        metric="roc_auc",
        margin=0.01,
        floor=0.7,
        training_customers=training_customers,
        require_significance=require_significance,
    )


def test_gate_promotes_a_clear_winner_and_keeps_the_champion_otherwise(model_file, tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    first = _register(registry, model_file, 0.80, None)
    assert first.promoted and registry.champion().version == 1

    beaten_by_less_than_margin = _register(registry, model_file, 0.805, {"roc_auc": 0.80})
    assert not beaten_by_less_than_margin.promoted
    assert "does not beat the champion's 0.8000 by the margin 0.0100" in (
        beaten_by_less_than_margin.promotion_reason
    )
    assert registry.champion().version == 1

    winner = _register(registry, model_file, 0.82, {"roc_auc": 0.80})
    assert winner.promoted and winner.version == 3
    assert registry.champion().version == 3
    assert registry.versions() == [1, 2, 3]


def test_significance_gate_promotes_only_when_the_difference_interval_excludes_zero(
    model_file, tmp_path
):
    registry = LocalRegistry(tmp_path / "registry")
    _register(registry, model_file, 0.80, None)
    noisy = _register(
        registry,
        model_file,
        0.82,
        {"roc_auc": 0.80},
        difference_interval=[-0.004, 0.044],
        require_significance=True,
    )
    assert not noisy.promoted and registry.champion().version == 1
    assert "does not exclude zero" in noisy.promotion_reason
    assert "95% CI -0.0040 to +0.0440" in noisy.promotion_reason
    assert "on the 900 of 1,000 test customers the champion never trained on" in (
        noisy.promotion_reason
    )
    clear = _register(
        registry,
        model_file,
        0.82,
        {"roc_auc": 0.80},
        difference_interval=[0.006, 0.034],
        require_significance=True,
    )
    assert clear.promoted and registry.champion().version == 3
    assert "(95% CI 0.8000 to 0.8400)" in clear.promotion_reason
    # Without the setting, the noisy win is promoted on the margin alone.
    lenient = _register(
        registry, model_file, 0.84, {"roc_auc": 0.82}, difference_interval=[-0.004, 0.044]
    )
    assert lenient.promoted


def test_each_version_keeps_its_hashed_training_customers(model_file, tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    entry = _register(registry, model_file, 0.8, None, training_customers=["A-1", "B-2"])
    stored = load_training_customers(registry.model_path(entry.version).parent)
    assert trained_on(["B-2", "C-3", "A-1"], stored).tolist() == [True, False, True]
    assert "A-1" not in (
        registry.model_path(entry.version).parent / "training_customers.npy"
    ).read_bytes().decode("latin-1")


def test_gate_refuses_a_model_below_the_floor_even_without_champion():
    decision = decide_promotion(
        metric="roc_auc", candidate=0.65, champion=None, margin=0.0, floor=0.7
    )
    assert not decision.promote
    assert decision.reason == "test roc_auc 0.6500 is below the floor 0.7000"


def test_record_holds_what_reproduction_needs(model_file, tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    entry = _register(registry, model_file, 0.8, None)
    stored = registry.get("champion")
    assert stored == entry
    assert len(stored.sha256) == 64
    assert stored.run_id == "run-1" and stored.data_fingerprint == "abc"
    assert {"scikit-learn", "imbalanced-learn", "kfp"} <= set(stored.library_versions)
    assert stored.created_at.endswith("+00:00")


def test_tampered_model_file_is_refused(model_file, tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    _register(registry, model_file, 0.8, None)
    model, _ = registry.load_model("champion")
    assert hasattr(model, "predict_proba")
    with open(registry.model_path(1), "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        registry.load_model(1)
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        registry.fetch(1, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_fetched_directory_is_the_registered_one(model_file, tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    _register(registry, model_file, 0.8, None)
    entry = registry.fetch("champion", tmp_path / "copy")
    copied = tmp_path / "copy" / MODEL_FILE
    assert entry.version == 1
    assert copied.read_bytes() == registry.model_path(1).read_bytes()
    # The evaluation registered beside the model travels with it.
    assert (
        {p.name for p in (tmp_path / "copy").iterdir()}
        == {p.name for p in registry.model_path(1).parent.iterdir()}
        >= {MODEL_FILE, "version.json", "evaluation.json"}
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("vertex://projects/p/models/churn", "is not of the form vertex://projects/P/"),
        ("vertex://projects/p/locations/us-central1/models/Churn!", "model id 'Churn!'"),
        (
            "vertex://projects/p/locations/us-central1/models/churn?artifact=gs://b",
            "unknown parameter",
        ),
        (
            "vertex://projects/p/locations/us-central1/models/churn?artifacts=/tmp/models",
            "artifacts must be a gs://BUCKET/PATH URI",
        ),
        ("s3://bucket/registry", "expected a local directory or vertex://"),
    ],
)
def test_malformed_registry_uris_fail_with_one_line_before_any_request(uri, message):
    with pytest.raises(RegistryError, match=re.escape(message)) as failure:
        open_registry(uri)
    assert len(str(failure.value).splitlines()) == 1


def test_unknown_versions_are_clear_errors(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="no champion model"):
        registry.get("champion")
    with pytest.raises(RegistryError, match="model version 7 is not registered"):
        registry.get("v7")


def test_a_malformed_vertex_registry_stops_the_cli_before_any_step(tmp_path):
    env = os.environ | {"CHURN_REGISTRY": "vertex://projects/p/models/churn"}
    for command in ("train", "score"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "submit.py"), command, "--home", str(tmp_path), "--local"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            "error: registry 'vertex://projects/p/models/churn' is not of the form "
            "vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH"
        ]
        assert not (tmp_path / "pipeline_root").exists()
