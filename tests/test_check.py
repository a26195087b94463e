"""`submit.py check` against the strict Google stand-in, on a project `setup` made, clean and
broken in each of the ways issue 16 found; and the access table against Google's roles."""

import json
import re
from pathlib import Path

import pytest
from google_standin import CloudProject, Iam, refuse
from strict_cloud import strict_cloud

import submit
from components.contract import TELCO_CHURN
from components.settings import Settings
from pipelines import access

REGION = "europe-west4"
VIEWERS = "churn-viewers@example.com"
TEAM = "churn-team@example.com"


@pytest.fixture
def project(google_cloud, monkeypatch, no_config) -> CloudProject:
    """A project behind the stand-in, with a champion model in its Vertex registry."""
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_GOOGLE_API_ENDPOINT", google_cloud.url)
    monkeypatch.setenv("CHURN_VERTEX_API_ENDPOINT", google_cloud.url)
    made = strict_cloud(google_cloud, REGION).project
    model = f"projects/{made.project}/locations/{REGION}/models/churn"

    def champion(request, _match):
        # Vertex's answer, judged by the stand-in's IAM like every other call.
        api = "aiplatform.googleapis.com"
        if refused := refuse(google_cloud, request, api, "aiplatform.models.get", model):
            return refused
        return 200, {"name": model, "versionId": "3", "versionAliases": ["champion"]}

    google_cloud.route("GET", f"/v1/{model}(@|%40)champion", champion)
    return made


def setup(project: CloudProject, *extra: str) -> None:
    assert submit.main(["setup", "--project", project.project, "--region", REGION, *extra]) == 0


def source_table(
    project: CloudProject, columns=TELCO_CHURN.columns, table: str = "churn.customers"
) -> None:
    """The customer table (`DATASET.TABLE` in the project), made as the person setting up
    would: schema only."""
    from google.cloud import bigquery

    client = bigquery.Client(
        project=project.project, client_options={"api_endpoint": project.standin.url}
    )
    kinds = {"numeric": "FLOAT64", "id": "STRING", "categorical": "STRING", "label": "STRING"}
    schema = [bigquery.SchemaField(c.name, kinds[c.kind]) for c in columns]
    client.create_table(bigquery.Table(f"{project.project}.{table}", schema=schema))


def check(project: CloudProject, capsys, *extra: str) -> tuple[int, list[str], str]:
    """Run check: (exit code, the lines it printed, its JSON output if asked)."""
    capsys.readouterr()
    code = submit.main(["check", "--project", project.project, "--region", REGION, *extra])
    out = capsys.readouterr()
    return code, out.err.splitlines(), out.out


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


SETUP = f"python submit.py setup --project standin-project --region {REGION}"


def test_check_passes_on_a_clean_setup(project, capsys):
    groups = ("--submitter-group", TEAM, "--viewer-group", VIEWERS)
    setup(project, *groups)
    source_table(project)

    code, lines, out = check(project, capsys, *groups, "--json")

    assert code == 0, "\n".join(lines)
    # Before the first build and schedule, images and schedules are warnings with their fix.
    assert re.fullmatch(r"all \d+ checks passed \(5 warnings\)", lines[-1])
    assert [line.split(":")[0] for line in lines if line.startswith("WARN")] == [
        "WARN images", "WARN images", "WARN schedules", "WARN schedules", "WARN schedules"
    ]  # fmt: skip
    checked = {line.split(":")[0][5:] for line in lines[:-1]}
    assert checked == {
        "apis", "accounts", "permissions", "locations", "repositories", "source table", "champion",
        "images", "schedules",
    }  # fmt: skip
    findings = json.loads(out)
    assert all(f["ok"] for f in findings) and len(findings) == len(lines) - 1
    # The README shows this output, for a project named my-project.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("right after `setup`:\n\n```text\n", 1)[1].split("\n```", 1)[0]
    assert shown.splitlines() == [line.replace(project.project, "my-project") for line in lines]


