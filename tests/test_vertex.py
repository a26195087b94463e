"""`submit.py` on Vertex AI, at the wire: the real CLI, run as a subprocess with the real
client libraries and credentials flow, against the recording stand-in on 127.0.0.1.
Recorded bodies are parsed into the real protos, so a field Vertex would not accept fails."""

import base64
import email.parser
import email.policy
import hashlib
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
from google.cloud import aiplatform_v1, scheduler_v1
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

ROOT = Path(__file__).resolve().parents[1]
PROJECT, REGION = "acme", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
IMAGE = "europe-west4-docker.pkg.dev/acme/churn/components@sha256:" + "ab" * 32
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
        "CHURN_TEMPLATE_REGISTRY": f"{google_cloud.url}/{PROJECT}/churn-pipelines",
        "CHURN_POLL_SECONDS": "0.05",
    }


def parse(body: Any, message: Any) -> Any:
    """Parse REST JSON into a real proto; unknown fields fail, as Vertex would reject them."""
    raw = json.dumps(body) if not isinstance(body, str | bytes) else body
    return json_format.Parse(raw, message)


class FakeVertex:
    """Pipeline jobs and metadata contexts, answering like Vertex AI. A created run moves
    through `states` (one per GET) and ends as `final` says."""

    def __init__(self, standin, final: str = "SUCCEEDED", error: str = "") -> None:
        self.standin, self.final, self.error = standin, final, error
        self.jobs: dict[str, dict[str, Any]] = {}
        self.gets = 0
        self.contexts: set[str] = set()
        standin.route("POST", rf"/v1/{PARENT}/pipelineJobs", self._create)
        standin.route("GET", rf"/v1/{PARENT}/pipelineJobs/(?P<id>[^/]+)", self._get)
        standin.route("GET", rf"/v1/{PARENT}/pipelineJobs", self._list)
        store = rf"/v1/{PARENT}/metadataStores/default/contexts"
        standin.route("POST", store, self._create_context)
        standin.route("POST", rf"{store}/(?P<id>[^/:]+):addContextChildren", self._children)

    def _create(self, request, _match):
        job_id = request.query["pipelineJobId"][0]
        job = request.json | {
            "name": f"{PARENT}/pipelineJobs/{job_id}",
            "state": "PIPELINE_STATE_PENDING",
            "createTime": "2026-12-01T08:00:00Z",
            "jobDetail": {
                "pipelineRunContext": {"name": f"{PARENT}/metadataStores/default/contexts/{job_id}"}
            },
        }
        self.jobs[job_id] = job
        return 200, job

    def _get(self, _request, match):
        job = dict(self.jobs[match["id"]])
        self.gets += 1
        tasks = sorted(  # in step order: "1. Ingest customers", ...
            job["pipelineSpec"]["root"]["dag"]["tasks"].items(),
            key=lambda item: item[1]["taskInfo"]["name"],
        )
        done = min(self.gets, len(tasks))
        details = [self._task(key, spec, "SUCCEEDED") for key, spec in tasks[: done - 1]]
        if done == len(tasks) and self.final == "FAILED":
            details.append(self._task(*tasks[1], "FAILED"))  # step 2 fails
            job["state"] = "PIPELINE_STATE_FAILED"
            job["error"] = {"code": 9, "message": "The DAG failed because some tasks failed."}
        elif done == len(tasks):
            details.append(self._task(*tasks[-1], "SUCCEEDED"))
            job["state"] = "PIPELINE_STATE_SUCCEEDED"
            job["startTime"], job["endTime"] = "2026-12-01T08:00:00Z", "2026-12-01T08:09:30Z"
        else:
            details.append(self._task(*tasks[done - 1], "RUNNING"))
            job["state"] = "PIPELINE_STATE_RUNNING"
        job["jobDetail"] = job["jobDetail"] | {"taskDetails": details}
        return 200, job

    def _task(self, key: str, spec: dict[str, Any], state: str) -> dict[str, Any]:
        task = {
            "taskName": key,
            "state": state,
            "createTime": "2026-12-01T08:00:00Z",
            "startTime": "2026-12-01T08:00:00Z",
            "endTime": "2026-12-01T08:01:00Z",
        }
        if state == "FAILED":
            task["error"] = {"code": 9, "message": self.error}
        if state == "SUCCEEDED" and key.startswith("summarize"):
            task["outputs"] = {"summary": {"artifacts": [{"metadata": SUMMARY[key]}]}}
        return task

    def _list(self, _request, _match):
        # As Vertex does, a listing leaves out each run's details.
        jobs = [self._get(None, {"id": job_id})[1] for job_id in self.jobs]
        return 200, {
            "pipelineJobs": [{k: v for k, v in job.items() if k != "jobDetail"} for job in jobs]
        }

    def _create_context(self, request, _match):
        context_id = request.query["contextId"][0]
        if context_id in self.contexts:
            return 409, {"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "exists"}}
        self.contexts.add(context_id)
        return 200, request.json | {"name": f"{PARENT}/metadataStores/default/contexts/x"}

    def _children(self, _request, _match):
        return 200, {}


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
        "report": "gs://acme-churn/pipeline-root/run/summarize-training/report",
        "roc_auc": 0.845,
    },
}


