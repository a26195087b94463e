"""Vertex AI Pipelines: submit and follow a PipelineJob, explain a failed step, list runs;
and the REST requests, errors and credentials the other Google calls here share (compiling
and publishing templates is pipelines/templates.py).

Each request is built first as the proto the REST API takes, then either sent with Google's
own client (`transport="rest"`, so `vertex_api_endpoint` can point anywhere, a test stand-in
included) or, for `--dry-run`, printed as the REST JSON the client would send: the two are
the same object, so what a dry run shows is what a real run does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from components.errors import ChurnError, google_reason
from components.settings import Settings

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_TERMINAL = {
    aiplatform_v1.PipelineState.PIPELINE_STATE_SUCCEEDED,
    aiplatform_v1.PipelineState.PIPELINE_STATE_FAILED,
    aiplatform_v1.PipelineState.PIPELINE_STATE_CANCELLED,
}
_PROJECT_ERROR = re.compile(r"components\.errors\.\w+: (?P<message>[^\n]+)")
_ANY_ERROR = re.compile(r"^\s*[A-Za-z_.]*(?:Error|Exception): (?P<message>.+)$")


class VertexError(ChurnError):
    """A Vertex AI, Cloud Scheduler or Artifact Registry request failed, or a run did."""


@dataclass(frozen=True)
class ApiRequest:
    """One REST request as a dry run prints it: method, full URL and JSON body."""

    method: str
    url: str
    body: Any = None

    def line(self) -> str:
        return json.dumps({"method": self.method, "url": self.url, "body": self.body})


def rest_json(message: Any) -> dict[str, Any]:
    """A proto-plus message as the REST API's JSON (camelCase, enums by name)."""
    return json.loads(
        type(message).to_json(
            message,
            use_integers_for_enums=False,
            always_print_fields_with_no_presence=False,
            indent=0,
        )
    )


def api_url(endpoint: str, path: str, query: dict[str, str] | None = None) -> str:
    """`https://<endpoint>/v1/<path>`; an endpoint given with its scheme is kept as given."""
    base = endpoint if re.match(r"https?://", endpoint) else f"https://{endpoint}"
    return f"{base.rstrip('/')}/v1/{path}" + (f"?{urlencode(query)}" if query else "")


def console_url(settings: Settings, job_id: str) -> str:
    return (
        f"https://console.cloud.google.com/vertex-ai/locations/{settings.region}/pipelines/runs/"
        f"{job_id}?project={settings.project}"
    )


def access_token() -> str:
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as exc:
        raise VertexError(
            f"no Google credentials: run `gcloud auth application-default login` ({exc})"
        ) from None
    return credentials.token


# --- pipeline jobs --------------------------------------------------------------------


def pipeline_job(
    settings: Settings,
    arguments: dict[str, Any],
    *,
    display_name: str,
    pipeline_spec: dict[str, Any] | None = None,
    template_uri: str | None = None,
) -> aiplatform_v1.PipelineJob:
    """The PipelineJob a submission or a schedule creates: the template (inline spec, or an
    Artifact Registry URI pinned to a sha256 version), the pipeline root, the arguments,
    the pipelines' service account and the labels."""
    job = aiplatform_v1.PipelineJob(
        display_name=display_name,
        runtime_config=aiplatform_v1.PipelineJob.RuntimeConfig(
            gcs_output_directory=settings.pipeline_root_uri,
            parameter_values={k: _value(v) for k, v in arguments.items()},
        ),
        service_account=settings.pipeline_service_account,
        labels=settings.label_map,
    )
    if template_uri:
        job.template_uri = template_uri
    else:
        spec = struct_pb2.Struct()
        spec.update(pipeline_spec or {})
        job.pipeline_spec = spec
    return job


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def job_id(pipeline_name: str, now: datetime | None = None) -> str:
    return f"{pipeline_name}-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"


def _parent(settings: Settings) -> str:
    return f"projects/{settings.project}/locations/{settings.region}"


def create_job_request(
    settings: Settings, job: aiplatform_v1.PipelineJob, job_id_: str
) -> ApiRequest:
    return ApiRequest(
        "POST",
        api_url(
            settings.vertex_endpoint,
            f"{_parent(settings)}/pipelineJobs",
            {"pipelineJobId": job_id_},
        ),
        rest_json(job),
    )


def pipeline_client(settings: Settings) -> aiplatform_v1.PipelineServiceClient:
    return aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": settings.vertex_endpoint}
    )


