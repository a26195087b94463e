"""Vertex AI Pipelines routes for the Google stand-in (tests/google_standin.py), as strict as
Vertex: PipelineJobs that run their DAG, the metadata contexts experiments use, and the
Cloud Logging entries of the steps' CustomJobs.

What it refuses, in Vertex's words and shapes:
- a body that is no `PipelineJob` (parsed into the real `aiplatform_v1` proto: an unknown
  field is ESF's 400 "Invalid JSON payload received. Unknown name ..."), a job id Vertex
  would refuse, a second job with one id (409);
- a URL for another location than the regional endpoint it plays (Vertex serves one
  location per endpoint);
- a caller without `aiplatform.pipelineJobs.create` (403 PERMISSION_DENIED), a service
  account that does not exist or that the caller may not act as (Vertex's 400 "You do not
  have permission to act as service_account: ... (or it may not exist)."); who may do what
  is the `authorize(member, permission, resource)` hook (an IAM stand-in supplies it);
- an executor image that does not exist (`image_exists(uri)`, from an Artifact Registry
  stand-in, asked about Google's images too): as on Vertex, the run is created and fails
  at the first step in that image.

How a run goes, a GET at a time: PENDING with no metadata context for `start_after` GETs
(Vertex creates the run's context only when it starts the run), then RUNNING, each step
PENDING, RUNNING, then SUCCEEDED in dependency order (two GETs a step).
`jobDetail.taskDetails` lists the root DAG's own entry, every group (condition branches,
`dsl.If` / `dsl.Else`) and every step, nested ones with `parentTaskId`; a branch whose
condition is false is NOT_TRIGGERED (Vertex's SKIPPED means a cache hit) and its steps
never appear. A step in `fail` fails with Vertex's generic replica error, its own lines go
to Cloud Logging under its CustomJob, its groups and the run fail with "The DAG failed
because some tasks failed", and nothing after it starts. A step named in `artifacts`
reports those output artifacts' metadata.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_scheduler_standin import valid_cron as _valid_cron
from google.cloud import aiplatform_v1
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse
from google.protobuf import json_format
from google_standin import Authorize, account_resource, allow_all, error, permission_denied
from kfp.pipeline_spec import pipeline_spec_pb2

PROJECT_NUMBER = "123456789012"
STARTED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
# Vertex's words for a step whose container exited non-zero (Vertex AI training
# documentation, "Handle common errors"; the logs link as Vertex appends it).
REPLICA_ERROR = (
    "The replica workerpool0-0 exited with a non-zero status of 1. Termination reason: Error. "
    "To find out more about why your job exited please check the logs: "
    "https://console.cloud.google.com/logs/viewer?project={number}&resource=ml_job%2Fjob_id%2F"
    "{job}&advancedFilter=resource.type%3D%22ml_job%22%0Aresource.labels.job_id%3D%22{job}%22"
)
# Unverified wording: Vertex's message for a step whose image cannot be pulled.
IMAGE_ERROR = (
    "The replica workerpool0-0 exited with a non-zero status of 1. Termination reason: "
    "Error: failed to pull image {image}: not found. To find out more about why your job "
    "exited please check the logs: https://console.cloud.google.com/logs/viewer?project="
    "{number}&resource=ml_job%2Fjob_id%2F{job}"
)
_VERTEX = "aiplatform.googleapis.com"
DAG_ERROR = "The DAG failed because some tasks failed. The failed tasks are: [{tasks}]."
_JOB_ID = re.compile(r"[a-z][-a-z0-9]{0,127}")


@dataclass
class Task:
    """One entry of a run's plan: a step (with its executor's image) or a group."""

    name: str
    parent: str | None
    image: str | None = None  # None: a group
    triggered: bool = True
    children: list[str] = field(default_factory=list)


@dataclass
class Run:
    job: dict[str, Any]
    spec: pipeline_spec_pb2.PipelineSpec
    plan: list[Task]
    fail: dict[str, str]
    gets: int = 0
    task_ids: dict[str, str] = field(default_factory=dict)


class VertexPipelines:
    """PipelineJob, metadata-context and Cloud Logging routes on `standin` for one project
    and the one location its regional endpoint serves."""

    def __init__(
        self,
        standin,
        project: str,
        location: str,
        *,
        authorize: Authorize = allow_all,
        image_exists: Callable[[str], bool] = lambda _uri: True,
        service_accounts: set[str] | None = None,
        fail: dict[str, str] | None = None,
        artifacts: dict[str, dict[str, dict[str, Any]]] | None = None,
        start_after: int = 2,
        templates: Callable[[str], dict[str, Any] | None] = lambda _uri: None,
    ) -> None:
        self.project, self.location = project, location
        self.authorize, self.image_exists = authorize, image_exists
        self.service_accounts = service_accounts  # None: every well-formed account exists
        self.fail, self.artifacts = fail or {}, artifacts or {}
        self.start_after = start_after
        self.templates = templates  # templateUri -> the template (an Artifact Registry stand-in)
        self.runs: dict[str, Run] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[str]] = {}
        self.logs: dict[str, list[str]] = {}  # CustomJob id -> its log lines, oldest first
        parent = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
        standin.route("POST", rf"{parent}/pipelineJobs", self._create)
        standin.route("GET", rf"{parent}/pipelineJobs/(?P<id>[^/:]+)", self._get)
        standin.route("GET", rf"{parent}/pipelineJobs", self._list)
        store = rf"{parent}/metadataStores/default/contexts"
        standin.route("POST", store, self._create_context)
        standin.route("POST", rf"{store}/(?P<id>[^/:]+):addContextChildren", self._add_children)
        standin.route("POST", r"/v2/entries:list", self._list_logs)

    # --- requests ---------------------------------------------------------------------

    def _where(self, match) -> tuple[int, dict[str, Any]] | None:
        """Refuse a project or location this endpoint does not serve."""
        if match["location"] != self.location:
            return error(
                400,
                "INVALID_ARGUMENT",
                f"Location {match['location']} does not match the endpoint's location "
                f"{self.location}; send it to {match['location']}-aiplatform.googleapis.com",
            )
        if match["project"] != self.project:
            return error(403, "PERMISSION_DENIED", f"Project {match['project']} not found.")
        return None

    def _denied(self, request, permission: str, resource: str) -> tuple[int, dict[str, Any]] | None:
        if self.authorize(request.member, permission, resource):
            return None
        return permission_denied(_VERTEX, permission, resource, request.caller)

    def _create(self, request, match):
        refused = self._where(match)
        parent = f"projects/{match['project']}/locations/{match['location']}"
        refused = refused or self._denied(request, "aiplatform.pipelineJobs.create", parent)
        if refused:
            return refused
        try:
            job = json_format.Parse(request.raw, aiplatform_v1.PipelineJob.pb()())
        except json_format.ParseError as exc:
            unknown = re.search(r'has no field named "([^"]+)"', str(exc))
            detail = (
                f"Unknown name \"{unknown[1]}\" at 'pipeline_job': Cannot find field."
                if unknown
                else str(exc)
            )
            return error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {detail}")
        # The id is optional: without one (a Cloud Scheduler job's static body), Vertex
        # makes one from the pipeline's name and the time.
        job_id = (request.query.get("pipelineJobId") or [""])[0] or (
            f"{spec_name(job)}-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        )
        if not _JOB_ID.fullmatch(job_id):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"Invalid pipeline job id {job_id!r}: it must match [a-z][-a-z0-9]{{0,127}}.",
            )
        if job_id in self.runs:
            return error(
                409, "ALREADY_EXISTS", f"PipelineJob {parent}/pipelineJobs/{job_id} already exists."
            )
        account = job.service_account
        exists = self.service_accounts is None or account in self.service_accounts
        resource = account_resource(account)
        if account and not (
            exists and self.authorize(request.member, "iam.serviceAccounts.actAs", resource)
        ):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"You do not have permission to act as service_account: {account}. "
                "(or it may not exist).",
            )
        template = json_format.MessageToDict(job.pipeline_spec)
        if job.template_uri:
            # Unverified wording: Vertex's refusal of a template it cannot fetch.
            template = self.templates(job.template_uri)
            if template is None:
                return error(
                    400, "INVALID_ARGUMENT", f"Failed to fetch the template {job.template_uri}."
                )
        if not template:
            return error(400, "INVALID_ARGUMENT", "pipeline_spec or template_uri is required.")
        try:
            spec = json_format.ParseDict(template, pipeline_spec_pb2.PipelineSpec())
        except json_format.ParseError as exc:
            return error(400, "INVALID_ARGUMENT", f"Invalid pipeline spec: {exc}")
        values = json_format.MessageToDict(job.runtime_config).get("parameterValues", {})
        body = json.loads(request.raw) | {
            "name": f"{parent}/pipelineJobs/{job_id}",
            "state": "PIPELINE_STATE_PENDING",
            "createTime": _time(STARTED),
            "updateTime": _time(STARTED),
        }
        self.runs[job_id] = Run(body, spec, _plan(spec, values), dict(self.fail))
        return 200, body

    def _get(self, request, match):
        refused = self._where(match)
        name = f"projects/{match['project']}/locations/{match['location']}"
        refused = refused or self._denied(request, "aiplatform.pipelineJobs.get", name)
        if refused:
            return refused
        run = self.runs.get(match["id"])
        if run is None:
            return error(404, "NOT_FOUND", f"PipelineJob {match['id']} not found.")
        run.gets += 1
        return 200, self._progress(match["id"], run)

    def _list(self, request, match):
        refused = self._where(match)
        parent = f"projects/{match['project']}/locations/{match['location']}"
        refused = refused or self._denied(request, "aiplatform.pipelineJobs.list", parent)
        if refused:
            return refused
        wanted = dict(re.findall(r'labels\.(\w+)="([^"]*)"', request.query.get("filter", [""])[0]))
        jobs = [self._progress(job_id, run) for job_id, run in self.runs.items()]
        jobs = [j for j in jobs if wanted.items() <= j.get("labels", {}).items()]
        # As Vertex does, a listing leaves out each run's details.
        listed = [{k: v for k, v in j.items() if k != "jobDetail"} for j in reversed(jobs)]
        return 200, {"pipelineJobs": listed}

    def _create_context(self, request, match):
        refused = self._where(match)
        store = f"projects/{match['project']}/locations/{match['location']}/metadataStores/default"
        refused = refused or self._denied(
            request, "aiplatform.metadataStores.contexts.create", store
        )
        if refused:
            return refused
        context = json_format.Parse(request.raw, aiplatform_v1.Context.pb()())
        name = f"{store}/contexts/{request.query['contextId'][0]}"
        if name in self.contexts:
            return error(409, "ALREADY_EXISTS", f"Context {name} already exists.")
        self.contexts[name] = json_format.MessageToDict(context) | {"name": name}
        return 200, self.contexts[name]

    def _add_children(self, request, match):
        refused = self._where(match)
        store = f"projects/{match['project']}/locations/{match['location']}/metadataStores/default"
        name = f"{store}/contexts/{match['id']}"
        refused = refused or self._denied(
            request, "aiplatform.metadataStores.contexts.update", name
        )
        if refused:
            return refused
        body = json_format.Parse(
            request.raw, aiplatform_v1.AddContextChildrenRequest.pb()(), ignore_unknown_fields=False
        )
        for child in [name, *body.child_contexts]:
            if child not in self.contexts:
                return error(404, "NOT_FOUND", f"Context {child} not found.")
        self.children.setdefault(name, []).extend(body.child_contexts)
        return 200, {}

    def _list_logs(self, request, _match):
        """Cloud Logging `entries.list`: the lines of the CustomJob the filter names."""
        query = json_format.Parse(request.raw, ListLogEntriesRequest.pb()())
        for resource in query.resource_names:
            if not self.authorize(request.member, "logging.logEntries.list", resource):
                return error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'logging.logEntries.list' denied on resource (or it may not "
                    f"exist): {resource}",
                )
        terms = dict(re.findall(r'([\w.]+)="([^"]*)"', query.filter))
        lines = self.logs.get(terms.get("resource.labels.job_id", ""), [])
        if terms.get("resource.type") != "ml_job":
            lines = []
        if query.order_by == "timestamp desc":
            lines = lines[::-1]
        entries = [
            {
                "logName": f"projects/{self.project}/logs/workerpool0-0",
                "resource": {
                    "type": "ml_job",
                    "labels": {"job_id": terms["resource.labels.job_id"]},
                },
                "severity": "ERROR",
                "jsonPayload": {
                    "attrs": {"tag": "workerpool0-0"},
                    "levelname": "ERROR",
                    "message": line,
                },
            }
            for line in lines[: query.page_size or 50]
        ]
        reply = json_format.ParseDict({"entries": entries}, ListLogEntriesResponse.pb()())
        return 200, json_format.MessageToDict(reply)

    # --- a run ------------------------------------------------------------------------

    def _progress(self, job_id: str, run: Run) -> dict[str, Any]:
        """The job as it stands after `run.gets` GETs."""
        job = dict(run.job)
        tick = run.gets - 1 - self.start_after
        if tick < 0:
            return job  # PENDING: Vertex has not started the run, it has no context yet
        store = f"{job['name'].split('/pipelineJobs/')[0]}/metadataStores/default"
        context = f"{store}/contexts/{job_id}"
        # Vertex creates the run's context when it starts the run.
        self.contexts.setdefault(context, {"name": context, "schemaTitle": "system.PipelineRun"})
        steps = [t for t in run.plan if t.image is not None and t.triggered]
        failing = next(
            (
                i
                for i, t in enumerate(steps)
                if t.name in run.fail or not self.image_exists(t.image)
            ),
            None,
        )
        position, phase = divmod(tick, 2)  # a step is PENDING for one GET, then RUNNING
        done = min(position, len(steps))
        if failing is not None:
            done = min(done, failing + 1)
        finished = done == len(steps) or (failing is not None and done == failing + 1)
        states: dict[str, str] = {}
        for i, step in enumerate(steps[: done + (0 if finished else 1)]):
            states[step.name] = ("RUNNING" if phase else "PENDING") if i == done else "SUCCEEDED"
        failed = []
        if failing is not None and done == failing + 1:
            states[steps[failing].name] = "FAILED"
            failed.append(steps[failing].name)
        details = [self._root(run, job, job_id, failed, finished)]
        for task in run.plan:
            detail = self._task(run, task, states, failed, finished)
            if detail:
                details.append(detail)
        job["state"] = "PIPELINE_STATE_RUNNING"
        job["startTime"] = _time(STARTED)
        job["jobDetail"] = {
            "pipelineContext": {"name": f"{store}/contexts/{job['displayName']}"},
            "pipelineRunContext": {"name": context},
            "taskDetails": details,
        }
        if finished:
            job["state"] = "PIPELINE_STATE_FAILED" if failed else "PIPELINE_STATE_SUCCEEDED"
            job["endTime"] = _time(STARTED + STEP * done)
        if failed:
            job["error"] = {
                "code": 9,
                "message": DAG_ERROR.format(tasks=", ".join(failed))
                + f"; Job (project_id = {self.project}, job_id = {_number(job_id)}) is failed "
                "due to the above error.",
            }
        return job

    def _root(self, run, job, job_id, failed, finished) -> dict[str, Any]:
        state = "FAILED" if failed else "SUCCEEDED" if finished else "RUNNING"
        root = {
            "taskId": _task_id(run, "(root)"),
            "taskName": run.spec.pipeline_info.name,
            "createTime": _time(STARTED),
            "startTime": _time(STARTED),
            "state": state,
            "execution": {"name": f"{job['name']}/executions/root", "displayName": job_id},
        }
        if failed:
            root["error"] = {"code": 9, "message": DAG_ERROR.format(tasks=", ".join(failed))}
        return root

    def _task(self, run, task, states, failed, finished) -> dict[str, Any] | None:
        parent = _task_id(run, task.parent or "(root)")
        if not task.triggered:
            if not self._started(run, task.name, states, finished):
                return None
            return {
                "taskId": _task_id(run, task.name),
                "parentTaskId": parent,
                "taskName": task.name,
                "state": "NOT_TRIGGERED",
                "createTime": _time(STARTED),
            }
        if task.image is None:  # a group: as its steps go
            if not self._started(run, task.name, states, finished):
                return None
            inner = self._steps_under(run, task.name)
            inner_failed = [s for s in inner if s in failed]
            if inner_failed:
                state = "FAILED"
            elif all(states.get(s) == "SUCCEEDED" for s in inner):
                state = "SUCCEEDED"
            else:
                state = "RUNNING"
            detail = {
                "taskId": _task_id(run, task.name),
                "parentTaskId": parent,
                "taskName": task.name,
                "state": state,
                "createTime": _time(STARTED),
                "startTime": _time(STARTED),
            }
            if inner_failed:
                detail["error"] = {"code": 9, "message": DAG_ERROR.format(tasks=", ".join(failed))}
            return detail
        state = states.get(task.name)
        if state is None:
            return None
        order = [t.name for t in run.plan if t.image is not None and t.triggered].index(task.name)
        custom_job = f"{_number(task.name)}{order}"
        detail = {
            "taskId": _task_id(run, task.name),
            "parentTaskId": parent,
            "taskName": task.name,
            "state": state,
            "createTime": _time(STARTED + STEP * order),
            "startTime": _time(STARTED + STEP * order),
            "executorDetail": {
                "containerDetail": {
                    "mainJob": f"projects/{PROJECT_NUMBER}/locations/{self.location}/"
                    f"customJobs/{custom_job}"
                }
            },
        }
        if state != "RUNNING":
            detail["endTime"] = _time(STARTED + STEP * (order + 1))
        if state == "FAILED":
            if not self.image_exists(task.image):
                message = IMAGE_ERROR.format(
                    image=task.image, number=PROJECT_NUMBER, job=custom_job
                )
            else:
                message = REPLICA_ERROR.format(number=PROJECT_NUMBER, job=custom_job)
                self.logs[custom_job] = run.fail[task.name].splitlines()
            detail["error"] = {"code": 9, "message": message}
        if state == "SUCCEEDED" and task.name in self.artifacts:
            detail["outputs"] = {
                output: {"artifacts": [{"metadata": metadata}]}
                for output, metadata in self.artifacts[task.name].items()
            }
        return detail

    def _steps_under(self, run: Run, group: str) -> list[str]:
        found = []
        for task in run.plan:
            if task.parent == group and task.triggered:
                found += (
                    [task.name] if task.image is not None else self._steps_under(run, task.name)
                )
        return found

    def _started(self, run: Run, task: str, states: dict[str, str], finished: bool) -> bool:
        """A group appears once a step inside it has; a group with no step to run (its
        branches not taken) and a branch not taken, once the run has reached them."""
        inner = self._steps_under(run, task)
        if inner:
            return any(s in states for s in inner)
        position = [t.name for t in run.plan].index(task)
        return finished or any(t.name in states for t in run.plan[position:])


def spec_name(job: aiplatform_v1.PipelineJob) -> str:
    """The pipeline's name for a generated job id: its display name, as an id may be."""
    name = re.sub(r"[^a-z0-9-]+", "-", (job.display_name or "pipeline").lower()).strip("-")
    return name if name[:1].isalpha() else f"pipeline-{name}"


