"""`submit.py` on Vertex AI, at the wire: the real CLI, run as a subprocess with the real
client libraries and credentials flow, against the recording stand-in on 127.0.0.1.
Recorded bodies are parsed into the real protos, so a field Vertex would not accept fails."""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from artifact_registry_standin import ArtifactRegistry
from cloud_scheduler_standin import CloudScheduler
from google.cloud import aiplatform_v1, scheduler_v1
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from template_registry_standin import TemplateRegistry
from vertex_pipelines_standin import VertexPipelines, VertexSchedules

ROOT = Path(__file__).resolve().parents[1]
PROJECT, REGION = "acme-corp", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
IMAGE = "europe-west4-docker.pkg.dev/acme-corp/churn/components@sha256:" + "ab" * 32
TRAINING_STEPS = [
    "1. Ingest customers",
    "2. Validate data contract",
    "3. Split train / test",
    "4. Train candidates and select",
    "5. Evaluate on test set",
    "6. Register and promote",
    "7. Summary and report",
]


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "submit.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def base_env(tmp_path: Path) -> dict[str, str]:
    """No credentials, no config file, no Google variables from the caller: only these."""
    (tmp_path / "empty.toml").touch()
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "user"),
        "CHURN_CONFIG": str(tmp_path / "empty.toml"),
        "CHURN_HOME": str(tmp_path / "home"),
        "CHURN_COMPONENT_IMAGE": IMAGE,
        # Anything that tried the internet would fail here rather than hang.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }


@pytest.fixture
def env(google_cloud, tmp_path: Path) -> dict[str, str]:
    # Submissions, templates and schedules check their images in Artifact Registry. Both
    # given by digest, a dry run names the same images as the run (a tag is resolved only
    # when sending: tests/test_build.py).
    registry = ArtifactRegistry(google_cloud)
    registry.create_repository(PROJECT, REGION, "churn")
    registry.push(IMAGE)
    serving = registry.push(f"{REGION}-docker.pkg.dev/{PROJECT}/churn/serving:0.1.0")
    return base_env(tmp_path) | {
        "CHURN_ARTIFACT_REGISTRY_API_ENDPOINT": google_cloud.url,
        "CHURN_SERVING_IMAGE": serving,
        "NO_PROXY": "127.0.0.1",
        "GOOGLE_APPLICATION_CREDENTIALS": os.environ["GOOGLE_APPLICATION_CREDENTIALS"],
        "CHURN_PROJECT": PROJECT,
        "CHURN_REGION": REGION,
        "CHURN_VERTEX_API_ENDPOINT": google_cloud.url,
        "CHURN_SCHEDULER_API_ENDPOINT": google_cloud.url,
        "CHURN_LOGGING_API_ENDPOINT": google_cloud.url,
        "CHURN_TEMPLATE_REGISTRY": f"{google_cloud.url}/{PROJECT}/churn-pipelines",
        "CHURN_POLL_SECONDS": "0.05",
    }


def parse(body: Any, message: Any) -> Any:
    """Parse REST JSON into a real proto; unknown fields fail, as Vertex would reject them."""
    raw = json.dumps(body) if not isinstance(body, str | bytes) else body
    return json_format.Parse(raw, message)


def vertex(standin, **options) -> VertexPipelines:
    """The strict PipelineJob stand-in for this project and region; the summary steps
    report the summaries below."""
    return VertexPipelines(standin, PROJECT, REGION, artifacts=ARTIFACTS, **options)


# The summary steps' metadata as Vertex returns it: every number a float.
SUMMARY = {
    "summarize-training": {
        "run_id": "churn-training-1",
        "status": "succeeded",
        "model_version": 3.0,
        "promoted": True,
        "promotion_reason": "no champion yet",
        "best_model": "gradient_boosting",
        "threshold": 0.31,
        "resampling": "none",
        "calibration": "sigmoid",
        "metrics": {
            "roc_auc": 0.845,
            "pr_auc": 0.66,
            "f1": 0.62,
            "precision": 0.55,
            "recall": 0.7,
            "brier": 0.132,
            "ece": 0.009,
        },
        "interval": {"metric": "roc_auc", "low_high": [0.83, 0.86], "samples": 1000.0},
        "probabilities": {
            "mean_probability": 0.256,
            "churn_rate": 0.256,
            "uncalibrated": {"mean_probability": 0.32},
        },
        "champion": None,
        "cv": [{"family": "gradient_boosting", "cv_roc_auc_mean": 0.84}],
        "rows": {
            "read": 21096.0,
            "duplicates": 3.0,
            "rejected": 10.0,
            "train": 16868.0,
            "test": 4218.0,
        },
        "report": "gs://acme-corp-churn/pipeline-root/run/summarize-training/report",
        "roc_auc": 0.845,
    },
}


