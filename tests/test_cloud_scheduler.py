"""`submit.py schedule` against a Cloud Scheduler stand-in as strict as the service, and the
scheduler firing the jobs it made: each sends a PipelineJob to Vertex AI with an OAuth token
of the scheduler account, naming a template that Artifact Registry really holds.

The CLI runs in this process (`submit.main`): the same code as the command line, without
paying its imports once per call."""

import json
from pathlib import Path

import pytest
import requests
from artifact_registry_standin import ArtifactRegistry
from cloud_scheduler_standin import CloudScheduler
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from google_standin import CLIENT_EMAIL, access_token
from template_registry_standin import TemplateRegistry

import submit

PROJECT, REGION = "acme-corp", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
SCHEDULER_ACCOUNT = f"churn-scheduler@{PROJECT}.iam.gserviceaccount.com"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/churn/components@sha256:" + "ab" * 32


@pytest.fixture
def cloud(google_cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_config: Path):
    """The stand-in with a Cloud Scheduler, a KFP repository and a Vertex pipelineJobs
    route that records what the fired jobs send; the CLI's settings point at it."""
    images = ArtifactRegistry(google_cloud)
    images.create_repository(PROJECT, REGION, "churn")
    images.push(IMAGE)
    serving = images.push(f"{REGION}-docker.pkg.dev/{PROJECT}/churn/serving:0.1.0")
    for name, value in {
        "CHURN_ARTIFACT_REGISTRY_API_ENDPOINT": google_cloud.url,
        "CHURN_SERVING_IMAGE": serving,
        "CHURN_CONFIG": str(no_config),
        "CHURN_HOME": str(tmp_path / "home"),
        "CHURN_PROJECT": PROJECT,
        "CHURN_REGION": REGION,
        "CHURN_COMPONENT_IMAGE": IMAGE,
        "CHURN_VERTEX_API_ENDPOINT": google_cloud.url,
        "CHURN_SCHEDULER_API_ENDPOINT": google_cloud.url,
        "CHURN_TEMPLATE_REGISTRY": f"{google_cloud.url}/{PROJECT}/churn-pipelines",
    }.items():
        monkeypatch.setenv(name, value)
    google_cloud.scheduler = CloudScheduler(google_cloud, PROJECT)
    google_cloud.templates = TemplateRegistry(google_cloud, PROJECT, REGION)
    google_cloud.runs = []

    def create_run(request, _match):
        google_cloud.runs.append(request)
        return 200, request.json | {"name": f"{PARENT}/pipelineJobs/run-{len(google_cloud.runs)}"}

    google_cloud.route("POST", rf"/v1/{PARENT}/pipelineJobs", create_run)
    return google_cloud


def test_scheduled_jobs_are_accepted_and_fire_pinned_runs_as_the_scheduler(cloud, capsys):
    assert submit.main(["schedule"]) == 0
    assert submit.main(["schedule"]) == 0  # updated in place, never a second job
    jobs = cloud.scheduler.jobs
    assert sorted(n.rsplit("/", 1)[1] for n in jobs) == [
        "churn-monitoring-weekly",
        "churn-scoring-daily",
        "churn-training-weekly",
    ]
    for job_id in ("churn-training-weekly", "churn-scoring-daily", "churn-monitoring-weekly"):
        assert cloud.scheduler.fire(job_id) == 200
    assert [r.caller for r in cloud.runs] == [SCHEDULER_ACCOUNT] * 3  # its OAuth account
    for request in cloud.runs:
        run = json_format.Parse(
            request.raw, aiplatform_v1.PipelineJob.pb(aiplatform_v1.PipelineJob())
        )
        repo, package, version = run.template_uri.split("/")[-3:]
        assert version.startswith("sha256:")  # pinned, never a tag
        assert cloud.templates.template(repo, package, version) is not None
    assert all(job["status"] == {} for job in jobs.values())  # the last attempt succeeded
    assert "churn-scoring-daily updated" in capsys.readouterr().err


def test_a_paused_job_sends_nothing(cloud):
    assert submit.main(["schedule"]) == 0
    assert submit.main(["schedule", "--pause"]) == 0
    assert cloud.scheduler.fire("churn-scoring-daily") is None
    assert cloud.runs == []