def images(spec: pipeline_spec_pb2.PipelineSpec) -> set[str]:
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


def submissions(standin) -> list[Any]:
    return standin.requests_to("POST", rf"/v1/{PARENT}/pipelineJobs")


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_submission_carries_labels_account_cloud_arguments_and_the_image(
    google_cloud, env, command
):
    FakeVertex(google_cloud)
    out = cli(command, "--project", PROJECT, env=env)

    (request,) = submissions(google_cloud)
    assert request.authorized
    job_id = request.query["pipelineJobId"][0]
    assert re.fullmatch(r"churn-(training|scoring)-\d{8}-\d{6}", job_id)
    job = parse(request.raw, aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob()))
    assert job.labels == {"app": "churn-pipelines"}
    assert job.service_account == f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"
    assert job.runtime_config.gcs_output_directory == "gs://acme-churn/pipeline-root"
    spec = parse(json_format.MessageToJson(job.pipeline_spec), pipeline_spec_pb2.PipelineSpec())
    declared = set(spec.root.input_definitions.parameters)
    values = json_format.MessageToDict(job.runtime_config)["parameterValues"]
    assert set(values) == declared  # every input has a value; none left to a default
    assert (
        values["source_uri"]
        == f"bq://{PROJECT}.churn.customers?billing_project=acme&location={REGION}"
    )
    assert values["registry_uri"].startswith(f"vertex://{PARENT}/models/churn")
    for name, value in values.items():
        if name.endswith(("_uri", "_dir")) and value:
            assert value.startswith(("bq://", "gs://", "vertex://")), (name, value)
        assert not str(value).startswith("/"), (name, value)
    assert images(spec) == {IMAGE}
    # Caching is off unless asked for: every task says so in the spec Vertex runs.
    assert all(not task.caching_options.enable_cache for task in spec.root.dag.tasks.values())
    if command == "score":
        assert values["as_of"] == "" and values["time_zone"] == "UTC"
        assert values["model_ref"] == "champion"
    # The run joined the experiment: its context created, then the run's context added.
    (experiment,) = google_cloud.requests_to(
        "POST", rf"/v1/{PARENT}/metadataStores/default/contexts"
    )
    assert experiment.query["contextId"] == ["churn-pipelines"]
    parse(experiment.raw, aiplatform_v1.Context.pb(aiplatform_v1.Context()))
    (children,) = google_cloud.requests_to(
        "POST", r".*/contexts/churn-pipelines:addContextChildren"
    )
    assert children.json["childContexts"] == [f"{PARENT}/metadataStores/default/contexts/{job_id}"]
    assert (
        f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs/{job_id}"
        f"?project={PROJECT}" in out.stderr
    )


