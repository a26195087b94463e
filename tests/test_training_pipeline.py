"""End to end: `submit.py train` runs the real training pipeline under kfp.local."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.data.sample_data import generate_customers

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
FAST = ["--cv-folds", "3", "--candidates-per-family", "1"]


def _submit(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "submit.py", *args, "--home", str(home), "--local"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def messy_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "customers.csv"
    generate_customers(3_000, seed=11).to_csv(path, index=False)
    return path


def test_train_twice_registers_and_gates_promotion(messy_csv: Path, tmp_path: Path):
    home = tmp_path / "home"
    first = _submit("train", "--source", str(messy_csv), "--json", *FAST, home=home)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded"
    assert summary["model_version"] == 1 and summary["promoted"] is True
    assert 0.75 < summary["metrics"]["roc_auc"] < 0.92  # honest, never near-perfect
    assert 0.45 < summary["metrics"]["f1"] < 0.75
    rows = summary["rows"]
    assert rows["read"] == 3_000
    assert rows["duplicates"] > 0 and rows["rejected"] >= rows["duplicates"]
    assert rows["read"] == rows["train"] + rows["test"] + rows["rejected"]
    assert len({c["model"] for c in summary["cv"]}) >= 5
    report = Path(summary["report"]).read_text()
    assert report.startswith("<!DOCTYPE html>") and "<script" not in report
    assert "✓ 4. Train candidates and select" in first.stderr

    second = _submit("train", "--source", str(messy_csv), "--json", *FAST, home=home)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["model_version"] == 2
    # Same data and seed: the same model, not worse than the champion, compared on the
    # whole persistent holdout (none of whom either version trained on), so it replaces it.
    assert again["promoted"] is True
    assert again["promotion_reason"].startswith("non-inferiority (tolerance 0.0050): ")
    assert "none of whom the champion trained on" in again["promotion_reason"]

    listing = _submit("runs", "--json", home=home)
    runs = json.loads(listing.stdout.strip().splitlines()[-1])
    assert [r["model_version"] for r in runs] == [2, 1]
    assert all(r["status"] == "succeeded" for r in runs)


def test_bad_input_fails_with_one_clear_line(customers, tmp_path: Path):
    broken = tmp_path / "broken.csv"
    customers.drop(columns="MonthlyCharges").to_csv(broken, index=False)
    result = _submit("train", "--source", str(broken), "--json", *FAST, home=tmp_path / "h")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "column `MonthlyCharges` missing from" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "failed"


def test_unreadable_source_fails_before_the_pipeline(tmp_path: Path):
    result = _submit("train", "--source", "customers.xlsx", home=tmp_path / "h")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot read 'customers.xlsx'")


def test_a_home_that_cannot_be_written_is_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _submit("train", home=blocker / "home")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: Not a directory: {blocker}/home"
    assert "Traceback" not in result.stderr
