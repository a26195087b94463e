"""Cloud Scheduler on the Google stand-in (tests/google_standin.py), as strict as the service.

Jobs are checked as Cloud Scheduler checks them (the v1 REST reference and its `Job`
message): the body parses into `scheduler_v1.Job` (an unknown field is refused), the job id
is letters, digits, hyphens and underscores, the schedule is a unix-cron string and the time
zone an IANA name ("Schedule or time zone is invalid."), an HTTP target's attempt deadline
lies between 15 seconds and 30 minutes, the parent names this project and a Cloud Scheduler
location, and the caller holds the `cloudscheduler.jobs.*` permission of each method plus
`iam.serviceAccounts.actAs` on the account whose OAuth token the job sends. `fire` does what
the service does at the scheduled time: it sends the job's HTTP request with an access token
of that account, and records the attempt's status on the job.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.cloud import scheduler_v1
from google.protobuf import json_format
from google_standin import (
    Authorize,
    access_token,
    account_resource,
    allow_all,
    error,
    permission_denied,
)

# Cloud Scheduler's locations (a subset of https://cloud.google.com/about/locations/ that
# the tests use and a real project would: the regions Vertex AI Pipelines runs in).
LOCATIONS = frozenset(
    {"us-central1", "us-east1", "us-east4", "us-west1", "europe-west1", "europe-west2",
     "europe-west3", "europe-west4", "asia-east1", "asia-northeast1", "asia-southeast1"}
)  # fmt: skip
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
# HTTP status of the target -> the google.rpc code Cloud Scheduler records for the attempt.
_RPC_CODES = {200: 0, 400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}


class CloudScheduler:
    """The Cloud Scheduler v1 jobs API of one project, on `standin`."""

    def __init__(
        self,
        standin: Any,
        project: str,
        *,
        authorize: Authorize = allow_all,
        service_account_exists: Callable[[str], bool] = lambda _email: True,
        token_for: Callable[[str], str] | None = None,
    ) -> None:
        self.project = project
        self.authorize = authorize
        self.service_account_exists = service_account_exists
        self.token_for = token_for or access_token
        self.jobs: dict[str, dict[str, Any]] = {}
        jobs = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/jobs"
        one = jobs + r"/(?P<id>[^/:]+)"
        standin.route("POST", jobs, self._create)
        standin.route("GET", jobs, self._list)
        standin.route("GET", one, self._get)
        standin.route("PATCH", one, self._update)
        standin.route("DELETE", one, self._delete)
        for verb in ("pause", "resume", "run"):
            standin.route("POST", f"{one}:{verb}", getattr(self, f"_{verb}"))

    # --- the API ------------------------------------------------------------------------

    def _create(self, request, match):
        refused = self._parent(request, match, "cloudscheduler.jobs.create")
        if refused:
            return refused
        job, refused = self._parsed(request.raw)
        if refused:
            return refused
        parent = _parent_name(match)
        job_id = job.name.removeprefix(parent + "/jobs/") if job.name else ""
        if not job.name.startswith(parent + "/jobs/") or not JOB_ID.fullmatch(job_id):
            return error(400, "INVALID_ARGUMENT", f"Job name {job.name!r} is invalid.")
        if job.name in self.jobs:
            return error(409, "ALREADY_EXISTS", f"Job {job.name} already exists.")
        refused = self._target(request, job)
        if refused:
            return refused
        now = _now()
        self.jobs[job.name] = _json(job) | {
            "state": "ENABLED",
            "userUpdateTime": now,
            "scheduleTime": now,
        }
        return 200, self.jobs[job.name]

    def _list(self, request, match):
        refused = self._parent(request, match, "cloudscheduler.jobs.list")
        if refused:
            return refused
        prefix = _parent_name(match) + "/jobs/"
        return 200, {"jobs": [j for n, j in self.jobs.items() if n.startswith(prefix)]}

    def _get(self, request, match):
        name, refused = self._existing(request, match, "cloudscheduler.jobs.get")
        return refused or (200, self.jobs[name])

    def _update(self, request, match):
        name, refused = self._existing(request, match, "cloudscheduler.jobs.update")
        if refused:
            return refused
        job, refused = self._parsed(request.raw)
        if refused:
            return refused
        mask = request.query.get("updateMask", [""])[0]
        fields = [f for f in mask.split(",") if f] or list(_json(job))
        merged = dict(self.jobs[name])
        for field in fields:
            key = _camel(field)
            if key in ("name", "state", "status", "userUpdateTime"):
                return error(400, "INVALID_ARGUMENT", f"Field {field} cannot be updated.")
            value = _json(job).get(key)
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        updated, refused = self._parsed(json.dumps(_output_free(merged)).encode())
        refused = refused or self._target(request, updated)
        if refused:
            return refused
        self.jobs[name] = merged | {"userUpdateTime": _now()}
        return 200, self.jobs[name]

    def _delete(self, request, match):
        name, refused = self._existing(request, match, "cloudscheduler.jobs.delete")
        if refused:
            return refused
        del self.jobs[name]
        return 200, {}

    def _pause(self, request, match):
        return self._set_state(request, match, "cloudscheduler.jobs.pause", "PAUSED")

    def _resume(self, request, match):
        return self._set_state(request, match, "cloudscheduler.jobs.enable", "ENABLED")

    def _run(self, request, match):
        name, refused = self._existing(request, match, "cloudscheduler.jobs.run")
        if refused:
            return refused
        self.fire(name.rsplit("/", 1)[1])
        return 200, self.jobs[name]

    # --- what the service does at the scheduled time -------------------------------------

    def fire(self, job_id: str) -> int | None:
        """Send job `job_id`'s HTTP request as Cloud Scheduler does at its scheduled time,
        with an access token of its OAuth account; record the attempt on the job and return
        the target's HTTP status (None: the job is paused, so nothing is sent)."""
        (name,) = [n for n in self.jobs if n.endswith(f"/jobs/{job_id}")]
        job = self.jobs[name]
        if job["state"] != "ENABLED":
            return None
        target = job["httpTarget"]
        headers = dict(target.get("headers", {}))
        headers["Authorization"] = (
            f"Bearer {self.token_for(target['oauthToken']['serviceAccountEmail'])}"
        )
        request = urllib.request.Request(
            target["uri"],
            data=base64.b64decode(target.get("body", "")),
            headers=headers,
            method=target.get("httpMethod", "POST"),
        )
        # Straight to the target, as the service does: no proxy from the caller's environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                status, text = response.status, ""
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        code = _RPC_CODES.get(status, 2)
        job["lastAttemptTime"] = _now()
        job["status"] = {"code": code, "message": _message(text)} if code else {}
        return status

    # --- checks --------------------------------------------------------------------------

    def _parent(self, request, match, permission: str):
        parent = _parent_name(match)
        # Another project's, or one this caller may not use: Google does not say which.
        allowed = match["project"] == self.project and self.authorize(
            request.member, permission, f"projects/{self.project}"
        )
        if not allowed:
            api = "cloudscheduler.googleapis.com"
            return permission_denied(api, permission, parent, request.caller)
        if match["location"] not in LOCATIONS:
            return error(
                404,
                "NOT_FOUND",
                f"Location '{match['location']}' is not found or access is unauthorized.",
            )
        return None

    def _existing(self, request, match, permission: str):
        refused = self._parent(request, match, permission)
        name = f"{_parent_name(match)}/jobs/{match['id']}"
        if refused is None and name not in self.jobs:
            refused = error(404, "NOT_FOUND", f"Job not found: {name}.")
        return name, refused

    def _set_state(self, request, match, permission: str, state: str):
        name, refused = self._existing(request, match, permission)
        if refused:
            return refused
        self.jobs[name] = self.jobs[name] | {"state": state, "userUpdateTime": _now()}
        return 200, self.jobs[name]

    def _parsed(self, raw: bytes):
        message = scheduler_v1.Job.pb(scheduler_v1.Job())
        try:
            json_format.Parse(raw or b"{}", message)
        except json_format.ParseError as exc:
            return None, error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        job = scheduler_v1.Job.wrap(message)
        if len(raw) > 1024 * 1024:
            return None, error(400, "INVALID_ARGUMENT", "The job is larger than 1MB.")
        if not valid_cron(job.schedule) or not _valid_zone(job.time_zone):
            return None, error(400, "INVALID_ARGUMENT", "Schedule or time zone is invalid.")
        return job, None

    def _target(self, request, job: scheduler_v1.Job):
        if "http_target" not in job:
            return error(400, "INVALID_ARGUMENT", "A job must have a target.")
        target = job.http_target
        if not re.match(r"https?://", target.uri):
            return error(400, "INVALID_ARGUMENT", f"HttpTarget.uri {target.uri!r} is invalid.")
        deadline = job.attempt_deadline.total_seconds() if "attempt_deadline" in job else 180
        if not 15 <= deadline <= 1800:
            return error(
                400,
                "INVALID_ARGUMENT",
                "attempt_deadline must be between 15 seconds and 30 minutes for HTTP targets.",
            )
        email = target.oauth_token.service_account_email
        if email:
            resource = account_resource(email)
            if not self.service_account_exists(email) or not self.authorize(
                request.member, "iam.serviceAccounts.actAs", resource
            ):
                return error(
                    403,
                    "PERMISSION_DENIED",
                    "The principal (user or service account) lacks IAM permission "
                    f'"iam.serviceAccounts.actAs" for the resource "{email}" '
                    "(or the resource may not exist).",
                )
        return None


