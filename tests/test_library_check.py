"""A model is unpickled only by the library versions that pickled it: scoring and the model
server refuse a model whose record names another scikit-learn (numpy, joblib) with one line
saying which, and the `accept_library_mismatch` setting lets a team use it knowingly."""

import io
import json
import logging
import socket
from importlib import metadata
from pathlib import Path

import joblib
import pytest
from joblib import numpy_pickle
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Metrics, Model
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.errors import ChurnError, RegistryError
from components.model.calibration import CalibratedModel, ProbabilityCalibrator
from components.model.evaluate import evaluate_model
from components.model.features import build_preprocessor
from components.registry import LocalRegistry, file_sha256, library_versions, save_model
from components.registry.model_files import PICKLED_LIBRARIES, check_library_versions
from components.scoring.champion import load_champion
from components.scoring.chunked import score_customers
from components.serving.server import HOST, ChurnPredictor, start_model_server
from components.settings import Settings
from pipelines.parameters import pipeline_arguments

RUNNING_SKLEARN = metadata.version("scikit-learn")
OTHER_SKLEARN = "1.0.2"
REFUSAL = (
    rf"model v1 \(.*\) was pickled with scikit-learn {OTHER_SKLEARN} \(running "
    rf"{RUNNING_SKLEARN}\): refusing to unpickle it; retrain it with this image, or set "
    r"accept_library_mismatch = true \(CHURN_ACCEPT_LIBRARY_MISMATCH=true\) to use it anyway"
)


def _model() -> Pipeline:
    """A small calibrated gradient-boosting pipeline, as training saves one."""
    train = validate(generate_customers(400, seed=3, messy=False), source="sample").clean
    label = train[TELCO_CHURN.label_column].astype(int)
    preprocess = build_preprocessor().fit(train[TELCO_CHURN.feature_names])
    x = preprocess.transform(train[TELCO_CHURN.feature_names])
    trees = HistGradientBoostingClassifier(max_iter=10).fit(x, label)
    calibrator = ProbabilityCalibrator("isotonic").fit(trees.predict_proba(x)[:, 1], label)
    return Pipeline([("preprocess", preprocess), ("model", CalibratedModel(trees, calibrator))])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> LocalRegistry:
    """A champion recorded as pickled by another scikit-learn than the one running."""
    root = tmp_path_factory.mktemp("library-check")
    registry = LocalRegistry(root / "registry")
    entry = registry.register(
        save_model(_model(), root / "build").parent,
        best_model="gradient_boosting",
        threshold=0.4,
        metrics={},
        data_fingerprint="test",
        run_id="test",
        library_versions=library_versions() | {"scikit-learn": OTHER_SKLEARN},
    )
    registry.promote(entry.version)
    return registry


@pytest.fixture
def model_dir(registry: LocalRegistry) -> Path:
    return registry.model_path(1).parent


def _score(registry: LocalRegistry, tmp_path: Path, **setting: bool) -> Dataset:
    """Steps 1 and 2 of the scoring pipeline, as they run."""
    model = Model(name="model", uri=str(tmp_path / "model"))
    load_champion.python_func(
        registry_uri=str(registry.root),
        model_ref="champion",
        model=model,
        vertex_model=Artifact(name="vm", uri=str(tmp_path / "vm")),
    )
    source = tmp_path / "customers.csv"
    generate_customers(30, seed=5, messy=False).drop(columns=TELCO_CHURN.label_column).to_csv(
        source, index=False
    )
    staged = Dataset(name="s", uri=str(tmp_path / "staged"))
    score_customers.python_func(
        source_uri=str(source),
        output_uri=f"duckdb://{tmp_path}/w.duckdb?table=p",
        model=model,
        as_of="2026-12-01",
        run_id="r",
        batch_rows=1000,
        workers=1,
        high_risk_cutoff=0.7,
        medium_risk_cutoff=0.4,
        invalid_row_tolerance=0.1,
        time_zone="UTC",
        high_risk_top_n=0,
        high_risk_top_share=0.0,
        staged=staged,
        observed=Artifact(name="o", uri=str(tmp_path / "observed")),
        **setting,
    )
    return staged


def test_scoring_refuses_a_model_pickled_by_another_scikit_learn(registry, tmp_path) -> None:
    with pytest.raises(RegistryError, match=REFUSAL) as refused:
        _score(registry, tmp_path)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "staged").exists()


def test_scoring_uses_it_with_the_setting_and_says_so(registry, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="components.registry.model_files"):
        staged = _score(registry, tmp_path, accept_library_mismatch=True)
    assert staged.metadata["rows"]["scored"] == 30
    (warning,) = [
        r.getMessage() for r in caplog.records if r.name == "components.registry.model_files"
    ]
    assert f"scikit-learn {OTHER_SKLEARN} (running {RUNNING_SKLEARN})" in warning
    assert "accept_library_mismatch" in warning


