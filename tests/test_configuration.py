"""The CLI at its boundary: bad settings and missing credentials are one line before anything
runs, and `--dry-run` changes nothing, with or without a project."""

import json
from pathlib import Path

import pytest

import submit


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_config: Path, capsys):
    """submit.main in an empty directory with no project, config or credentials."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    for name in ("CHURN_PROJECT", "GOOGLE_CLOUD_PROJECT", "CHURN_HOME"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = submit.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_dry_run_without_a_project_prints_the_local_run_and_changes_nothing(
    cli, tmp_path: Path, command: str
):
    home = tmp_path / "home"
    code, out, err = cli(command, "--dry-run", "--home", str(home))
    assert code == 0, err
    (plan,) = [json.loads(line) for line in out.splitlines()]
    assert plan["dry_run"] is True and plan["runs_on"] == "this machine (kfp.local)"
    assert plan["pipeline"] == f"churn-{'training' if command == 'train' else 'scoring'}"
    assert "nothing was run, registered or published" in err
    # No run, no sample data, no registry, no predictions: the home was never made.
    assert not home.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.toml"]


@pytest.mark.parametrize("command", ["build", "publish", "schedule", "setup"])
def test_a_dry_run_of_a_cloud_command_without_a_project_is_refused(cli, command: str):
    code, out, err = cli(command, "--dry-run")
    assert (code, out) == (1, "")
    assert err.strip() == "error: no Google Cloud project set: pass --project or set CHURN_PROJECT"


@pytest.mark.parametrize(
    ("environ", "argv", "message"),
    [
        ({"CHURN_SCORE_BATCH_ROWS": "0"}, ["score"], "score_batch_rows = 0 from environment"),
        ({"CHURN_CV_FOLDS": "1"}, ["train"], "cv_folds = 1 from environment variable"),
        ({"CHURN_TIME_ZONE": "Mars/Olympus"}, ["score"], "is not an IANA time zone"),
        ({}, ["score", "--as-of", "9999-12-31"], "--as-of 9999-12-31 is after today"),
        ({}, ["train", "--workers", "5"], None),  # not a train flag: argparse's own refusal
        ({}, ["score", "--workers", "1000000"], "score_workers = 1000000 from flag --workers"),
        ({}, ["train", "--project", "demo#x"], "project 'demo#x' is not a Google Cloud project"),
        ({}, ["train", "--region", "europe-west4/../x"], "is not a Vertex AI region"),
    ],
)
def test_bad_settings_are_one_line_before_anything_runs(
    cli, monkeypatch, tmp_path: Path, environ, argv, message
):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    if message is None:
        with pytest.raises(SystemExit):
            cli(*argv, "--home", str(home))
        return
    code, out, err = cli(*argv, "--home", str(home))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not home.exists()


@pytest.mark.parametrize("argv", [["runs"], ["schedule", "--list"]])
def test_missing_credentials_say_how_to_sign_in(cli, tmp_path: Path, argv):
    # google.auth's DefaultCredentialsError, wherever a client library raises it.
    code, _out, err = cli(*argv, "--project", "acme-corp", "--home", str(tmp_path / "h"))
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no usable Google Cloud credentials" in err and "absent.json" in err
    assert "gcloud auth application-default login" in err
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err


def test_a_dry_run_with_a_project_prints_the_request_and_makes_nothing_here(cli, tmp_path):
    code, out, err = cli("score", "--dry-run", "--project", "acme-corp", "--home", "home")
    assert code == 0, err
    (request,) = [json.loads(line) for line in out.splitlines()]
    assert request["method"] == "POST"
    assert request["url"].startswith(
        "https://us-central1-aiplatform.googleapis.com/v1/projects/acme-corp/locations/"
        "us-central1/pipelineJobs?pipelineJobId=churn-scoring-"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["empty.toml"]
