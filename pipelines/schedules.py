"""Schedules that start the pipelines on Vertex AI: weekly retraining, daily scoring and
weekly monitoring.

Two backends, one shape (`Schedules`: plan a dry run, apply, list, pause, resume, delete):
- Cloud Scheduler (default): a job whose HTTP target POSTs a PipelineJob to the Vertex REST
  API with an OAuth token of the scheduler account. Cloud Scheduler job names are ours, so
  "create or update" is a GET then a POST or a PATCH.
- Vertex AI Schedules (`--scheduler vertex`): shown in the console's Schedules tab, at most
  one run at a time. Their ids are Vertex's, so a schedule is found by display name.

Either way the PipelineJob names the template by its sha256 version in Artifact Registry
(a tag is resolved by Vertex's service agent, which may not be able to read the
repository), and its body is static: the scoring date is "" and becomes today in the
schedule's time zone when the run starts, as the `time_zone` argument tells it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from google.api_core import exceptions
from google.cloud import aiplatform_v1, scheduler_v1
from google.protobuf import duration_pb2, field_mask_pb2

from components import identifiers
from components.errors import google_reason
from components.settings import Settings
from pipelines.vertex import (
    CLOUD_PLATFORM,
    ApiRequest,
    VertexError,
    api_call,
    api_url,
    pipeline_job,
    rest_json,
)

SCHEDULE_NAMES = {
    "training": "churn-training-weekly",
    "scoring": "churn-scoring-daily",
    "monitoring": "churn-monitoring-weekly",
}
"""The schedule of each pipeline: a Cloud Scheduler job id, or a Vertex schedule's name."""


@dataclass(frozen=True)
class Scheduled:
    """One schedule: its name, cron (in `settings.time_zone`) and the run it starts."""

    name: str
    cron: str
    job: aiplatform_v1.PipelineJob


def scheduled_run(
    settings: Settings,
    name: str,
    cron: str,
    pipeline_func: Any,
    template_uri: str,
    run: dict[str, Any] | None = None,
) -> Scheduled:
    """The schedule `name` starting `pipeline_func` from `template_uri` on `cron` (five
    unix-cron fields, checked here for any caller; the time zone is `settings.time_zone`),
    with the arguments `pipelines.parameters` gives it for Vertex (`run`: those that are
    not settings, such as the monitoring run's `retrain_job`)."""
    from pipelines.parameters import pipeline_arguments

    identifiers.cron(cron, name=f"the cron of schedule {name}")

    arguments = pipeline_arguments(pipeline_func, settings, vertex=True, run=run)
    job = pipeline_job(
        settings, arguments, display_name=pipeline_func.name, template_uri=template_uri
    )
    return Scheduled(name, cron, job)


def retraining_job(settings: Settings, training_func: Any, template_uri: str) -> str:
    """The training run a scheduled monitoring run starts when a retraining is due (its
    `retrain_job` argument, REST JSON): the PipelineJob the weekly training schedule starts,
    from the same template pinned by its sha256 version, as the pipelines' account."""
    from pipelines.parameters import pipeline_arguments

    arguments = pipeline_arguments(training_func, settings, vertex=True)
    job = pipeline_job(
        settings, arguments, display_name=training_func.name, template_uri=template_uri
    )
    return json.dumps(rest_json(job), sort_keys=True)


@dataclass(frozen=True)
class ScheduleState:
    """What `schedule --list` shows for one schedule: `last_run` is when it last started a
    run and how that went ("" when it never has), `last_error` the service's reason when
    starting it failed."""

    name: str
    state: str
    cron: str
    time_zone: str
    template_uri: str
    last_run: str = ""
    last_error: str = ""


class Schedules(Protocol):
    def plan(self, scheduled: Scheduled) -> list[ApiRequest]: ...
    def apply(self, scheduled: Scheduled) -> str: ...
    def get(self, name: str) -> ScheduleState | None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...


def open_schedules(settings: Settings, backend: str) -> Schedules:
    if backend == "vertex":
        return VertexSchedules(settings)
    return CloudSchedulerJobs(settings)