def submit_job(
    settings: Settings, job: aiplatform_v1.PipelineJob, job_id_: str
) -> aiplatform_v1.PipelineJob:
    """Create the PipelineJob. The run joins the settings' experiment itself once Vertex
    starts it (step 0 of both pipelines), as scheduled runs do: a submission never waits
    for a run that a busy region has not started yet."""
    client = pipeline_client(settings)
    try:
        return api_call(
            "creating the pipeline job",
            lambda: client.create_pipeline_job(
                parent=_parent(settings), pipeline_job=job, pipeline_job_id=job_id_
            ),
        )
    except VertexError as exc:
        if "act as service_account" not in str(exc):
            raise
        # Vertex's 400 names the account, not the fix: whoever submits must be able to
        # act as the pipelines' account.
        raise VertexError(
            f"{exc} Grant roles/iam.serviceAccountUser on it: gcloud iam service-accounts "
            f"add-iam-policy-binding {job.service_account} --project {settings.project} "
            '--member "user:$(gcloud config get account)" --role roles/iam.serviceAccountUser'
        ) from None


def api_call(what: str, request: Callable[[], Any]) -> Any:
    """Send one request; a refusal becomes a VertexError naming what was being done."""
    try:
        return request()
    except exceptions.GoogleAPICallError as exc:
        # REST errors start with the request ("POST https://...: "): the reason is the rest.
        raise VertexError(f"{what} failed: {google_reason(exc)}") from None


# --- following a run ------------------------------------------------------------------

StepEvent = Callable[[str, str, float, str], None]
"""(step display name, "started" | "succeeded" | "failed", seconds, detail), as locally."""

# SKIPPED is Vertex's word for a cache hit (a branch not taken is NOT_TRIGGERED).
_EVENTS = {"RUNNING": "started", "SUCCEEDED": "succeeded", "SKIPPED": "succeeded"}
_EVENTS |= {"FAILED": "failed", "CANCELLED": "failed"}


def follow(
    settings: Settings,
    name: str,
    display_names: dict[str, str],
    on_step: StepEvent,
) -> aiplatform_v1.PipelineJob:
    """Poll the run until it ends, reporting each step as it starts and finishes."""
    reported: dict[str, str] = {}
    while True:
        job = get_job(settings, name)
        for step, task in _steps(job, display_names):
            event = _EVENTS.get(task.state.name)
            if event is None or reported.get(step) == event:
                continue
            if event != "started" and step not in reported:
                on_step(step, "started", 0.0, "")
            reported[step] = event
            on_step(step, event, _seconds(task), "")
        if job.state in _TERMINAL:
            return job
        time.sleep(settings.poll_seconds)


def get_job(settings: Settings, name: str) -> aiplatform_v1.PipelineJob:
    """One run with its task details (which a listing leaves out)."""
    client = pipeline_client(settings)
    return api_call(f"reading run {name}", lambda: client.get_pipeline_job(name=name))


def _steps(
    job: aiplatform_v1.PipelineJob, display_names: dict[str, str]
) -> Iterator[tuple[str, aiplatform_v1.PipelineTaskDetail]]:
    # Task details list every task, those inside condition groups too (with their
    # parentTaskId); the groups and the root DAG's own entry are not steps.
    tasks = job.job_detail.task_details
    for task in sorted(tasks, key=lambda t: t.create_time.timestamp() if t.create_time else 0.0):
        step = display_names.get(task.task_name)
        if step is None and task.task_name in display_names.values():
            step = task.task_name
        if step is not None:
            yield step, task


def _seconds(task: aiplatform_v1.PipelineTaskDetail) -> float:
    if task.start_time and task.end_time:
        return (task.end_time - task.start_time).total_seconds()
    return 0.0


def display_names(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, str]:
    """Task name -> display name of every step, in the root DAG and in every group's DAG
    (the steps inside `dsl.If` / `dsl.Else`); groups themselves are not steps."""
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    return {
        name: task.task_info.name
        for dag in dags
        for name, task in dag.tasks.items()
        if not spec.components[task.component_ref.name].HasField("dag")
    }


def failure(
    settings: Settings, job: aiplatform_v1.PipelineJob, display_names_: dict[str, str]
) -> tuple[str, str]:
    """(failing step, its error line): the step's own error line when it can be found."""
    for step, task in _steps(job, display_names_):
        if task.state == aiplatform_v1.PipelineTaskDetail.State.FAILED:
            return step, step_error(settings, task)
    return "", _error_line(job.error.message or "the run was cancelled")