def test_the_dry_run_prints_the_very_request_a_submission_sends(google_cloud, env, tmp_path):
    FakeVertex(google_cloud)
    cli("train", env=env)
    (sent,) = submissions(google_cloud)
    dry = cli("train", "--dry-run", env=env)
    printed = [json.loads(line) for line in dry.stdout.splitlines()]
    assert [p["method"] for p in printed] == ["POST", "POST"]
    assert printed[0]["url"].startswith(
        f"{google_cloud.url}/v1/{PARENT}/pipelineJobs?pipelineJobId="
    )
    new = aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob())
    assert parse(printed[0]["body"], new) == parse(sent.raw, type(new)())
    assert len(submissions(google_cloud)) == 1  # the dry run sent nothing


def test_wait_follows_the_run_step_by_step_to_the_summary(google_cloud, env):
    FakeVertex(google_cloud)
    out = cli("train", "--wait", "--json", env=env)
    for step in TRAINING_STEPS:
        assert f"✓ {step}" in out.stderr
    assert "model v3 (gradient_boosting): ROC-AUC 0.845" in out.stderr
    assert "rows: 21,096 read, 10 rejected (3 duplicates), 16,868 train, 4,218 test" in out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["model_version"] == 3 and result["promoted"] is True
    assert result["rows"]["test"] == 4218
    assert result["metrics"]["roc_auc"] == 0.845
    assert result["report"].startswith("gs://")


def test_a_failed_run_exits_non_zero_with_the_failing_steps_error_line(google_cloud, env):
    error = (
        "Traceback (most recent call last):\n  ...\ncomponents.errors.ContractError: column "
        "`MonthlyCharges` missing from bq://acme.churn.customers; found: tenure\n"
    )
    FakeVertex(google_cloud, final="FAILED", error=error)
    out = cli("train", "--wait", "--json", env=env, check=False)
    assert out.returncode == 1
    assert "✗ 2. Validate data contract" in out.stderr
    assert (
        "failed in step 2. Validate data contract: column `MonthlyCharges` missing from "
        "bq://acme.churn.customers; found: tenure"
    ) in " ".join(out.stderr.split())
    assert json.loads(out.stdout.splitlines()[-1])["status"] == "failed"


def test_runs_lists_the_projects_vertex_runs(google_cloud, env):
    FakeVertex(google_cloud)
    cli("train", "--wait", env=env)
    out = cli("runs", "--json", env=env)
    (listed,) = google_cloud.requests_to("GET", rf"/v1/{PARENT}/pipelineJobs")
    assert listed.query["filter"] == ['labels.app="churn-pipelines"']
    assert listed.query["orderBy"] == ["create_time desc"]
    (row,) = json.loads(out.stdout)
    assert row["status"] == "succeeded" and row["pipeline"] == "churn-training"
    assert row["headline"] == "ROC-AUC 0.845" and row["model_version"] == 3
    assert row["seconds"] == 570.0


class FakeRegistry:
    """Artifact Registry's KFP upload: a multipart form of `content` (the YAML) and `tags`;
    the answer is `<package>/sha256:<digest of the content>` as plain text."""

    def __init__(self, standin) -> None:
        self.uploads: list[dict[str, Any]] = []
        standin.route("POST", rf"/{PROJECT}/churn-pipelines", self._upload)

    def _upload(self, request, _match):
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.raw)
        parts = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
        content = parts["content"].get_payload(decode=True)
        package = yaml.safe_load(content)["pipelineInfo"]["name"]
        version = "sha256:" + hashlib.sha256(content).hexdigest()
        self.uploads.append(
            {
                "package": package,
                "version": version,
                "tags": parts["tags"].get_content(),
                "content": content,
            }
        )
        return 200, f"{package}/{version}".encode()