def _plan(spec: pipeline_spec_pb2.PipelineSpec, values: dict[str, Any]) -> list[Task]:
    """Every task of the spec in an order Vertex could run them: a group before its tasks,
    a task after those it depends on; conditions decided on the run's parameter values."""
    inputs = {
        name: json_format.MessageToDict(p.default_value)
        for name, p in spec.root.input_definitions.parameters.items()
        if p.HasField("default_value")
    } | values
    plan: list[Task] = []

    def walk(dag, parent: str | None, scope: dict[str, Any]) -> None:
        for name in _ordered(dag):
            task = dag.tasks[name]
            component = spec.components[task.component_ref.name]
            own = {k: _value(p, scope) for k, p in task.inputs.parameters.items()}
            condition = task.trigger_policy.condition
            if condition and not _holds(condition, own):
                plan.append(Task(name, parent, triggered=False))
            elif component.HasField("dag"):
                plan.append(Task(name, parent))
                walk(component.dag, name, own)
            else:
                executor = spec.deployment_spec.fields["executors"].struct_value.fields[
                    component.executor_label
                ]
                image = executor.struct_value.fields["container"].struct_value.fields["image"]
                plan.append(Task(name, parent, image=image.string_value))

    walk(spec.root.dag, None, inputs)
    return plan