SUMMARY["scoring-result"] = {
    "run_id": "churn-scoring-1",
    "status": "succeeded",
    "model_version": 3.0,
    "as_of_date": "2026-12-01",
    "output": "bq://acme-corp.churn.predictions",
    "rejects_output": "bq://acme-corp.churn.predictions_rejects",
    "rows": {"read": 1000.0, "scored": 990.0, "rejected": 10.0, "duplicates": 0.0},
    "expected_churn_rate": 0.25,
    "flagged_share": 0.38,
    "tiers": {"high": 100.0, "medium": 300.0, "low": 590.0},
    "unseen_categories": {},
    "missing_values": {},
    "drift": None,
    "exports": {},
    "report": "gs://acme-corp-churn/pipeline-root/run/summarize-scoring/report",
}
ARTIFACTS = {task: {"summary": summary} for task, summary in SUMMARY.items()}
CONTRACT_ERROR = (
    "Traceback (most recent call last):\n  ...\ncomponents.errors.ContractError: column "
    "`MonthlyCharges` missing from bq://acme-corp.churn.customers; found: tenure"
)
GCPC_IMAGE = re.compile(r"gcr\.io/ml-pipeline/google-cloud-pipeline-components:[\d.]+")


def images(spec: pipeline_spec_pb2.PipelineSpec) -> set[str]:
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


def project_images(spec: pipeline_spec_pb2.PipelineSpec) -> set[str]:
    """The images of the project's own steps (Google's batch prediction op keeps its own)."""
    return {image for image in images(spec) if not GCPC_IMAGE.fullmatch(image)}


def submissions(standin) -> list[Any]:
    return standin.requests_to("POST", rf"/v1/{PARENT}/pipelineJobs")


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_submission_carries_labels_account_cloud_arguments_and_the_image(
    google_cloud, env, command
):
    standin = vertex(google_cloud, start_after=10**6)  # Vertex never gets to start the run
    out = cli(command, "--project", PROJECT, env=env)

    (request,) = submissions(google_cloud)
    assert request.authorized
    job_id = request.query["pipelineJobId"][0]
    assert re.fullmatch(r"churn-(training|scoring)-\d{8}-\d{6}", job_id)
    job = parse(request.raw, aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob()))
    assert job.labels == {"app": "churn-pipelines"}
    assert job.service_account == f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"
    assert job.runtime_config.gcs_output_directory == "gs://acme-corp-churn/pipeline-root"
    spec = parse(json_format.MessageToJson(job.pipeline_spec), pipeline_spec_pb2.PipelineSpec())
    declared = set(spec.root.input_definitions.parameters)
    values = json_format.MessageToDict(job.runtime_config)["parameterValues"]
    assert set(values) == declared  # every input has a value; none left to a default
    assert (
        values["source_uri"]
        == f"bq://{PROJECT}.churn.customers?billing_project=acme-corp&location={REGION}"
    )
    assert values["registry_uri"].startswith(f"vertex://{PARENT}/models/churn")
    for name, value in values.items():
        if name.endswith(("_uri", "_dir")) and value:
            assert value.startswith(("bq://", "gs://", "vertex://")), (name, value)
        assert not str(value).startswith("/"), (name, value)
    # The project's steps run in the project's image; Google's batch prediction op keeps
    # Google's image (it is not our code, and ours has no launcher for it).
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    sent = {name: executor["container"]["image"] for name, executor in executors.items()}
    if command == "score":
        assert GCPC_IMAGE.fullmatch(sent.pop("exec-model-batch-predict"))
    assert set(sent.values()) == {IMAGE}
    # Caching is off unless asked for: every task says so in the spec Vertex runs.
    assert all(not task.caching_options.enable_cache for task in spec.root.dag.tasks.values())
    # Every group has a readable name in the console, not "condition-3".
    groups = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    for dag in groups:
        for key, task in dag.tasks.items():
            assert not task.task_info.name.startswith("condition-"), key
    if command == "score":
        assert spec.root.dag.tasks["condition-branches-2"].task_info.name == (
            "vertex-batch-prediction or chunked-scoring"
        )
    if command == "score":
        assert values["as_of"] == "" and values["time_zone"] == "UTC"
        assert values["model_ref"] == "champion"
    # The run joins its experiment itself (step 0): the submission neither waits for a run
    # Vertex has not started nor fails because of it.
    assert values["experiment"] == "churn-pipelines"
    assert not google_cloud.requests_to("POST", r".*/metadataStores/.*")
    assert standin.runs[job_id].job["state"] == "PIPELINE_STATE_PENDING"
    assert "joins experiment 'churn-pipelines' when Vertex starts it" in out.stderr
    assert (
        f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs/{job_id}"
        f"?project={PROJECT}" in out.stderr
    )


