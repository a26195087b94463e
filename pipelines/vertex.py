"""Vertex AI Pipelines: compile a template, submit and follow a PipelineJob, list runs, and
publish templates to Artifact Registry.

Each request is built first as the proto the REST API takes, then either sent with Google's
own client (`transport="rest"`, so `vertex_api_endpoint` can point anywhere, a test stand-in
included) or, for `--dry-run`, printed as the REST JSON the client would send: the two are
the same object, so what a dry run shows is what a real run does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.protobuf import json_format, struct_pb2

from components.errors import ChurnError
from components.settings import Settings

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_TERMINAL = {
    aiplatform_v1.PipelineState.PIPELINE_STATE_SUCCEEDED,
    aiplatform_v1.PipelineState.PIPELINE_STATE_FAILED,
    aiplatform_v1.PipelineState.PIPELINE_STATE_CANCELLED,
}
_PROJECT_ERROR = re.compile(r"components\.errors\.\w+: (?P<message>[^\n]+)")


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


# --- templates ------------------------------------------------------------------------


def compile_template(pipeline_func: Any, path: Path, settings: Settings) -> Path:
    """Compile `pipeline_func` to KFP YAML at `path` for `settings`: every step in the
    settings' component image, every task's cache as `enable_caching` says (in the template
    itself, so scheduled runs, which only name the template, behave as submitted ones do).
    The same code and settings give byte-identical YAML, hence the same sha256 version."""
    from kfp import compiler

    compiler.Compiler().compile(pipeline_func, str(path))
    document = yaml.safe_load(path.read_text())
    # Steps name their image when their module is first imported, which may be before the
    # CLI's flags were read (argparse converts --as-of's default): the settings decide here.
    for executor in document["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = settings.component_image_uri
    enable_caching = settings.enable_caching
    dags = [document["root"]["dag"]] + [
        c["dag"] for c in document.get("components", {}).values() if "dag" in c
    ]
    for dag in dags:
        for task in dag["tasks"].values():
            task["cachingOptions"] = {"enableCache": True} if enable_caching else {}
    path.write_text(yaml.safe_dump(document, sort_keys=True))
    return path


def template_version(path: Path) -> str:
    """The Artifact Registry version an upload of `path` gets: the sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def template_tags(commit: str | None = None) -> list[str]:
    """Tags of a published template: the project version, the git commit when known, and
    `latest` (for people browsing; runs pin the sha256 version)."""
    version = metadata.version("churn-pipelines")
    commit = commit if commit is not None else _git_commit()
    return [f"v{version}", *([f"git-{commit[:12]}"] if commit else []), "latest"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class Published:
    package: str
    version: str
    tags: list[str]
    template_uri: str


def upload_request(settings: Settings, path: Path, tags: list[str]) -> ApiRequest:
    """The upload as a dry run shows it: a multipart form of the YAML and its tags."""
    return ApiRequest(
        "POST",
        settings.template_registry_uri,
        {"tags": ",".join(tags), "content": {"file": path.name, "sha256": template_version(path)}},
    )


def publish_template(settings: Settings, path: Path, tags: list[str]) -> Published:
    """Upload one compiled template to the KFP repository in Artifact Registry."""
    from kfp.registry import ApiAuth, RegistryClient

    # RegistryClient only fetches credentials itself for *.pkg.dev hosts; handing it a
    # token makes `template_registry` overrides (Private Service Connect, tests) work too.
    client = RegistryClient(host=settings.template_registry_uri, auth=ApiAuth(_access_token()))
    try:
        package, version = client.upload_pipeline(str(path), tags=tags)
    except Exception as exc:  # requests' HTTPError, or a reply that is no package/version
        raise VertexError(
            f"uploading {path.name} to {settings.template_registry_uri} failed: {exc}"
        ) from None
    return Published(
        package, version, tags, f"{settings.template_registry_uri}/{package}/{version}"
    )


def _access_token() -> str:
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
    """Create the PipelineJob; then add the run to the settings' experiment."""
    client = pipeline_client(settings)
    created = api_call(
        "creating the pipeline job",
        lambda: client.create_pipeline_job(
            parent=_parent(settings), pipeline_job=job, pipeline_job_id=job_id_
        ),
    )
    if settings.experiment:
        join_experiment(settings, client, created)
    return created


def experiment_requests(settings: Settings) -> list[ApiRequest]:
    """What joining the experiment sends first (a dry run shows it; the run's own context,
    added to the experiment next, exists only once Vertex has started the run)."""
    store = f"{_parent(settings)}/metadataStores/default"
    return [
        ApiRequest(
            "POST",
            api_url(
                settings.vertex_endpoint, f"{store}/contexts", {"contextId": settings.experiment}
            ),
            rest_json(_experiment_context(settings)),
        )
    ]


def _experiment_context(settings: Settings) -> aiplatform_v1.Context:
    # The shape the Vertex SDK gives an experiment, so the console's Experiments page lists it.
    return aiplatform_v1.Context(
        display_name=settings.experiment,
        schema_title="system.Experiment",
        schema_version="0.0.1",
        metadata={"experiment_deleted": False},
    )


def join_experiment(
    settings: Settings,
    pipelines: aiplatform_v1.PipelineServiceClient,
    job: aiplatform_v1.PipelineJob,
    *,
    wait_seconds: float = 120,
) -> None:
    """Add the run to the experiment (created if new), as `PipelineJob.submit(experiment=)`
    does: Vertex creates the run's metadata context a few seconds after the job."""
    client = aiplatform_v1.MetadataServiceClient(
        transport="rest", client_options={"api_endpoint": settings.vertex_endpoint}
    )
    store = f"{_parent(settings)}/metadataStores/default"
    try:
        client.create_context(
            parent=store, context=_experiment_context(settings), context_id=settings.experiment
        )
    except exceptions.Conflict:  # 409: the experiment exists already
        pass
    except exceptions.GoogleAPICallError as exc:
        raise VertexError(f"creating experiment {settings.experiment!r}: {exc.message}") from None
    deadline = time.monotonic() + wait_seconds
    while not job.job_detail.pipeline_run_context.name:
        if job.state in _TERMINAL or time.monotonic() > deadline:
            raise VertexError(
                f"run {job.name} has no metadata context yet; it was not added to experiment "
                f"{settings.experiment!r}"
            )
        time.sleep(settings.poll_seconds)
        job = pipelines.get_pipeline_job(name=job.name)
    api_call(
        f"adding the run to experiment {settings.experiment!r}",
        lambda: client.add_context_children(
            context=f"{store}/contexts/{settings.experiment}",
            child_contexts=[job.job_detail.pipeline_run_context.name],
        ),
    )


def api_call(what: str, request: Callable[[], Any]) -> Any:
    """Send one request; a refusal becomes a VertexError naming what was being done."""
    try:
        return request()
    except exceptions.GoogleAPICallError as exc:
        raise VertexError(f"{what} failed: {exc.code} {exc.message}") from None


# --- following a run ------------------------------------------------------------------

StepEvent = Callable[[str, str, float, str], None]
"""(step display name, "started" | "succeeded" | "failed", seconds, detail), as locally."""


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
        for step, state, seconds, error in _steps(job, display_names):
            event = {"RUNNING": "started", "SUCCEEDED": "succeeded", "FAILED": "failed"}.get(state)
            if event is None or reported.get(step) == event:
                continue
            if event != "started" and step not in reported:
                on_step(step, "started", 0.0, "")
            reported[step] = event
            on_step(step, event, seconds, error)
        if job.state in _TERMINAL:
            return job
        time.sleep(settings.poll_seconds)


def get_job(settings: Settings, name: str) -> aiplatform_v1.PipelineJob:
    """One run with its task details (which a listing leaves out)."""
    client = pipeline_client(settings)
    return api_call(f"reading run {name}", lambda: client.get_pipeline_job(name=name))


def _steps(
    job: aiplatform_v1.PipelineJob, display_names: dict[str, str]
) -> Iterator[tuple[str, str, float, str]]:
    # Task details name tasks as the spec does; the root DAG's own entry is not a step.
    tasks = job.job_detail.task_details
    for task in sorted(tasks, key=lambda t: t.create_time.timestamp() if t.create_time else 0.0):
        step = display_names.get(task.task_name)
        if step is None and task.task_name in display_names.values():
            step = task.task_name
        if step is None:
            continue
        seconds = 0.0
        if task.start_time and task.end_time:
            seconds = (task.end_time - task.start_time).total_seconds()
        yield step, task.state.name, seconds, task.error.message


def display_names(pipeline_func: Any) -> dict[str, str]:
    return {
        name: task.task_info.name
        for name, task in pipeline_func.pipeline_spec.root.dag.tasks.items()
    }


def failure(job: aiplatform_v1.PipelineJob, display_names_: dict[str, str]) -> tuple[str, str]:
    """(failing step, its error line): the project's own error when the message has one."""
    for step, state, _seconds, error in _steps(job, display_names_):
        if state == "FAILED":
            return step, _error_line(error)
    return "", _error_line(job.error.message or "the run was cancelled")


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
