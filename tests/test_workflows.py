"""The CI/CD workflows parse, pin every action to a commit, deploy only from main or a tag,
and authenticate by Workload Identity Federation (no key anywhere)."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as true
    return document


def steps(document: dict):
    for name, job in document["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def test_there_are_a_pull_request_and_a_deploy_workflow():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    ci = load(ROOT / ".github/workflows/ci.yml")
    assert "pull_request" in ci["on"]
    assert set(ci["jobs"]) >= {"lint", "test", "compile", "image-smoke"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_commit_sha(path: Path):
    used = [(job, step["uses"]) for job, step in steps(load(path)) if "uses" in step]
    assert used
    for job, uses in used:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), f"{path.name} {job}: {uses}"


def test_deploy_runs_only_on_main_or_tags_and_authenticates_by_federation():
    deploy = load(ROOT / ".github/workflows/deploy.yml")
    assert set(deploy["on"]) == {"push"}  # never for a pull request
    assert deploy["on"]["push"]["branches"] == ["main"]
    assert deploy["on"]["push"]["tags"]
    for name, job in deploy["jobs"].items():
        assert job["if"] == (
            "github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/')"
        ), name
    (auth,) = [
        s for _, s in steps(deploy) if s.get("uses", "").startswith("google-github-actions/auth@")
    ]
    assert auth["with"]["workload_identity_provider"] == "${{ vars.GCP_WIF_PROVIDER }}"
    assert auth["with"]["service_account"] == "${{ vars.GCP_CI_SERVICE_ACCOUNT }}"
    assert deploy["jobs"]["deploy"]["permissions"]["id-token"] == "write"
    runs = " ".join(s.get("run", "") for _, s in steps(deploy))
    assert "submit.py publish" in runs and "submit.py schedule" in runs
    # Images are pushed, then named by digest when compiling.
    assert "docker push" in runs and "RepoDigests" in runs


def test_no_key_file_or_key_input_anywhere():
    for path in [*WORKFLOWS, ROOT / "README.md"]:
        text = path.read_text()
        assert "credentials_json" not in text, path
        assert "BEGIN PRIVATE KEY" not in text, path
        assert "gcloud iam service-accounts keys create" not in text, path