def test_the_dry_run_prints_the_very_request_a_submission_sends(google_cloud, env, tmp_path):
    vertex(google_cloud)
    cli("train", env=env)
    (sent,) = submissions(google_cloud)
    dry = cli("train", "--dry-run", env=env)
    (printed,) = [json.loads(line) for line in dry.stdout.splitlines()]
    assert printed["method"] == "POST"
    assert printed["url"].startswith(f"{google_cloud.url}/v1/{PARENT}/pipelineJobs?pipelineJobId=")
    new = aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob())
    assert parse(printed["body"], new) == parse(sent.raw, type(new)())
    assert len(submissions(google_cloud)) == 1  # the dry run sent nothing


def test_wait_follows_the_run_step_by_step_to_the_summary(google_cloud, env):
    vertex(google_cloud)
    out = cli("train", "--wait", "--json", env=env)
    for step in ["0. Join experiment", *TRAINING_STEPS]:
        assert f"✓ {step}" in out.stderr
    assert "8. Deploy" not in out.stderr  # its branch was not taken
    assert "model v3 (gradient_boosting): ROC-AUC 0.845" in out.stderr
    assert "rows: 21,096 read, 10 rejected (3 duplicates), 16,868 train, 4,218 test" in out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["model_version"] == 3 and result["promoted"] is True
    assert result["rows"]["test"] == 4218
    assert result["metrics"]["roc_auc"] == 0.845
    assert result["report"].startswith("gs://")


def test_score_wait_shows_the_steps_inside_the_branch_and_the_failing_steps_own_line(
    google_cloud, env
):
    """Steps 2 to 4 run inside `dsl.Else`; Vertex reports the failed step's error as the
    replica's exit status, and the step's own line is in its log (Cloud Logging)."""
    standin = vertex(google_cloud, fail={"publish-predictions-2": CONTRACT_ERROR})
    out = cli("score", "--wait", "--json", env=env, check=False)
    assert out.returncode == 1
    for step in ["1. Load champion model", "2. Validate and score in chunks"]:
        assert f"✓ {step}" in out.stderr
    assert "✗ 3. Publish predictions" in out.stderr
    assert (
        "failed in step 3. Publish predictions: column `MonthlyCharges` missing from "
        "bq://acme-corp.churn.customers; found: tenure"
    ) in " ".join(out.stderr.split())
    assert "condition-" not in out.stderr and "Traceback" not in out.stderr
    (query,) = google_cloud.requests_to("POST", "/v2/entries:list")
    assert query.authorized and query.json["resourceNames"] == [f"projects/{PROJECT}"]
    (custom_job,) = standin.logs
    assert query.json["filter"] == (
        f'resource.type="ml_job" AND resource.labels.job_id="{custom_job}"'
    )
    assert json.loads(out.stdout.splitlines()[-1])["status"] == "failed"


def test_a_failed_step_whose_log_cannot_be_read_says_what_to_grant(google_cloud, env):
    def no_logs(_member: str, permission: str, _resource: str) -> bool:
        return not permission.startswith("logging.")

    vertex(google_cloud, fail={"validate-training-data": CONTRACT_ERROR}, authorize=no_logs)
    out = cli("train", "--wait", env=env, check=False)
    assert out.returncode == 1
    line = " ".join(out.stderr.split())
    assert "failed in step 2. Validate data contract: The replica workerpool0-0 exited" in line
    assert "403 Permission 'logging.logEntries.list' denied" in line
    assert "grant roles/logging.viewer" in line


def test_a_missing_image_fails_the_run_at_its_first_step(google_cloud, env):
    vertex(google_cloud, image_exists=lambda uri: uri != IMAGE)
    out = cli("train", "--wait", env=env, check=False)
    assert out.returncode == 1
    line = " ".join(out.stderr.split())
    assert "✗ 1. Ingest customers" in out.stderr
    assert "failed in step 1. Ingest customers: " in line and f"pull image {IMAGE}" in line


