"""Shared fixtures: small generated customer tables and a throwaway local home."""

from pathlib import Path

import pandas as pd
import pytest

from components.sample_data import generate_customers


@pytest.fixture(scope="session")
def customers() -> pd.DataFrame:
    """2,000 clean generated customers (read-only: copy before changing)."""
    return generate_customers(2_000, seed=7, messy=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def google_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A recording stand-in for Google's REST APIs, with a service-account key whose
    tokens it issues set as the application default credentials."""
    from google_standin import GoogleStandIn, service_account_key

    with GoogleStandIn() as standin:
        key = service_account_key(tmp_path / "standin-key.json", f"{standin.url}/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        yield standin
