"""The PipelineJob stand-in refuses what Vertex refuses and reports a run as Vertex does:
the real client library, in-process, against tests/vertex_pipelines_standin.py."""

import pytest
import requests
from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from google_standin import CLIENT_EMAIL, access_token
from vertex_pipelines_standin import VertexPipelines

from components.settings import Settings, load_settings
from pipelines.compiling import build_pipeline
from pipelines.parameters import pipeline_arguments
from pipelines.vertex import pipeline_job

scoring_pipeline = build_pipeline("scoring", Settings())

PROJECT, REGION = "acme-corp", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
ACCOUNT = f"churn-pipelines@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def client(google_cloud) -> aiplatform_v1.PipelineServiceClient:
    return aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": google_cloud.url}
    )


def scoring_job(template_uri: str | None = None) -> aiplatform_v1.PipelineJob:
    settings = load_settings({"project": PROJECT, "region": REGION}, environ={})
    arguments = pipeline_arguments(scoring_pipeline, settings, vertex=True)
    spec = json_format.MessageToDict(scoring_pipeline.pipeline_spec)
    return pipeline_job(
        settings,
        arguments,
        display_name="churn-scoring",
        pipeline_spec=spec,
        template_uri=template_uri,
    )


def submit(client, job_id: str = "churn-scoring-1", parent: str = PARENT):
    return client.create_pipeline_job(
        parent=parent, pipeline_job=scoring_job(), pipeline_job_id=job_id
    )


def test_a_run_reports_every_task_nested_under_its_group(google_cloud, client):
    VertexPipelines(google_cloud, PROJECT, REGION, start_after=1)
    created = submit(client)
    assert created.state.name == "PIPELINE_STATE_PENDING"
    states, step = [], []  # the run's states, and step 2's as the run goes
    while True:
        job = client.get_pipeline_job(name=created.name)
        states.append(job.state.name)
        step += [
            t.state.name for t in job.job_detail.task_details if t.task_name == "score-customers"
        ]
        if job.state.name in ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED"):
            break
    assert states[0] == "PIPELINE_STATE_PENDING" and states[-1] == "PIPELINE_STATE_SUCCEEDED"
    assert set(states[1:-1]) == {"PIPELINE_STATE_RUNNING"}
    assert list(dict.fromkeys(step)) == ["PENDING", "RUNNING", "SUCCEEDED"]
    tasks = {t.task_name: t for t in job.job_detail.task_details}
    root = tasks.pop("churn-scoring")
    assert root.state.name == "SUCCEEDED" and not root.parent_task_id
    ids = {t.task_id: name for name, t in tasks.items()}
    parents = {name: ids.get(t.parent_task_id, "root") for name, t in tasks.items()}
    # The chunked branch (dsl.Else) ran inside the branches group; steps 2-4 are in it.
    assert parents["score-customers"] == parents["publish-predictions-2"] == "condition-4"
    assert parents["condition-4"] == "condition-branches-2"
    assert parents["condition-branches-2"] == parents["load-champion"] == "root"
    # The batch prediction branch was not taken: NOT_TRIGGERED, and its steps never ran.
    assert tasks["condition-3"].state.name == "NOT_TRIGGERED"
    assert "model-batch-predict" not in tasks
    assert {t.state.name for n, t in tasks.items() if n != "condition-3"} == {"SUCCEEDED"}
    assert job.job_detail.pipeline_run_context.name.endswith("/contexts/churn-scoring-1")


def test_a_failed_step_fails_its_groups_and_the_run_with_vertexs_words(google_cloud, client):
    standin = VertexPipelines(
        google_cloud, PROJECT, REGION, start_after=0, fail={"score-customers": "boom"}
    )
    created = submit(client)
    while (job := client.get_pipeline_job(name=created.name)).state.name.endswith("RUNNING"):
        pass
    assert job.state.name == "PIPELINE_STATE_FAILED"
    assert job.error.message.startswith(
        "The DAG failed because some tasks failed. The failed tasks are: [score-customers]."
    )
    tasks = {t.task_name: t for t in job.job_detail.task_details}
    failed = tasks["score-customers"]
    assert failed.error.message.startswith(
        "The replica workerpool0-0 exited with a non-zero status of 1."
    )
    custom_job = failed.executor_detail.container_detail.main_job.rsplit("/", 1)[-1]
    assert standin.logs[custom_job] == ["boom"]
    assert tasks["condition-4"].state.name == tasks["condition-branches-2"].state.name == "FAILED"
    assert "publish-predictions-2" not in tasks and "scoring-result" not in tasks


def test_refuses_what_vertex_refuses(google_cloud, client):
    def caller_may_not_create(_member, permission, _resource):
        return permission != "aiplatform.pipelineJobs.create"

    standin = VertexPipelines(google_cloud, PROJECT, REGION, service_accounts={ACCOUNT})
    with pytest.raises(exceptions.BadRequest, match="does not match the endpoint's location"):
        submit(client, parent=f"projects/{PROJECT}/locations/us-central1")
    with pytest.raises(exceptions.BadRequest, match="Invalid pipeline job id"):
        submit(client, job_id="Churn_1")
    submit(client)
    with pytest.raises(exceptions.Conflict):
        submit(client)
    standin.service_accounts = {"someone-else@acme-corp.iam.gserviceaccount.com"}
    with pytest.raises(
        exceptions.BadRequest,
        match=f"You do not have permission to act as service_account: {ACCOUNT}",
    ):
        submit(client, job_id="churn-scoring-2")
    standin.authorize = caller_may_not_create
    with pytest.raises(
        exceptions.Forbidden, match=r"Permission 'aiplatform\.pipelineJobs\.create' denied"
    ):
        submit(client, job_id="churn-scoring-3")
    # A field PipelineJob does not have is refused, as Google's front end refuses it.
    standin.authorize = lambda *_: True
    reply = requests.post(
        f"{google_cloud.url}/v1/{PARENT}/pipelineJobs?pipelineJobId=churn-scoring-4",
        json={"displayName": "x", "experiment": "churn-pipelines"},
        headers={"Authorization": f"Bearer {access_token(CLIENT_EMAIL)}"},
        timeout=10,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        "Invalid JSON payload received. Unknown name \"experiment\" at 'pipeline_job': "
        "Cannot find field."
    )


def test_a_job_from_a_template_runs_the_template_the_registry_holds(google_cloud, client):
    uri = "https://europe-west4-kfp.pkg.dev/acme-corp/churn-pipelines/churn-scoring/sha256:ab"
    spec = json_format.MessageToDict(scoring_pipeline.pipeline_spec)
    standin = VertexPipelines(
        google_cloud, PROJECT, REGION, templates=lambda u: spec if u == uri else None
    )
    with pytest.raises(exceptions.BadRequest, match="Failed to fetch the template"):
        client.create_pipeline_job(
            parent=PARENT, pipeline_job=scoring_job(uri[:-2] + "cd"), pipeline_job_id="s-1"
        )
    client.create_pipeline_job(parent=PARENT, pipeline_job=scoring_job(uri), pipeline_job_id="s-1")
    assert [t.name for t in standin.runs["s-1"].plan][:2] == [
        "load-champion",
        "condition-branches-2",
    ]