def test_a_refused_service_account_is_one_line_with_the_fix(google_cloud, env):
    def no_act_as(_member: str, permission: str, _resource: str) -> bool:
        return permission != "iam.serviceAccounts.actAs"

    vertex(google_cloud, authorize=no_act_as)
    out = cli("train", env=env, check=False)
    assert out.returncode == 1
    account = f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: creating the pipeline job failed: 400 You do not have ")
    assert f"act as service_account: {account}" in line
    assert "roles/iam.serviceAccountUser" in line and "gcloud iam service-accounts" in line


def test_runs_lists_the_projects_vertex_runs_with_a_failed_steps_line(google_cloud, env):
    standin = vertex(google_cloud)
    cli("train", "--wait", env=env)
    standin.fail = {"validate-training-data": CONTRACT_ERROR}
    cli("train", "--wait", env=env | {"CHURN_EXPERIMENT": ""}, check=False)
    out = cli("runs", "--json", env=env)
    (listed,) = google_cloud.requests_to("GET", rf"/v1/{PARENT}/pipelineJobs")
    assert listed.query["filter"] == ['labels.app="churn-pipelines"']
    assert listed.query["orderBy"] == ["create_time desc"]
    failed, succeeded = json.loads(out.stdout)
    assert succeeded["status"] == "succeeded" and succeeded["pipeline"] == "churn-training"
    assert succeeded["headline"] == "ROC-AUC 0.845" and succeeded["model_version"] == 3
    assert succeeded["seconds"] == 8 * 60.0  # eight steps, the experiment's included
    assert failed["status"] == "failed"
    assert failed["headline"] == (
        "2. Validate data contract: column `MonthlyCharges` missing from "
        "bq://acme-corp.churn.customers; found: tenure"
    )


def test_the_run_joins_its_experiment_once_vertex_has_started_it(google_cloud):
    """Step 0's function, in-process against the stand-in: the run's context exists only
    once Vertex started the run; then the experiment is created (or reused) and the run's
    context added to it, as `PipelineJob.submit(experiment=...)` does."""
    from components.errors import ChurnError
    from components.experiment import join_experiment
    from components.settings import Settings
    from pipelines.compiling import build_pipeline

    training_pipeline = build_pipeline("training", Settings())

    standin = vertex(google_cloud, start_after=1)  # started at the second GET
    client = aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": google_cloud.url}
    )
    spec = json_format.MessageToDict(training_pipeline.pipeline_spec)
    for job_id in ("churn-training-1", "churn-training-2"):
        client.create_pipeline_job(
            parent=PARENT,
            pipeline_job=aiplatform_v1.PipelineJob(
                display_name="churn-training", pipeline_spec=spec
            ),
            pipeline_job_id=job_id,
        )
    name = f"{PARENT}/pipelineJobs/churn-training-1"
    with pytest.raises(ChurnError, match="has no metadata context"):
        join_experiment(name, "churn-pipelines", google_cloud.url)  # not started yet
    client.get_pipeline_job(name=f"{PARENT}/pipelineJobs/churn-training-2")
    for job_id in ("churn-training-1", "churn-training-2"):
        join_experiment(f"{PARENT}/pipelineJobs/{job_id}", "churn-pipelines", google_cloud.url)
    experiment = f"{PARENT}/metadataStores/default/contexts/churn-pipelines"
    assert standin.contexts[experiment]["schemaTitle"] == "system.Experiment"
    assert standin.children[experiment] == [
        f"{PARENT}/metadataStores/default/contexts/churn-training-{n}" for n in (1, 2)
    ]
    # The regional endpoint serves its own location only.
    with pytest.raises(ChurnError, match="400 Location us-central1 does not match"):
        join_experiment(
            f"projects/{PROJECT}/locations/us-central1/pipelineJobs/x", "e", google_cloud.url
        )


