"""Issue 20 item 6 on Vertex AI: a monitoring run that finds a retraining due starts the
weekly schedule's training run itself (step 4). The compiled spec parsed into the real
`PipelineSpec`, and the step's plain function through Google's own client against the
strict Vertex Pipelines stand-in, with the access table's grants judged by its IAM."""

import json

import pytest
import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from google_standin import CLIENT_EMAIL
from kfp.pipeline_spec.pipeline_spec_pb2 import ParameterType, PipelineSpec
from vertex_pipelines_standin import VertexPipelines

from components.monitoring.retrain import RetrainError, start_training_run
from components.settings import Settings
from pipelines import access
from pipelines.compiling import build_pipeline, compile_pipeline
from pipelines.schedules import retraining_job

PROJECT, REGION = "standin-project", "europe-west4"  # the project of the test key's account
REPOSITORY = f"https://{REGION}-kfp.pkg.dev/{PROJECT}/churn-pipelines"
TEMPLATE = f"{REPOSITORY}/churn-training/sha256:" + "ab" * 32
PARENT = f"projects/{PROJECT}/locations/{REGION}"


def test_step_4_runs_only_on_vertex_and_only_when_a_retraining_is_due(tmp_path):
    path = compile_pipeline("monitoring", tmp_path / "monitoring.yaml", Settings())
    spec = json_format.ParseDict(yaml.safe_load(path.read_text()), PipelineSpec())
    dags = {"root": spec.root.dag} | {
        name.removeprefix("comp-"): c.dag
        for name, c in spec.components.items()
        if c.HasField("dag")
    }
    parent = {task: group for group, dag in dags.items() for task in dag.tasks}
    tasks = {name: task for dag in dags.values() for name, task in dag.tasks.items()}
    (step,) = [n for n, t in tasks.items() if t.task_info.name == "4. Start retraining"]
    due = parent[step]  # the group step 4 is in, and the group that one is in
    on_vertex = parent[due]
    assert parent[on_vertex] == "root"
    assert tasks[on_vertex].trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--retrain_job'] != ''"
    )
    assert tasks[due].trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--measure-performance-Output'] == true"
    )
    # The outer group takes the flag from step 1's output, the inner from the outer.
    flag = tasks[on_vertex].inputs.parameters["pipelinechannel--measure-performance-Output"]
    assert flag.task_output_parameter.producer_task == "measure-performance"
    assert flag.task_output_parameter.output_parameter_key == "Output"
    measure = spec.components[tasks["measure-performance"].component_ref.name]
    boolean = measure.output_definitions.parameters["Output"].parameter_type
    assert boolean == ParameterType.BOOLEAN
    # Without a training run to start (every local run, every ad-hoc submission) the gate
    # is shut: the default is "".
    default = spec.root.input_definitions.parameters["retrain_job"].default_value
    assert default.string_value == ""


@pytest.fixture
def settings(google_cloud) -> Settings:
    """The pipelines' account is the test key's: the step runs as it, acting as itself."""
    return Settings(
        project=PROJECT, region=REGION, service_account=CLIENT_EMAIL,
        vertex_api_endpoint=google_cloud.url,
    )  # fmt: skip


@pytest.fixture
def vertex(google_cloud, settings):
    """Vertex Pipelines holding the published training template, judged by IAM, where the
    pipelines' account has what the access table grants it."""
    training = json_format.MessageToDict(build_pipeline("training", settings).pipeline_spec)
    iam = google_cloud.iam
    for grant in access.grants_for("pipelines"):
        iam.grant(
            access.principal_member("pipelines", settings),
            grant.role,
            access.resource_name(grant.resource, settings),
            access.condition_expression(grant, settings),
        )
    return VertexPipelines(
        google_cloud, PROJECT, REGION, authorize=iam.allowed,
        service_accounts={CLIENT_EMAIL}, templates=lambda u: training if u == TEMPLATE else None,
    )  # fmt: skip


def _start(settings: Settings, template: str = TEMPLATE):
    from datetime import date

    job = retraining_job(settings, build_pipeline("training", settings), template)
    return start_training_run(
        job, project=PROJECT, location=REGION, endpoint=settings.vertex_endpoint,
        day=date(2026, 12, 7),
    )  # fmt: skip


def test_a_due_retraining_starts_the_weekly_training_run_once_a_day(google_cloud, settings, vertex):
    name, created = _start(settings)

    assert (name, created) == (f"{PARENT}/pipelineJobs/churn-training-retrain-20261207", True)
    (request,) = google_cloud.requests_to("POST", rf"/v1/{PARENT}/pipelineJobs")
    job = json_format.Parse(request.raw, aiplatform_v1.PipelineJob.pb()())
    assert job.template_uri == TEMPLATE  # pinned by its sha256 version, as the schedule
    assert job.service_account == CLIENT_EMAIL
    assert dict(job.labels) == {"app": "churn-pipelines", "started-by": "monitoring"}
    values = json_format.MessageToDict(job.runtime_config)["parameterValues"]
    assert values["source_uri"].startswith("bq://")
    # A retried step, or a second monitoring run that day, starts nothing more.
    assert _start(settings) == (name, False)
    assert list(vertex.runs) == ["churn-training-retrain-20261207"]


def test_a_template_that_does_not_exist_is_refused_in_vertex_words(settings, vertex):
    missing = TEMPLATE[:-2] + "cd"
    with pytest.raises(RetrainError) as refused:
        _start(settings, missing)
    assert str(refused.value) == (
        f"starting the retraining run from {missing} failed: 400 Failed to fetch the "
        f"template {missing}."
    )
    assert not vertex.runs


def test_the_pipelines_account_must_be_able_to_act_as_itself(google_cloud, settings, vertex):
    account = access.resource_name("account:pipelines", settings)
    google_cloud.iam.revoke(
        f"serviceAccount:{CLIENT_EMAIL}", "roles/iam.serviceAccountUser", account
    )
    with pytest.raises(RetrainError) as refused:
        _start(settings)
    assert str(refused.value) == (
        f"starting the retraining run from {TEMPLATE} failed: 400 You do not have permission "
        f"to act as service_account: {CLIENT_EMAIL}. (or it may not exist). Grant the "
        "pipelines' account roles/iam.serviceAccountUser on itself: python submit.py setup, "
        "then python submit.py check"
    )


def test_without_pipeline_jobs_create_vertex_refuses_with_403(google_cloud, settings, vertex):
    google_cloud.iam.revoke(
        f"serviceAccount:{CLIENT_EMAIL}", "roles/aiplatform.user", f"projects/{PROJECT}"
    )
    with pytest.raises(RetrainError, match=r"failed: 403 Permission 'aiplatform\.pipelineJobs"
                       r"\.create' denied on resource '//aiplatform\.googleapis\.com/"
                       rf"{PARENT}' \(or it may not exist\)\.$"):  # fmt: skip
        _start(settings)
    assert json.dumps(vertex.runs) == "{}"