def _parent_name(match) -> str:
    return f"projects/{match['project']}/locations/{match['location']}"


def _json(job: scheduler_v1.Job) -> dict[str, Any]:
    return json.loads(scheduler_v1.Job.to_json(job, use_integers_for_enums=False, indent=0))


def _output_free(job: dict[str, Any]) -> dict[str, Any]:
    output = ("state", "status", "userUpdateTime", "scheduleTime", "lastAttemptTime")
    return {k: v for k, v in job.items() if k not in output}


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _message(text: str) -> str:
    try:
        return json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return text


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _valid_zone(name: str) -> bool:
    if not name:  # Cloud Scheduler's default: UTC
        return True
    if name in ("localtime", "Factory") or name.startswith(("posix/", "right/")):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 7, _DAYS))


def valid_cron(schedule: str) -> bool:
    """A unix-cron string (five fields: minute hour day-of-month month day-of-week)."""
    parts = schedule.split()
    if len(parts) != 5 or schedule != schedule.strip():
        return False
    return all(_valid_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True))


def _valid_field(field: str, low: int, high: int, names: tuple[str, ...] | list[str]) -> bool:
    def value(text: str) -> int | None:
        if text.lower() in names:
            return names.index(text.lower()) + (1 if names is _MONTHS else 0)
        return int(text) if text.isdigit() and low <= int(text) <= high else None

    for item in field.split(","):
        span, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return False
        if span == "*":
            continue
        first, _, last = span.partition("-")
        start, end = value(first), value(last) if last else None
        if start is None or (last and (end is None or end < start)):
            return False
    return True