def run_error(settings: Settings, job: aiplatform_v1.PipelineJob) -> str:
    """A finished run's error as `runs` lists it ("step: line"), mapped with the run's own
    pipeline spec (which may be an older template than this checkout's)."""
    spec = json_format.ParseDict(
        json_format.MessageToDict(aiplatform_v1.PipelineJob.pb(job).pipeline_spec),
        pipeline_spec_pb2.PipelineSpec(),
        ignore_unknown_fields=True,
    )
    step, line = failure(settings, job, display_names(spec))
    return f"{step}: {line}" if step else line


def step_error(settings: Settings, task: aiplatform_v1.PipelineTaskDetail) -> str:
    """A failed step's own error line ("column `MonthlyCharges` missing from bq://...").

    Vertex reports a failed step as "The replica workerpool0-0 exited with a non-zero status
    of 1 ...": the step's line is in its log, in Cloud Logging under the CustomJob that ran
    the step (`resource.type="ml_job"`). Reading it needs `roles/logging.viewer`; without
    it, Vertex's own line says what failed and the log's failure says what to grant."""
    generic = _error_line(task.error.message or "the step failed")
    if _PROJECT_ERROR.search(task.error.message):
        return generic
    # The CustomJob that ran the step; the logs link in Vertex's message names it too.
    custom_job = task.executor_detail.container_detail.main_job.rsplit("/", 1)[-1]
    linked = re.search(r"job_id%2F(\d+)", task.error.message)
    custom_job = custom_job or (linked[1] if linked else "")
    if not custom_job:
        return generic
    try:
        lines = step_log(settings, custom_job)
    except VertexError as exc:
        return f"{generic} (and its log could not be read: {exc})"
    for pattern in (_PROJECT_ERROR, _ANY_ERROR):
        for line in lines:
            found = pattern.search(line)
            if found:
                return found["message"].strip()
    return generic


def step_log(settings: Settings, custom_job_id: str, *, limit: int = 200) -> list[str]:
    """The newest lines a step's CustomJob logged, newest first (Cloud Logging
    `entries.list`; one REST call with google-auth, as the GAPIC client speaks only gRPC)."""
    import requests

    body = {
        "resourceNames": [f"projects/{settings.project}"],
        "filter": f'resource.type="ml_job" AND resource.labels.job_id="{custom_job_id}"',
        "orderBy": "timestamp desc",
        "pageSize": limit,
    }
    base = settings.logging_endpoint
    base = base if re.match(r"https?://", base) else f"https://{base}"
    try:
        reply = requests.post(
            f"{base.rstrip('/')}/v2/entries:list",
            json=body,
            headers={"Authorization": f"Bearer {access_token()}"},
            timeout=30,
        )
    except requests.RequestException as exc:
        raise VertexError(f"reading the step's log failed: {exc}") from None
    if reply.status_code != 200:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        hint = (
            f"; grant roles/logging.viewer: gcloud projects add-iam-policy-binding "
            f'{settings.project} --member "user:$(gcloud config get account)" '
            "--role roles/logging.viewer"
            if reply.status_code == 403
            else ""
        )
        raise VertexError(f"{reply.status_code} {message}{hint}")
    lines = []
    for entry in reply.json().get("entries", []):
        text = entry.get("textPayload") or entry.get("jsonPayload", {}).get("message", "")
        lines.extend(reversed(text.splitlines()))
    return lines


def _error_line(message: str) -> str:
    project = _PROJECT_ERROR.search(message)
    return project["message"].strip() if project else message.strip().splitlines()[-1]


def run_summary(job: aiplatform_v1.PipelineJob) -> dict[str, Any] | None:
    """The run's summary, from the metadata of the summary step's `summary` artifact (the
    summary steps put the whole summary there, so no file has to be read from GCS)."""
    for task in job.job_detail.task_details:
        if "summary" in task.outputs:
            for artifact in task.outputs["summary"].artifacts:
                return _whole_numbers(dict(artifact.metadata))
    return None


def _whole_numbers(value: Any) -> Any:
    """Metadata numbers come back as floats: counts and versions are whole again."""
    if isinstance(value, Mapping):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def list_jobs(settings: Settings, *, limit: int = 20) -> list[aiplatform_v1.PipelineJob]:
    """The project's recent churn runs (by the `app` label every run carries), newest first."""
    client = pipeline_client(settings)
    labels = " AND ".join(f'labels.{k}="{v}"' for k, v in settings.label_map.items())
    pager = api_call(
        "listing pipeline runs",
        lambda: client.list_pipeline_jobs(
            request=aiplatform_v1.ListPipelineJobsRequest(
                parent=_parent(settings),
                filter=labels,
                order_by="create_time desc",
                page_size=limit,
            )
        ),
    )
    jobs = []
    for job in pager:
        jobs.append(job)
        if len(jobs) == limit:
            break
    return jobs
