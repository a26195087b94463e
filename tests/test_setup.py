"""`submit.py setup` against the strict Google stand-in: the real client libraries, the real
credentials flow, every call judged per caller by the stand-in's IAM.

The person setting up holds narrow admin roles (tests/google_standin.py `CloudProject`), not
Owner: a request setup makes that those roles do not allow fails here as it would at Google.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from google_standin import CloudProject

import submit
from pipelines import access

ROOT = Path(__file__).resolve().parents[1]
REGION = "europe-west4"
VIEWERS = "churn-viewers@example.com"


@pytest.fixture
def project(google_cloud, monkeypatch, no_config) -> CloudProject:
    """A new project behind the stand-in, every admin API pointed at it."""
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_GOOGLE_API_ENDPOINT", google_cloud.url)
    return CloudProject(google_cloud)


def setup(project: CloudProject, *extra: str) -> int:
    return submit.main(["setup", "--project", project.project, "--region", REGION, *extra])


def test_setup_creates_everything_a_project_needs(project, capsys):
    assert setup(project, "--viewer-group", VIEWERS, "--github-repository", "org/repo") == 0

    assert set(access.APIS) <= project.services
    domain = f"{project.project}.iam.gserviceaccount.com"
    emails = {f"churn-{name}@{domain}" for name in ("pipelines", "scheduler", "ci")}
    assert set(project.accounts) == emails
    bucket = project.buckets[f"{project.project}-churn"]
    assert bucket["location"] == REGION.upper()
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    # Found 4: the dataset where the region is, not in US.
    assert project.datasets[f"{project.project}:churn"]["location"] == REGION
    formats = {name.rsplit("/", 1)[-1]: r["format"] for name, r in project.repositories.items()}
    assert formats == {"churn": "DOCKER", "churn-pipelines": "KFP"}
    provider = project.pools["github"]["providers"]["github"]
    assert provider["attributeCondition"] == "assertion.repository == 'org/repo'"
    # Every grant of the table, judged by the stand-in's IAM as Google would.
    pipelines = f"serviceAccount:churn-pipelines@{project.project}.iam.gserviceaccount.com"
    iam = project.iam
    assert iam.allowed(pipelines, "bigquery.readsessions.create", f"projects/{project.project}")
    assert iam.allowed(
        pipelines, "bigquery.tables.getData", f"projects/{project.project}/datasets/churn"
    )
    prediction = f"projects/{project.project}/datasets/prediction_churn_2026_12_07"
    assert iam.allowed(pipelines, "bigquery.datasets.delete", prediction)
    assert not iam.allowed(
        pipelines, "bigquery.datasets.delete", f"projects/{project.project}/datasets/churn"
    )
    viewer = "user:ana@example.com"
    iam.groups[f"group:{VIEWERS}"] = {viewer}
    bucket_name = f"projects/_/buckets/{project.project}-churn"
    assert iam.allowed(viewer, "storage.objects.get", bucket_name)
    assert iam.allowed(viewer, "logging.logEntries.list", f"projects/{project.project}")
    ci = f"projects/{project.project}/serviceAccounts/churn-ci@{domain}"
    github = (
        f"principalSet://iam.googleapis.com/projects/{project.number}/locations/global/"
        "workloadIdentityPools/github/attribute.repository/org/repo"
    )
    assert iam.allowed(github, "iam.serviceAccounts.getAccessToken", ci)
    assert "is set up; check it" in capsys.readouterr().err


def test_a_second_setup_changes_nothing_and_keeps_other_bindings(project, capsys):
    assert setup(project, "--viewer-group", VIEWERS) == 0
    someone = "user:someone@example.com"
    project.iam.grant(someone, "roles/logging.viewer", project.name)
    policies = json.dumps(project.iam.policies, sort_keys=True)
    sent = len(project.standin.requests)
    capsys.readouterr()

    assert setup(project, "--viewer-group", VIEWERS) == 0

    lines = capsys.readouterr().err.splitlines()[:-1]  # the last says what to run next
    assert lines and all(line.split(": ", 1)[1].startswith("exists") for line in lines)
    assert json.dumps(project.iam.policies, sort_keys=True) == policies
    assert project.iam.allowed(someone, "logging.logEntries.list", project.name)
    writes = [
        f"{r.method} {r.path}"
        for r in project.standin.requests[sent:]
        if r.method != "GET" and not r.path.endswith((":getIamPolicy", "/token"))
    ]
    assert writes == []


def test_setup_fails_on_a_concurrent_policy_change_instead_of_overwriting_it(project, capsys):
    """Read-modify-write with the etag: a change between the read and the write is kept
    (Google answers 409 ABORTED) and setup says so in one line."""
    original = project.iam.set_policy

    def racing(resource, policy):
        if resource == project.name and policy["bindings"] and policy.get("etag"):
            # Someone else writes the project's policy between setup's read and write.
            original(resource, {**project.iam.policy(resource), "etag": ""})
        return original(resource, policy)

    project.iam.set_policy = racing

    assert setup(project) == 1

    err = capsys.readouterr().err
    assert f"IAM policy of projects/{project.project}: 409" in err
    assert "concurrent policy changes" in err
    assert "Traceback" not in err


def test_setup_as_someone_without_the_admin_roles_is_refused_in_googles_words(
    project, tmp_path, monkeypatch, capsys
):
    from google_standin import service_account_key

    key = service_account_key(
        tmp_path / "intern.json",
        f"{project.standin.url}/token",
        client_email=f"intern@{project.project}.iam.gserviceaccount.com",
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))

    assert setup(project) == 1

    err = capsys.readouterr().err.strip()
    assert err.startswith("error: APIs (13): 403")
    assert "Permission 'serviceusage.services.get' denied on resource" in err
    assert len(err.splitlines()) == 1


def test_dry_run_prints_every_request_and_needs_no_credentials(tmp_path, no_config):
    """The real CLI, with no credentials and no network: one JSON request a line."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CHURN_CONFIG": str(no_config),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "absent.json"),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "submit.py"), "setup", "--dry-run", "--project", "proj-p",
         "--region", REGION, "--viewer-group", VIEWERS, "--github-repository", "org/repo",
         "--sample-data"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    requests = [json.loads(line) for line in done.stdout.splitlines()]
    urls = [r["url"] for r in requests]
    assert urls[0] == "https://serviceusage.googleapis.com/v1/projects/proj-p/services:batchEnable"
    assert "https://storage.googleapis.com/storage/v1/b?project=proj-p" in urls
    dataset = next(
        r for r in requests if r["url"].endswith("/bigquery/v2/projects/proj-p/datasets")
    )
    assert dataset["body"]["location"] == REGION
    project_policy = next(
        r for r in requests if r["url"].endswith("/v3/projects/proj-p:setIamPolicy")
    )
    bindings = project_policy["body"]["policy"]["bindings"]
    granted = {(b["role"], m) for b in bindings for m in b["members"]}
    pipelines = "serviceAccount:churn-pipelines@proj-p.iam.gserviceaccount.com"
    assert ("roles/bigquery.user", pipelines) in granted
    assert ("roles/logging.viewer", f"group:{VIEWERS}") in granted
    assert not any(b["role"] in ("roles/owner", "roles/editor") for b in bindings)
    access_entries = next(r for r in requests if r["method"] == "PATCH")["body"]["access"]
    assert access_entries == [
        {"role": role, "userByEmail": pipelines.split(":")[1]}
        for role in ("roles/bigquery.dataViewer", "roles/bigquery.dataEditor")
    ]
    assert urls[-1].endswith("/jobs?uploadType=resumable")  # --sample-data's load
    assert {r["method"] for r in requests} <= {"POST", "PUT", "PATCH"}


@pytest.mark.bigquery
def test_sample_data_fills_a_missing_source_table_once(
    google_cloud, bq_dataset, monkeypatch, no_config, capsys
):
    """Found 3: `--sample-data` loads generated customers into the source table (through
    the warehouse's BigQuery load, here the emulator's), and leaves a table that exists."""
    from components.warehouse import parse_uri
    from components.warehouse.bigquery import row_count

    project_id, dataset = bq_dataset.split(".")
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_GOOGLE_API_ENDPOINT", google_cloud.url)
    monkeypatch.setenv("CHURN_SAMPLE_ROWS", "300")
    project = CloudProject(google_cloud, project=project_id)
    source = f"bq://{project_id}.{dataset}.customers"

    assert setup(project, "--source", source, "--sample-data") == 0
    assert row_count(parse_uri(source)) == 300
    assert setup(project, "--source", source, "--sample-data") == 0

    assert f"source table {source} (300 generated customers if it does not exist): exists" in (
        capsys.readouterr().err
    )
    assert row_count(parse_uri(source)) == 300