def test_publish_uploads_both_templates_tagged_and_pinned_by_sha256(google_cloud, env):
    registry = FakeRegistry(google_cloud)
    out = cli("publish", env=env)
    cli("publish", env=env)
    assert [u["package"] for u in registry.uploads] == ["churn-training", "churn-scoring"] * 2
    first, second = registry.uploads[:2], registry.uploads[2:]
    assert [u["version"] for u in first] == [u["version"] for u in second]  # same YAML
    for upload in first:
        tags = upload["tags"].split(",")
        assert tags[0] == "v0.1.0" and tags[-1] == "latest"
        assert any(re.fullmatch(r"git-[0-9a-f]{12}", t) for t in tags) or len(tags) == 2
        spec = json_format.ParseDict(
            yaml.safe_load(upload["content"]), pipeline_spec_pb2.PipelineSpec()
        )
        assert images(spec) == {IMAGE}
        uri = (
            f"{google_cloud.url}/{PROJECT}/churn-pipelines/{upload['package']}/{upload['version']}"
        )
        assert uri in out.stderr
    dry = [json.loads(line) for line in cli("publish", "--dry-run", env=env).stdout.splitlines()]
    assert [d["body"]["content"]["sha256"] for d in dry] == [u["version"] for u in first]


class FakeCloudScheduler:
    def __init__(self, standin) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        jobs = rf"/v1/{PARENT}/jobs"
        standin.route("GET", rf"{jobs}/(?P<id>[^/:]+)", self._get)
        standin.route("POST", jobs, self._create)
        standin.route("PATCH", rf"{jobs}/(?P<id>[^/:]+)", self._update)
        standin.route("POST", rf"{jobs}/(?P<id>[^/:]+):pause", self._pause)

    def _pause(self, _request, match):
        name = f"{PARENT}/jobs/{match['id']}"
        self.jobs[name]["state"] = "PAUSED"
        return 200, self.jobs[name]

    def _get(self, _request, match):
        name = f"{PARENT}/jobs/{match['id']}"
        if name not in self.jobs:
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no job"}}
        return 200, self.jobs[name]

    def _create(self, request, _match):
        job = request.json
        if job["name"] in self.jobs:
            return 409, {"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "exists"}}
        self.jobs[job["name"]] = job | {"state": "ENABLED"}
        return 200, self.jobs[job["name"]]

    def _update(self, request, match):
        name = f"{PARENT}/jobs/{match['id']}"
        self.jobs[name] = self.jobs[name] | request.json
        return 200, self.jobs[name]


def scheduled_run(body: dict[str, Any]) -> Any:
    return parse(body, aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob()))


def test_schedule_creates_then_updates_cloud_scheduler_jobs_never_twice(google_cloud, env):
    registry = FakeRegistry(google_cloud)
    scheduler = FakeCloudScheduler(google_cloud)
    env = env | {"CHURN_TIME_ZONE": "Europe/London"}
    first = cli("schedule", env=env)
    second = cli("schedule", env=env)
    assert "churn-training-weekly created" in first.stderr
    assert "churn-training-weekly updated" in second.stderr
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/jobs")) == 2
    patches = google_cloud.requests_to("PATCH", rf"/v1/{PARENT}/jobs/.+")
    assert len(patches) == 2 and len(scheduler.jobs) == 2
    assert set(patches[0].query["updateMask"][0].split(",")) >= {"schedule", "httpTarget"}
    versions = {u["package"]: u["version"] for u in registry.uploads}
    crons = {"churn-training-weekly": "0 2 * * 1", "churn-scoring-daily": "0 8 * * *"}
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
        assert run.runtime_config.gcs_output_directory == "gs://acme-churn/pipeline-root"
        assert dict(run.labels) == {"app": "churn-pipelines"}
        values = json_format.MessageToDict(run.runtime_config)["parameterValues"]
        if package == "churn-scoring":
            # Static body: the date is decided when the run starts, in the schedule's zone.
            assert values["as_of"] == "" and values["time_zone"] == "Europe/London"
    cli("schedule", "--pause", env=env)
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/jobs/.+:pause")) == 2
    assert {job["state"] for job in scheduler.jobs.values()} == {"PAUSED"}