def test_publish_uploads_both_templates_tagged_and_pinned_by_sha256(google_cloud, env):
    registry = TemplateRegistry(google_cloud, PROJECT, REGION)
    out = cli("publish", env=env)
    cli("publish", env=env)
    packages = ["churn-training", "churn-scoring", "churn-monitoring"]
    assert [u["package"] for u in registry.uploads] == packages * 2
    first, second = registry.uploads[:3], registry.uploads[3:]
    assert [u["version"] for u in first] == [u["version"] for u in second]  # same YAML
    for upload in first:
        tags = upload["tags"].split(",")
        assert tags[0] == "v0.1.0" and tags[-1] == "latest"
        assert any(re.fullmatch(r"git-[0-9a-f]{12}", t) for t in tags) or len(tags) == 2
        spec = json_format.ParseDict(
            yaml.safe_load(upload["content"]), pipeline_spec_pb2.PipelineSpec()
        )
        ours = project_images(spec)
        assert ours == {IMAGE}
        assert len(images(spec) - ours) == (upload["package"] == "churn-scoring")
        uri = (
            f"{google_cloud.url}/{PROJECT}/churn-pipelines/{upload['package']}/{upload['version']}"
        )
        assert uri in out.stderr
    dry = [json.loads(line) for line in cli("publish", "--dry-run", env=env).stdout.splitlines()]
    assert [d["body"]["content"]["sha256"] for d in dry] == [u["version"] for u in first]


def scheduled_run(body: dict[str, Any]) -> Any:
    return parse(body, aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob()))


def test_schedule_creates_then_updates_cloud_scheduler_jobs_never_twice(google_cloud, env):
    registry = TemplateRegistry(google_cloud, PROJECT, REGION)
    scheduler = CloudScheduler(google_cloud, PROJECT)
    env = env | {"CHURN_TIME_ZONE": "Europe/London"}
    first = cli("schedule", env=env)
    second = cli("schedule", env=env)
    assert "churn-training-weekly created" in first.stderr
    assert "churn-training-weekly updated" in second.stderr
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/jobs")) == 3
    patches = google_cloud.requests_to("PATCH", rf"/v1/{PARENT}/jobs/.+")
    assert len(patches) == 3 and len(scheduler.jobs) == 3
    assert set(patches[0].query["updateMask"][0].split(",")) >= {"schedule", "httpTarget"}
    versions = {u["package"]: u["version"] for u in registry.uploads}
    crons = {
        "churn-training-weekly": "0 2 * * 1",
        "churn-scoring-daily": "0 8 * * *",
        "churn-monitoring-weekly": "0 6 * * 1",
    }
    runs = {}
    for request in patches:
        job = parse(request.raw, scheduler_v1.Job.pb(scheduler_v1.Job()))
        short = request.path.rsplit("/", 1)[-1]
        assert job.schedule == crons[short] and job.time_zone == "Europe/London"
        target = job.http_target
        assert target.uri == f"{google_cloud.url}/v1/{PARENT}/pipelineJobs"
        assert target.http_method == scheduler_v1.HttpMethod.POST.value
        assert target.headers["Content-Type"] == "application/json"
        assert target.oauth_token.service_account_email == (
            f"churn-scheduler@{PROJECT}.iam.gserviceaccount.com"
        )
        assert target.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
        assert not target.HasField("oidc_token")
        run = scheduled_run(json.loads(target.body))
        package = run.display_name
        assert run.template_uri == (
            f"{google_cloud.url}/{PROJECT}/churn-pipelines/{package}/{versions[package]}"
        )
        assert re.search(r"/sha256:[0-9a-f]{64}$", run.template_uri)  # pinned, not a tag
        assert run.service_account == f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"
        assert run.runtime_config.gcs_output_directory == "gs://acme-corp-churn/pipeline-root"
        assert dict(run.labels) == {"app": "churn-pipelines"}
        values = json_format.MessageToDict(run.runtime_config)["parameterValues"]
        if package in ("churn-scoring", "churn-monitoring"):
            # Static body: the date is decided when the run starts, in the schedule's zone.
            assert values["as_of"] == "" and values["time_zone"] == "Europe/London"
        # A scheduled run joins the experiment too: the pipeline does it (step 0).
        assert values["experiment"] == "churn-pipelines"
        runs[package] = run
    # A monitoring run that finds a retraining due starts the weekly training schedule's
    # run itself (step 4): the same template, pinned, as churn-pipelines.
    monitoring = json_format.MessageToDict(runs["churn-monitoring"].runtime_config)
    retrain = scheduled_run(json.loads(monitoring["parameterValues"]["retrain_job"]))
    assert retrain == runs["churn-training"]
    assert monitoring["parameterValues"]["vertex_endpoint"] == google_cloud.url
    cli("schedule", "--pause", env=env)
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/jobs/.+:pause")) == 3
    assert {job["state"] for job in scheduler.jobs.values()} == {"PAUSED"}