def test_training_compares_with_a_champion_pickled_by_other_libraries(
    registry, tmp_path, caplog
) -> None:
    """The evaluate step only compares with the champion: refusing there would block the
    retrain that replaces it, so it goes on, saying so."""
    rows = validate(generate_customers(300, seed=11, messy=False), source="sample").clean
    test = Dataset(name="test", uri=str(tmp_path / "test.parquet"))
    rows.to_parquet(test.path)
    model = Model(name="model", uri=str(tmp_path / "model"))
    model.metadata.update(sha256=file_sha256(save_model(_model(), Path(model.path))))
    model.metadata["threshold"] = 0.4
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    with caplog.at_level(logging.WARNING, logger="components.registry.model_files"):
        evaluate_model.python_func(
            model=model,
            test=test,
            registry_uri=str(registry.root),
            seed=1,
            promotion_metric="roc_auc",
            bootstrap_samples=0,
            metrics=metrics,
            roc=ClassificationMetrics(name="roc", uri=str(tmp_path / "roc")),
            predictions=Dataset(name="predictions", uri=str(tmp_path / "predictions")),
            evaluation=Artifact(name="evaluation", uri=str(tmp_path / "evaluation")),
        )
    assert "champion_v1_roc_auc" in metrics.metadata
    (warning,) = [
        r.getMessage() for r in caplog.records if r.name == "components.registry.model_files"
    ]
    assert f"scikit-learn {OTHER_SKLEARN} (running {RUNNING_SKLEARN})" in warning


def test_the_scoring_pipeline_passes_the_setting_to_its_scoring_step() -> None:
    from components.settings import Settings
    from pipelines.compiling import build_pipeline

    scoring_pipeline = build_pipeline("scoring", Settings())

    arguments = pipeline_arguments(
        scoring_pipeline, Settings(accept_library_mismatch=True), vertex=False
    )
    assert arguments["accept_library_mismatch"] is True
    spec = scoring_pipeline.pipeline_spec
    (score,) = [
        task
        for dag in [spec.root.dag, *(c.dag for c in spec.components.values() if c.dag.tasks)]
        for task in dag.tasks.values()
        if task.component_ref.name.startswith("comp-score-customers")
    ]
    wired = score.inputs.parameters["accept_library_mismatch"]
    assert wired.component_input_parameter.endswith("accept_library_mismatch")


def test_the_model_server_refuses_it_unless_its_environment_accepts_it(
    model_dir, no_config, monkeypatch
) -> None:
    """The serving image reads its settings from the environment (Vertex sets it from the
    model's container spec)."""
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.delenv("CHURN_ACCEPT_LIBRARY_MISMATCH", raising=False)
    with pytest.raises(RegistryError, match=REFUSAL):
        ChurnPredictor().load(str(model_dir))

    monkeypatch.setenv("CHURN_ACCEPT_LIBRARY_MISMATCH", "true")
    predictor = ChurnPredictor()
    predictor.load(str(model_dir))
    assert predictor._version.version == 1


@pytest.mark.slow
def test_a_started_model_server_stops_with_the_one_line(model_dir, tmp_path, monkeypatch) -> None:
    """The server `submit.py serve` starts: the child gets the caller's setting, not one it
    inherits, and the caller's error is the project's line from the child's log."""
    monkeypatch.setenv("CHURN_ACCEPT_LIBRARY_MISMATCH", "true")
    log_path = tmp_path / "model-server.log"
    with (
        pytest.raises(ChurnError, match=f"stopped before serving: {REFUSAL}"),
        start_model_server(model_dir, _free_port(), settings=Settings(), log_path=log_path),
    ):
        pass  # served: stopped on the way out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def test_the_refusal_names_every_library_that_differs() -> None:
    recorded = {
        "scikit-learn": OTHER_SKLEARN,
        "numpy": "1.26.4",
        "joblib": metadata.version("joblib"),
        "pandas": "1.0.0",  # not in the pickle: not compared
    }
    with pytest.raises(RegistryError) as refused:
        check_library_versions(recorded, accept=False, model="model v7")
    message = str(refused.value)
    assert message.startswith(
        f"model v7 was pickled with scikit-learn {OTHER_SKLEARN} (running {RUNNING_SKLEARN}), "
        f"numpy 1.26.4 (running {metadata.version('numpy')}): refusing"
    )
    assert "pandas" not in message and "joblib" not in message


def test_a_model_recorded_with_the_running_libraries_or_none_loads() -> None:
    check_library_versions(library_versions(), accept=False, model="model v2")
    # Records made before the versions were tracked: nothing to compare.
    check_library_versions({}, accept=False, model="model v1")


def test_registration_records_every_library_that_is_compared() -> None:
    assert set(PICKLED_LIBRARIES) <= set(library_versions())


def test_the_compared_libraries_are_all_a_model_file_names(model_dir) -> None:
    """What the check compares is what unpickling a model depends on: the distributions
    whose modules the file's classes come from, besides Python's and the project's."""
    named: set[str] = set()
    find_class = numpy_pickle.NumpyUnpickler.find_class

    def recording(self, module: str, name: str):
        named.add(module.split(".")[0])
        return find_class(self, module, name)

    content = io.BytesIO((model_dir / "model.joblib").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numpy_pickle.NumpyUnpickler, "find_class", recording)
        joblib.load(content)
    distributions = metadata.packages_distributions()
    libraries = {
        dist for module in named - {"builtins", "components"} for dist in distributions[module]
    }
    assert libraries == set(PICKLED_LIBRARIES), json.dumps(sorted(libraries))