class FakeVertexSchedules:
    def __init__(self, standin) -> None:
        self.schedules: dict[str, dict[str, Any]] = {}
        path = rf"/v1/{PARENT}/schedules"
        standin.route("GET", path, self._list)
        standin.route("POST", path, self._create)
        standin.route("PATCH", rf"{path}/(?P<id>[^/:]+)", self._update)

    def _list(self, request, _match):
        wanted = re.fullmatch(r'display_name="(.+)"', request.query["filter"][0])[1]
        found = [s for s in self.schedules.values() if s["displayName"] == wanted]
        return 200, {"schedules": found}

    def _create(self, request, _match):
        name = f"{PARENT}/schedules/{len(self.schedules) + 1}"
        self.schedules[name] = request.json | {"name": name, "state": "ACTIVE"}
        return 200, self.schedules[name]

    def _update(self, request, match):
        name = f"{PARENT}/schedules/{match['id']}"
        self.schedules[name] = self.schedules[name] | request.json
        return 200, self.schedules[name]


def test_schedule_creates_then_updates_vertex_schedules_never_twice(google_cloud, env):
    registry = FakeRegistry(google_cloud)
    schedules = FakeVertexSchedules(google_cloud)
    env = env | {"CHURN_TIME_ZONE": "Asia/Tokyo"}
    cli("schedule", "--scheduler", "vertex", env=env)
    cli("schedule", "--scheduler", "vertex", env=env)
    assert len(google_cloud.requests_to("POST", rf"/v1/{PARENT}/schedules")) == 2
    patches = google_cloud.requests_to("PATCH", rf"/v1/{PARENT}/schedules/.+")
    assert len(patches) == 2 and len(schedules.schedules) == 2
    versions = {u["package"]: u["version"] for u in registry.uploads}
    crons = {"churn-training-weekly": "TZ=Asia/Tokyo 0 2 * * 1",
             "churn-scoring-daily": "TZ=Asia/Tokyo 0 8 * * *"}  # fmt: skip
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
    train = cli("train", "--dry-run", "--project", "P", "--region", "R", env=env)
    (submission, experiment) = [json.loads(line) for line in train.stdout.splitlines()]
    assert submission["url"].startswith(
        "https://R-aiplatform.googleapis.com/v1/projects/P/locations/R/pipelineJobs?pipelineJobId="
    )
    job = scheduled_run(submission["body"])
    assert job.service_account == "churn-pipelines@P.iam.gserviceaccount.com"
    spec = parse(json_format.MessageToJson(job.pipeline_spec), pipeline_spec_pb2.PipelineSpec())
    assert images(spec) == {"R-docker.pkg.dev/P/churn/components:0.1.0"}
    assert experiment["url"].endswith("/metadataStores/default/contexts?contextId=churn-pipelines")

    schedule = cli("schedule", "--dry-run", "--project", "P", "--region", "R", env=env)
    lines = [json.loads(line) for line in schedule.stdout.splitlines()]
    assert [(r["method"], r["url"].split("/v1/")[0]) for r in lines] == [
        ("POST", "https://R-kfp.pkg.dev/P/churn-pipelines"),
        ("POST", "https://R-kfp.pkg.dev/P/churn-pipelines"),
        ("GET", "https://cloudscheduler.googleapis.com"),
        ("POST", "https://cloudscheduler.googleapis.com"),
        ("GET", "https://cloudscheduler.googleapis.com"),
        ("POST", "https://cloudscheduler.googleapis.com"),
    ]
    created = parse(lines[3]["body"], scheduler_v1.Job.pb(scheduler_v1.Job()))
    run = scheduled_run(json.loads(created.http_target.body))
    version = lines[0]["body"]["content"]["sha256"]
    assert run.template_uri == f"https://R-kfp.pkg.dev/P/churn-pipelines/churn-training/{version}"
    # The body on the wire is base64, as Cloud Scheduler takes it.
    assert json.loads(base64.b64decode(lines[3]["body"]["httpTarget"]["body"]))["templateUri"]
