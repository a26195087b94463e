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