def _ordered(dag) -> list[str]:
    """Task names, each after the tasks it depends on (ties by display name)."""
    left = dict(dag.tasks)
    order: list[str] = []
    while left:
        ready = sorted(
            (n for n, t in left.items() if set(t.dependent_tasks) <= set(order)),
            key=lambda n: left[n].task_info.name,
        )
        order.append(ready[0])
        del left[ready[0]]
    return order


def _value(parameter, scope: dict[str, Any]) -> Any:
    if parameter.HasField("component_input_parameter"):
        return scope.get(parameter.component_input_parameter)
    if parameter.HasField("runtime_value"):
        return json_format.MessageToDict(parameter.runtime_value.constant)
    return None  # another task's output: the stand-in runs no code, so it has none


def _holds(condition: str, values: dict[str, Any]) -> bool:
    """The CEL conditions KFP compiles (`inputs.parameter_values['x'] == true`, `!`, `&&`)."""
    python = re.sub(r"inputs\.parameter_values\['([^']+)'\]", lambda m: f"v[{m[1]!r}]", condition)
    python = python.replace("&&", " and ").replace("||", " or ")
    python = re.sub(r"!(?!=)", " not ", python)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", python))
    return bool(
        eval(python, {"__builtins__": {}}, {"v": values})
    )  # the conditions of a compiled spec