def test_check_finds_the_pipelines_account_cannot_open_read_sessions(project, capsys):
    """Found 2: with roles/bigquery.jobUser only, reads get a 403 at step 1."""
    setup(project)
    source_table(project)
    pipelines = f"serviceAccount:churn-pipelines@{project.project}.iam.gserviceaccount.com"
    project.iam.revoke(pipelines, "roles/bigquery.user", project.name)
    project.iam.grant(pipelines, "roles/bigquery.jobUser", project.name)

    code, lines, _ = check(project, capsys)

    assert code == 1
    assert (
        f"FAIL permissions: churn-pipelines@{project.project}.iam.gserviceaccount.com lacks "
        "bigquery.readsessions.create, bigquery.readsessions.getData on projects/standin-project "
        "(training 1 / scoring 2: read the customer table (Storage Read)); fix: " + SETUP
    ) in failures(lines)


def test_check_finds_the_pipelines_account_cannot_start_a_retraining_run(project, capsys):
    """A scheduled monitoring run starts its retraining run as churn-pipelines: Vertex
    refuses unless the account may act as itself."""
    setup(project)
    source_table(project)
    email = f"churn-pipelines@{project.project}.iam.gserviceaccount.com"
    account = f"projects/{project.project}/serviceAccounts/{email}"
    project.iam.revoke(f"serviceAccount:{email}", "roles/iam.serviceAccountUser", account)

    code, lines, _ = check(project, capsys)

    assert code == 1
    assert failures(lines) == [
        f"FAIL permissions: {email} lacks iam.serviceAccounts.actAs on {account} (monitoring "
        f"4: start a retraining run as churn-pipelines); fix: {SETUP}"
    ]


def test_check_finds_no_source_table(project, capsys):
    """Found 3: the default source table was never made nor loaded."""
    setup(project)

    code, lines, _ = check(project, capsys)

    assert code == 1
    assert failures(lines) == [
        "FAIL source table: bq://standin-project.churn.customers does not exist; fix: load "
        "your customers into standin-project.churn.customers, or generated ones: "
        f"{SETUP} --sample-data"
    ]


def test_check_finds_a_source_table_that_does_not_fit_the_contract(project, capsys):
    setup(project)
    source_table(project, [c for c in TELCO_CHURN.columns if c.name != "MonthlyCharges"])

    code, lines, _ = check(project, capsys)

    assert code == 1
    (line,) = failures(lines)
    assert "does not fit the data contract: `MonthlyCharges` missing" in line


def test_check_finds_a_dataset_in_us_while_the_region_is_europe(project, capsys):
    """Found 4: the old README made the dataset in US; setup leaves it (a dataset cannot
    move) and check says what to do."""
    from google.cloud import bigquery

    project.services.add("bigquery.googleapis.com")  # enabled by hand, like the dataset
    client = bigquery.Client(
        project=project.project, client_options={"api_endpoint": project.standin.url}
    )
    client.create_dataset(bigquery.Dataset(f"{project.project}.churn"), timeout=10)
    assert project.datasets[f"{project.project}:churn"]["location"] == "US"
    setup(project)
    assert "churn: exists, in US, not europe-west4: see `check`" in capsys.readouterr().err
    source_table(project)

    code, lines, _ = check(project, capsys)

    assert code == 1
    assert failures(lines) == [
        "FAIL locations: BigQuery dataset standin-project.churn is in US, region is "
        "europe-west4: Vertex batch prediction needs its input and output in the model's "
        "region (a dataset cannot move); fix: set source = "
        '"bq://standin-project.churn_europe_west4.customers" and predictions = '
        '"bq://standin-project.churn_europe_west4.churn_predictions" in churn.toml, then '
        f"{SETUP} (it makes the dataset there), and load the customers into it (or add "
        "--sample-data)"
    ]