@pytest.mark.parametrize(
    ("environ", "answer"),
    [
        # Refused before any request, naming the setting and the variable it came from.
        ({"CHURN_SCORING_SCHEDULE": "61 25 * * *"}, "is not a valid cron schedule: bad minute"),
        ({"CHURN_SCORING_SCHEDULE": "TZ=UTC 0 8 * * *"}, "carries its own time zone"),
        ({"CHURN_SCORING_SCHEDULE": "banana"}, "must be five cron fields"),
        ({"CHURN_TIME_ZONE": "localtime"}, "time_zone 'localtime' is not an IANA time zone"),
    ],
)
def test_what_cloud_scheduler_refuses_is_one_line(cloud, monkeypatch, capsys, environ, answer):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert submit.main(["schedule"]) == 1
    err = capsys.readouterr().err
    assert answer in err and "CHURN_" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not any(n.endswith("churn-scoring-daily") for n in cloud.scheduler.jobs)


def test_the_scheduler_refuses_an_account_the_caller_may_not_act_as(cloud, capsys):
    cloud.scheduler.authorize = lambda _member, permission, _resource: (
        permission != "iam.serviceAccounts.actAs"
    )
    assert submit.main(["schedule"]) == 1
    err = capsys.readouterr().err
    assert '"iam.serviceAccounts.actAs" for the resource' in err
    assert SCHEDULER_ACCOUNT in err
    assert cloud.scheduler.jobs == {}


def test_the_stand_in_refuses_what_cloud_scheduler_refuses(cloud):
    """The rules themselves, straight through the real client: an attempt deadline outside
    15 s to 30 min, an unknown field, a job id with a dot, a location with no scheduler."""
    from google.api_core import exceptions
    from google.cloud import scheduler_v1
    from google.protobuf import duration_pb2

    client = scheduler_v1.CloudSchedulerClient(
        transport="rest", client_options={"api_endpoint": cloud.url}
    )

    def job(name: str = "ok", seconds: int = 120) -> scheduler_v1.Job:
        return scheduler_v1.Job(
            name=f"{PARENT}/jobs/{name}",
            schedule="0 8 * * *",
            time_zone="Europe/London",
            attempt_deadline=duration_pb2.Duration(seconds=seconds),
            http_target=scheduler_v1.HttpTarget(uri="https://example.com/"),
        )

    client.create_job(parent=PARENT, job=job())
    with pytest.raises(exceptions.Conflict):
        client.create_job(parent=PARENT, job=job())
    for refused in (job("short", seconds=10), job("long", seconds=1801), job("a.b")):
        with pytest.raises(exceptions.BadRequest):
            client.create_job(parent=PARENT, job=refused)
    with pytest.raises(exceptions.NotFound):
        client.create_job(parent=f"projects/{PROJECT}/locations/mars-north1", job=job())
    unknown = {"name": f"{PARENT}/jobs/x", "schedule": "0 8 * * *", "cronn": 1}
    answer = requests.post(
        f"{cloud.url}/v1/{PARENT}/jobs",
        json=unknown,
        headers={"Authorization": f"Bearer {access_token(CLIENT_EMAIL)}"},
        timeout=10,
    )
    assert answer.status_code == 400 and "cronn" in answer.json()["error"]["message"]


def test_list_shows_when_each_schedule_last_started_a_run_and_why_it_failed(cloud, capsys):
    assert submit.main(["schedule"]) == 0
    refusal = "Permission 'aiplatform.pipelineJobs.create' denied on resource"
    cloud.route(
        "POST",
        rf"/v1/{PARENT}/pipelineJobs",
        lambda _request, _match: (
            403,
            {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": refusal}},
        ),
    )
    assert cloud.scheduler.fire("churn-training-weekly") == 403
    capsys.readouterr()
    assert submit.main(["schedule", "--list", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    training, scoring = listed["churn-training-weekly"], listed["churn-scoring-daily"]
    assert training["last_run"].endswith(" failed")
    assert training["last_error"] == "7 " + refusal
    assert scoring["last_run"] == "" and scoring["state"] == "ENABLED"  # never fired