def _task_id(run: Run, name: str) -> str:
    return run.task_ids.setdefault(name, str(1000 + len(run.task_ids)))


def _number(text: str) -> str:
    return str(int.from_bytes(text.encode()[:6].ljust(6, b"\0"), "big") % 10**12)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class VertexSchedules:
    """Vertex AI Schedules of one project and location on `standin`: bodies parse into
    `aiplatform_v1.Schedule`, the cron is `TZ=<zone> <unix-cron>` or plain unix-cron, at most
    `maxConcurrentRunCount` runs, the caller holds `aiplatform.schedules.*`. Ids are
    Vertex's own (numbers), so a schedule is found by listing with a display-name filter."""

    def __init__(
        self, standin, project: str, location: str, *, authorize: Authorize = allow_all
    ) -> None:
        self.project, self.location, self.authorize = project, location, authorize
        self.schedules: dict[str, dict[str, Any]] = {}
        path = rf"/v1/projects/{project}/locations/{location}/schedules"
        standin.route("GET", path, self._list)
        standin.route("POST", path, self._create)
        standin.route("PATCH", rf"{path}/(?P<id>[0-9]+)", self._update)
        for verb, state in (("pause", "PAUSED"), ("resume", "ACTIVE")):
            standin.route("POST", rf"{path}/(?P<id>[0-9]+):{verb}", self._setter(verb, state))

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def _refused(self, request, permission: str, body: bool = True):
        if not self.authorize(request.member, permission, self.parent):
            return permission_denied(_VERTEX, permission, self.parent, request.caller)
        if not body:
            return None
        try:
            json_format.Parse(request.raw, aiplatform_v1.Schedule.pb(aiplatform_v1.Schedule()))
        except json_format.ParseError as exc:
            return error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        zone, _, cron = request.json.get("cron", "").partition(" ")
        if not zone.startswith("TZ=") or not _valid_cron(cron):
            return error(400, "INVALID_ARGUMENT", "Invalid cron expression.")
        return None

    def _list(self, request, _match):
        refused = self._refused(request, "aiplatform.schedules.list", body=False)
        if refused:
            return refused
        terms = re.findall(r'display_name="(.+)"', request.query.get("filter", [""])[0])
        found = [s for s in self.schedules.values() if not terms or s["displayName"] in terms]
        return 200, {"schedules": found}

    def _create(self, request, _match):
        refused = self._refused(request, "aiplatform.schedules.create")
        if refused:
            return refused
        name = f"{self.parent}/schedules/{len(self.schedules) + 1}"
        self.schedules[name] = request.json | {"name": name, "state": "ACTIVE"}
        return 200, self.schedules[name]

    def _update(self, request, match):
        refused = self._refused(request, "aiplatform.schedules.update")
        name = f"{self.parent}/schedules/{match['id']}"
        if refused is None and name not in self.schedules:
            refused = error(404, "NOT_FOUND", f"Schedule {name} not found.")
        if refused:
            return refused
        self.schedules[name] = self.schedules[name] | request.json
        return 200, self.schedules[name]

    def _setter(self, verb: str, state: str):
        def handler(request, match):
            refused = self._refused(request, f"aiplatform.schedules.{verb}", body=False)
            name = f"{self.parent}/schedules/{match['id']}"
            if refused is None and name not in self.schedules:
                refused = error(404, "NOT_FOUND", f"Schedule {name} not found.")
            if refused:
                return refused
            self.schedules[name]["state"] = state
            return 200, {}

        return handler