def find_schedule(settings: Settings, name: str) -> ScheduleState | None:
    """Schedule `name` wherever `schedule` made it: a Cloud Scheduler job, else a Vertex
    schedule; None when neither exists."""
    return CloudSchedulerJobs(settings).get(name) or VertexSchedules(settings).get(name)


class CloudSchedulerJobs:
    """Cloud Scheduler jobs, named `projects/P/locations/R/jobs/<schedule name>`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parent = f"projects/{settings.project}/locations/{settings.region}"

    @property
    def _client(self) -> scheduler_v1.CloudSchedulerClient:
        return scheduler_v1.CloudSchedulerClient(
            transport="rest", client_options={"api_endpoint": self.settings.scheduler_endpoint}
        )

    def job(self, scheduled: Scheduled) -> scheduler_v1.Job:
        s = self.settings
        run = json.dumps(rest_json(scheduled.job), sort_keys=True).encode()
        return scheduler_v1.Job(
            name=f"{self.parent}/jobs/{scheduled.name}",
            description=f"Starts a {scheduled.job.display_name} run on Vertex AI Pipelines",
            schedule=scheduled.cron,
            time_zone=s.time_zone,
            # Creating a PipelineJob answers in seconds; the run itself is Vertex's.
            attempt_deadline=duration_pb2.Duration(seconds=120),
            http_target=scheduler_v1.HttpTarget(
                uri=api_url(
                    s.vertex_endpoint,
                    f"projects/{s.project}/locations/{s.region}/pipelineJobs",
                ),
                http_method=scheduler_v1.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=run,
                # An OAuth access token, not an OIDC token: the target is a googleapis.com API.
                oauth_token=scheduler_v1.OAuthToken(
                    service_account_email=s.scheduler_account,
                    scope=CLOUD_PLATFORM,
                ),
            ),
        )

    def plan(self, scheduled: Scheduled) -> list[ApiRequest]:
        job = self.job(scheduled)
        endpoint = self.settings.scheduler_endpoint
        # A dry run cannot know whether the job exists: it shows the lookup and the create
        # (an update PATCHes the same body).
        return [
            ApiRequest("GET", api_url(endpoint, job.name)),
            ApiRequest("POST", api_url(endpoint, f"{self.parent}/jobs"), rest_json(job)),
        ]

    def apply(self, scheduled: Scheduled) -> str:
        job = self.job(scheduled)
        client = self._client
        try:
            client.get_job(name=job.name)
        except exceptions.NotFound:
            api_call(
                f"creating {scheduled.name}", lambda: client.create_job(parent=self.parent, job=job)
            )
            return "created"
        except exceptions.GoogleAPICallError as exc:
            raise VertexError(f"reading {scheduled.name} failed: {google_reason(exc)}") from None
        mask = field_mask_pb2.FieldMask(
            paths=["description", "schedule", "time_zone", "attempt_deadline", "http_target"]
        )
        api_call(f"updating {scheduled.name}", lambda: client.update_job(job=job, update_mask=mask))
        return "updated"

    def get(self, name: str) -> ScheduleState | None:
        try:
            job = self._client.get_job(name=f"{self.parent}/jobs/{name}")
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPICallError as exc:
            raise VertexError(f"reading {name} failed: {google_reason(exc)}") from None
        run = json.loads(job.http_target.body or b"{}")
        # `status` is the last attempt's outcome: code 0 (or none) when Vertex took the run.
        error = f"{job.status.code} {job.status.message}".strip() if job.status.code else ""
        attempted = job.last_attempt_time
        return ScheduleState(
            name,
            job.state.name,
            job.schedule,
            job.time_zone,
            run.get("templateUri", ""),
            last_run=(
                f"{attempted.isoformat(timespec='seconds')} {'failed' if error else 'started'}"
                if attempted
                else ""
            ),
            last_error=error,
        )

    def pause(self, name: str) -> None:
        client = self._client
        api_call(f"pausing {name}", lambda: client.pause_job(name=f"{self.parent}/jobs/{name}"))

    def resume(self, name: str) -> None:
        client = self._client
        api_call(f"resuming {name}", lambda: client.resume_job(name=f"{self.parent}/jobs/{name}"))

    def delete(self, name: str) -> None:
        client = self._client
        api_call(f"deleting {name}", lambda: client.delete_job(name=f"{self.parent}/jobs/{name}"))


class VertexSchedules:
    """Vertex AI Schedules, found by display name (their ids are Vertex's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parent = f"projects/{settings.project}/locations/{settings.region}"

    @property
    def _client(self) -> aiplatform_v1.ScheduleServiceClient:
        return aiplatform_v1.ScheduleServiceClient(
            transport="rest", client_options={"api_endpoint": self.settings.vertex_endpoint}
        )

    def schedule(self, scheduled: Scheduled) -> aiplatform_v1.Schedule:
        return aiplatform_v1.Schedule(
            display_name=scheduled.name,
            cron=f"TZ={self.settings.time_zone} {scheduled.cron}",
            max_concurrent_run_count=1,
            create_pipeline_job_request=aiplatform_v1.CreatePipelineJobRequest(
                parent=self.parent, pipeline_job=scheduled.job
            ),
        )

    def _filter(self, name: str) -> str:
        return f'display_name="{name}"'

    def plan(self, scheduled: Scheduled) -> list[ApiRequest]:
        endpoint = self.settings.vertex_endpoint
        path = f"{self.parent}/schedules"
        return [
            ApiRequest("GET", api_url(endpoint, path, {"filter": self._filter(scheduled.name)})),
            ApiRequest("POST", api_url(endpoint, path), rest_json(self.schedule(scheduled))),
        ]

    def _find(self, name: str) -> aiplatform_v1.Schedule | None:
        client = self._client
        found = api_call(
            f"looking up {name}",
            lambda: list(
                client.list_schedules(
                    request=aiplatform_v1.ListSchedulesRequest(
                        parent=self.parent, filter=self._filter(name)
                    )
                )
            ),
        )
        if len(found) > 1:
            raise VertexError(
                f"{len(found)} Vertex schedules are named {name}; delete all but one in the "
                "console's Schedules tab"
            )
        return found[0] if found else None

    def apply(self, scheduled: Scheduled) -> str:
        schedule = self.schedule(scheduled)
        existing = self._find(scheduled.name)
        client = self._client
        if existing is None:
            api_call(
                f"creating {scheduled.name}",
                lambda: client.create_schedule(parent=self.parent, schedule=schedule),
            )
            return "created"
        schedule.name = existing.name
        mask = field_mask_pb2.FieldMask(
            paths=["cron", "max_concurrent_run_count", "create_pipeline_job_request"]
        )
        api_call(
            f"updating {scheduled.name}",
            lambda: client.update_schedule(schedule=schedule, update_mask=mask),
        )
        return "updated"

    def get(self, name: str) -> ScheduleState | None:
        found = self._find(name)
        if found is None:
            return None
        zone, _, cron = found.cron.partition(" ")
        if not zone.startswith("TZ="):  # a schedule made elsewhere, without a time zone
            zone, cron = "TZ=UTC", found.cron
        # The response names the run it created, or says why none was created.
        last = found.last_scheduled_run_response
        error = "" if "/pipelineJobs/" in last.run_response else last.run_response
        return ScheduleState(
            name,
            found.state.name,
            cron,
            zone.removeprefix("TZ="),
            found.create_pipeline_job_request.pipeline_job.template_uri,
            last_run=(
                f"{last.scheduled_run_time.isoformat(timespec='seconds')} "
                f"{'failed' if error else 'started'}"
                if last.scheduled_run_time
                else ""
            ),
            last_error=error,
        )

    def _named(self, name: str) -> str:
        found = self._find(name)
        if found is None:
            raise VertexError(
                f"no Vertex schedule named {name}; create it with `submit.py schedule`"
            )
        return found.name

    def pause(self, name: str) -> None:
        full, client = self._named(name), self._client
        api_call(f"pausing {name}", lambda: client.pause_schedule(name=full))

    def resume(self, name: str) -> None:
        full, client = self._named(name), self._client
        api_call(f"resuming {name}", lambda: client.resume_schedule(name=full))

    def delete(self, name: str) -> None:
        full, client = self._named(name), self._client
        api_call(f"deleting {name}", lambda: client.delete_schedule(name=full))
