"""No credential in the repository, its docs, or anything a run writes.

The patterns are the shapes of the credentials this project could come near: private keys
(a service-account key file holds one), Google API keys and OAuth access tokens, GitHub and
AWS tokens. A run is made with a real service-account key in its environment, as on a
laptop with application default credentials, to show none of it reaches a log, artifact,
report or export.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google_standin import service_account_key

from components.data.sample_data import generate_customers

ROOT = Path(__file__).resolve().parents[1]
# Split so this file does not match itself.
SECRET_SHAPES = {
    "private key": re.compile(rb"-----BEGIN [A-Z ]*" + rb"PRIVATE KEY-----"),
    "service-account key": re.compile(rb'"private_key"\s*:\s*"-----' + rb"BEGIN"),
    "Google API key": re.compile(rb"AIza" + rb"[0-9A-Za-z_\-]{35}"),
    "Google OAuth token": re.compile(rb"ya29\." + rb"[0-9A-Za-z_\-]{20,}"),
    "GitHub token": re.compile(rb"gh[pousr]_" + rb"[A-Za-z0-9]{36}"),
    "AWS access key": re.compile(rb"AKIA" + rb"[0-9A-Z]{16}"),
}


def find_secrets(paths: list[Path], extra: dict[str, bytes] | None = None) -> list[str]:
    """`path: kind` for each file holding a credential's shape (or one of `extra`'s exact
    byte strings); binary files are scanned as bytes."""
    found = []
    for path in paths:
        content = path.read_bytes()
        for kind, shape in SECRET_SHAPES.items():
            if shape.search(content):
                found.append(f"{path}: {kind}")
        for kind, value in (extra or {}).items():
            if value in content:
                found.append(f"{path}: {kind}")
    return found


def test_the_repository_and_its_docs_hold_no_credentials():
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = [ROOT / os.fsdecode(name) for name in listed if name]
    files = [path for path in files if path.is_file()]
    assert len(files) > 20
    assert find_secrets(files) == []


def test_the_scan_finds_a_key_file(tmp_path: Path):
    key = service_account_key(tmp_path / "key.json", "http://127.0.0.1:9/token")
    assert find_secrets([key]) == [f"{key}: private key", f"{key}: service-account key"]


@pytest.mark.slow
def test_no_credential_reaches_what_a_run_writes(tmp_path: Path):
    key = service_account_key(tmp_path / "key.json", "http://127.0.0.1:9/token")
    private_key_line = key.read_text().split("\\n")[1].encode()  # a line of the key's body
    source = tmp_path / "customers.csv"
    generate_customers(1_500, seed=5).to_csv(source, index=False)
    home = tmp_path / "home"
    env = os.environ | {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    common = ["--source", str(source), "--home", str(home), "--local", "--json"]
    for command in (
        ["train", "--cv-folds", "2", "--candidates-per-family", "1"],
        ["score", "--as-of", "2026-12-01"],
    ):
        subprocess.run(
            [sys.executable, "submit.py", *command, *common],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
        )
    written = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".html" for path in written)
    assert any(path.suffix == ".log" for path in written)
    assert any(path.suffix == ".csv" for path in written)
    assert find_secrets(written, {"the key's body": private_key_line}) == []