def test_check_finds_viewers_who_cannot_open_reports(project, capsys):
    """Found 9: people who inspect runs need storage.objects.get on the bucket."""
    setup(project, "--viewer-group", VIEWERS)
    source_table(project)
    bucket = f"projects/_/buckets/{project.project}-churn"
    project.iam.revoke(f"group:{VIEWERS}", "roles/storage.objectViewer", bucket)

    code, lines, _ = check(project, capsys, "--viewer-group", VIEWERS)

    assert code == 1
    assert failures(lines) == [
        f"FAIL permissions: {VIEWERS} lacks storage.objects.get on {bucket} (open a run's "
        f"HTML report); fix: {SETUP} --viewer-group {VIEWERS}"
    ]


def test_check_before_setup_says_to_run_setup(project, capsys):
    code, lines, _ = check(project, capsys)

    assert code == 1
    assert failures(lines)[0].startswith("FAIL apis: not enabled: aiplatform.googleapis.com")
    assert all(line.endswith(SETUP) or "--sample-data" in line for line in failures(lines)[:5])


# --- the access table against Google's role definitions -----------------------------------


def test_the_grants_cover_every_step_and_nothing_broader():
    """Each need of pipelines/access.py is held, judged by the stand-in's IAM with the
    roles' includedPermissions as Google publishes them (tests/data/iam_roles.json); no
    Owner/Editor, and no admin role but the one Cloud Scheduler offers for creating jobs."""
    settings = Settings(project="proj-p", region=REGION, viewer_group=VIEWERS, submitter_group=TEAM)
    iam = Iam()
    iam.parents[access.resource_name("bucket", settings)] = "projects/proj-p"
    for grant in access.GRANTS:
        member = access.principal_member(grant.principal, settings, github_repository="o/r")
        resource = access.resource_name(grant.resource, settings)
        iam.grant(member, grant.role, resource, access.condition_expression(grant, settings))
    for need in access.NEEDS:
        member = access.principal_member(need.principal, settings, github_repository="o/r")
        resource = access.resource_name(need.resource, settings)
        missing = [p for p in need.permissions if not iam.allowed(member, p, resource)]
        assert not missing, f"{need.principal} ({need.what}) lacks {missing} on {resource}"
    roles = {grant.role for grant in access.GRANTS}
    assert not roles & {"roles/owner", "roles/editor"}
    admin = {r for r in roles if re.search(r"(?i)admin$", r)}
    assert admin == {"roles/cloudscheduler.admin"}


def test_the_prediction_dataset_grant_reaches_only_prediction_datasets():
    settings = Settings(project="proj-p", region=REGION)
    iam = Iam()
    (grant,) = [g for g in access.GRANTS if g.condition]
    member = access.principal_member(grant.principal, settings)
    iam.grant(member, grant.role, "projects/proj-p", access.condition_expression(grant, settings))
    assert iam.allowed(
        member, "bigquery.datasets.delete", "projects/proj-p/datasets/prediction_x_1"
    )
    assert not iam.allowed(member, "bigquery.datasets.delete", "projects/proj-p/datasets/churn")


def test_the_readme_shows_the_grants_of_the_access_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert access.markdown_table() in readme


def test_check_warns_without_failing_when_no_model_is_trained_yet(project, capsys):
    setup(project)
    source_table(project)
    project.standin.route(
        "GET",
        f"/v1/projects/{project.project}/locations/{REGION}/models/churn(@|%40)champion",
        lambda _r, _m: (404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no"}}),
    )

    code, lines, _ = check(project, capsys)

    assert code == 0
    assert lines[-1].endswith("checks passed (6 warnings)")  # images, schedules, champion
    assert (
        f"WARN champion: no champion in projects/{project.project}/locations/{REGION}/models/"
        "churn yet: scoring refuses to run until one is promoted; fix: python submit.py train "
        f"--project {project.project} --region {REGION} --wait"
    ) in lines


def test_check_without_credentials_says_how_to_sign_in(tmp_path, monkeypatch, no_config, capsys):
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))

    assert submit.main(["check", "--project", "proj-p", "--region", REGION]) == 1

    assert capsys.readouterr().err.strip() == (
        "error: no Google Cloud credentials found: run `gcloud auth application-default "
        "login` (or set GOOGLE_APPLICATION_CREDENTIALS)"
    )
