"""Shared fixtures: small generated customer tables and a throwaway local home."""

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from reliability import ReliabilityLog

from components.data.sample_data import generate_customers

# The `hostile` tests' randomized part: few examples in the everyday suite, many on demand
# (HYPOTHESIS_PROFILE=thorough, as tests/reliability_report.py runs it).
settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def customers() -> pd.DataFrame:
    """2,000 clean generated customers (read-only: copy before changing)."""
    return generate_customers(2_000, seed=7, messy=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that records cases is marked `reliability`, which the report runs."""
    for item in items:
        if "reliability" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> ReliabilityLog:
    """Records the cases a hostile-input or fault test tried (see tests/reliability.py)."""
    return ReliabilityLog(request.node.nodeid)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def champion_home(home: Path) -> Path:
    """A home whose registry has a champion with its reference profile, registered as the
    training pipeline does (fit, register, promote), on small generated data."""
    import numpy as np

    from components.contract import TELCO_CHURN
    from components.data.split import split_train_test
    from components.data.validate import validate
    from components.model.search import CandidateResult
    from components.model.train import fit_final
    from components.monitoring.drift import reference_profile, save_profile
    from components.registry import LocalRegistry, save_model

    clean = validate(generate_customers(2_000, seed=21), source="fixture").clean
    train, test = split_train_test(clean, test_size=0.2, seed=21)
    best = CandidateResult("logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0)
    model = fit_final(train, best, seed=21)
    model_dir = save_model(model, home / "fitted").parent
    held_out = model.predict_proba(test[TELCO_CHURN.feature_names])[:, 1]
    save_profile(reference_profile(train, held_out), model_dir)
    registry = LocalRegistry(home / "registry")
    entry = registry.register(
        model_dir,
        best_model=best.family,
        threshold=0.35,
        metrics={"roc_auc": 0.84},
        data_fingerprint="fixture",
        run_id="fixture",
    )
    registry.promote(entry.version)
    return home


@pytest.fixture
def no_config(tmp_path: Path) -> Path:
    """A config file that sets nothing, so a churn.toml in the working directory can't."""
    path = tmp_path / "empty.toml"
    path.touch()
    return path


@pytest.fixture
def google_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A recording stand-in for Google's REST APIs, with a service-account key whose
    tokens it issues set as the application default credentials."""
    from google_standin import GoogleStandIn, service_account_key

    with GoogleStandIn() as standin:
        key = service_account_key(tmp_path / "standin-key.json", f"{standin.url}/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        yield standin


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    """The BigQuery emulator on 127.0.0.1 for this session (see tests/bigquery_emulator.py);
    the tests that use it are skipped, with the reason, when it cannot start."""
    import bigquery_emulator

    try:
        emulator = bigquery_emulator.start(tmp_path_factory.mktemp("bqemulator"))
    except bigquery_emulator.EmulatorUnavailable as exc:
        pytest.skip(f"BigQuery emulator unavailable: {exc}")
    yield emulator
    emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator, monkeypatch) -> str:
    """A fresh dataset in the emulator, as PROJECT.DATASET, with the warehouse's BigQuery
    endpoints pointed at the emulator for this test (and the kfp.local steps it starts)."""
    import uuid

    import bigquery_emulator

    from components.warehouse import bigquery, parse_uri

    for name, value in bq_emulator.environment.items():
        monkeypatch.setenv(name, value)
    dataset = f"{bigquery_emulator.PROJECT}.t_{uuid.uuid4().hex[:8]}"
    bigquery.client(parse_uri(f"bq://{dataset}.any")).create_dataset(dataset)
    return dataset