def test_schedule_creates_then_updates_vertex_schedules_never_twice(google_cloud, env):
    registry = TemplateRegistry(google_cloud, PROJECT, REGION)
    schedules = VertexSchedules(google_cloud, PROJECT, REGION)
    env = env | {"CHURN_TIME_ZONE": "Asia/Tokyo"}
    cli("schedule", "--scheduler", "vertex", env=env)
    cli("schedule", "--scheduler", "vertex", env=env)
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/schedules")) == 3
    patches = google_cloud.requests_to("PATCH", rf"/v1/{PARENT}/schedules/.+")
    assert len(patches) == 3 and len(schedules.schedules) == 3
    versions = {u["package"]: u["version"] for u in registry.uploads}
    crons = {"churn-training-weekly": "TZ=Asia/Tokyo 0 2 * * 1",
             "churn-scoring-daily": "TZ=Asia/Tokyo 0 8 * * *",
             "churn-monitoring-weekly": "TZ=Asia/Tokyo 0 6 * * 1"}  # fmt: skip
    for request in patches:
        schedule = parse(request.raw, aiplatform_v1.Schedule.pb(aiplatform_v1.Schedule()))
        assert schedule.cron == crons[schedule.display_name]
        assert schedule.max_concurrent_run_count == 1
        assert schedule.create_pipeline_job_request.parent == PARENT
        run = schedule.create_pipeline_job_request.pipeline_job
        assert run.template_uri.endswith(f"/{run.display_name}/{versions[run.display_name]}")
        assert run.service_account == f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"
        assert "createPipelineJobRequest" in request.query["updateMask"][0]
    listed = cli("schedule", "--scheduler", "vertex", "--list", env=env)
    assert "churn-scoring-daily" in listed.stdout and "ACTIVE" in listed.stdout


def test_dry_runs_need_no_credentials_and_no_network(tmp_path):
    env = base_env(tmp_path)  # no GOOGLE_APPLICATION_CREDENTIALS, an empty HOME
    del env["CHURN_COMPONENT_IMAGE"]  # the flags alone name the project's image
    train = cli("train", "--dry-run", "--project", "proj-p", "--region", "us-east1", env=env)
    (submission,) = [json.loads(line) for line in train.stdout.splitlines()]
    assert submission["url"].startswith(
        "https://us-east1-aiplatform.googleapis.com/v1/projects/proj-p/locations/us-east1/pipelineJobs?pipelineJobId="
    )
    job = scheduled_run(submission["body"])
    assert job.service_account == "churn-pipelines@proj-p.iam.gserviceaccount.com"
    spec = parse(json_format.MessageToJson(job.pipeline_spec), pipeline_spec_pb2.PipelineSpec())
    assert images(spec) == {"us-east1-docker.pkg.dev/proj-p/churn/components:0.1.0"}

    schedule = cli("schedule", "--dry-run", "--project", "proj-p", "--region", "us-east1", env=env)
    lines = [json.loads(line) for line in schedule.stdout.splitlines()]
    assert [(r["method"], r["url"].split("/v1/")[0]) for r in lines] == [
        ("POST", "https://us-east1-kfp.pkg.dev/proj-p/churn-pipelines"),
        ("POST", "https://us-east1-kfp.pkg.dev/proj-p/churn-pipelines"),
        ("POST", "https://us-east1-kfp.pkg.dev/proj-p/churn-pipelines"),
        ("GET", "https://cloudscheduler.googleapis.com"),
        ("POST", "https://cloudscheduler.googleapis.com"),
        ("GET", "https://cloudscheduler.googleapis.com"),
        ("POST", "https://cloudscheduler.googleapis.com"),
        ("GET", "https://cloudscheduler.googleapis.com"),
        ("POST", "https://cloudscheduler.googleapis.com"),
    ]
    created = parse(lines[4]["body"], scheduler_v1.Job.pb(scheduler_v1.Job()))
    run = scheduled_run(json.loads(created.http_target.body))
    version = lines[0]["body"]["content"]["sha256"]
    assert (
        run.template_uri
        == f"https://us-east1-kfp.pkg.dev/proj-p/churn-pipelines/churn-training/{version}"
    )
    # The body on the wire is base64, as Cloud Scheduler takes it.
    assert json.loads(base64.b64decode(lines[4]["body"]["httpTarget"]["body"]))["templateUri"]
