"""`submit.py check`: is this Google Cloud project ready for the pipelines? Read-only.

Useful to whoever set the project up, by `setup` or by hand. `CHECKS` is the one list of
checks, in order; each returns findings: one line each, and for a failure the command that
fixes it. Permissions are judged as IAM judges them: each principal's bindings on the
resource and on the project (conditions evaluated where they are
`resource.name.startsWith`), roles expanded to permissions by the IAM API's roles.get, held
against what each step needs (pipelines/access.py). No table row is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from google.api_core import exceptions

from components.contract import TELCO_CHURN, column_key
from components.errors import google_reason
from components.settings import Settings
from pipelines import access
from pipelines.cloud_admin import (
    AdminClients,
    condition_holds,
    credentials_needed,
    read_policy,
)


@dataclass
class Finding:
    """One line of the check: what was checked, whether it is right, and the fix."""

    check: str
    ok: bool
    message: str
    fix: str = ""
    warning: bool = False
    """Right for now, but something will need it (no champion before the first training)."""

    def line(self) -> str:
        mark = ("WARN" if self.warning else "ok  ") if self.ok else "FAIL"
        return f"{mark} {self.check}: {self.message}" + (f"; fix: {self.fix}" if self.fix else "")


@dataclass
class Context:
    """What the checks share: settings, clients, and what was read once."""

    settings: Settings
    clients: AdminClients
    policies: dict[str, dict[str, Any] | Exception] = field(default_factory=dict)
    roles: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def setup_command(self) -> str:
        s = self.settings
        command = f"python submit.py setup --project {s.project} --region {s.region}"
        if s.submitter_group:
            command += f" --submitter-group {s.submitter_group}"
        if s.viewer_group:
            command += f" --viewer-group {s.viewer_group}"
        return command

    def policy(self, key: str) -> dict[str, Any]:
        if key not in self.policies:
            try:
                self.policies[key] = read_policy(self.clients, self.settings, key)
            except exceptions.GoogleAPICallError as exc:
                self.policies[key] = exc
        found = self.policies[key]
        if isinstance(found, Exception):
            raise found
        return found

    def permissions_of(self, role: str) -> frozenset[str]:
        if role not in self.roles:
            # Predefined roles (roles/…) and custom ones (projects/P/roles/…) alike.
            found = self.clients.iam("GET", f"v1/{role}")
            self.roles[role] = frozenset(found.get("includedPermissions", ()))
        return self.roles[role]


Check = Callable[[Context], list[Finding]]


def _fails(check: str, what: str, exc: exceptions.GoogleAPICallError, fix: str) -> Finding:
    return Finding(check, False, f"{what}: {google_reason(exc)}", fix)


def check_apis(ctx: Context) -> list[Finding]:
    parent = f"projects/{ctx.settings.project}"
    names = [f"{parent}/services/{api}" for api in access.APIS]
    try:
        found = ctx.clients.service_usage.batch_get_services(
            request={"parent": parent, "names": names}
        )
    except exceptions.GoogleAPICallError as exc:
        return [_fails("apis", "cannot read the enabled APIs", exc, ctx.setup_command)]
    disabled = [s.name.rsplit("/", 1)[-1] for s in found.services if s.state.name != "ENABLED"]
    if disabled:
        return [Finding("apis", False, f"not enabled: {', '.join(disabled)}", ctx.setup_command)]
    return [Finding("apis", True, f"{len(access.APIS)} enabled")]


def check_accounts(ctx: Context) -> list[Finding]:
    findings = []
    for principal in ("pipelines", "scheduler", "ci"):
        email = access.account_email(principal, ctx.settings)
        name = f"projects/{ctx.settings.project}/serviceAccounts/{email}"
        try:
            ctx.clients.iam("GET", f"v1/{name}")
            findings.append(Finding("accounts", True, f"{email} exists"))
        except exceptions.NotFound:
            findings.append(
                Finding("accounts", False, f"{email} does not exist", ctx.setup_command)
            )
        except exceptions.GoogleAPICallError as exc:
            findings.append(_fails("accounts", f"cannot read {email}", exc, ctx.setup_command))
    return findings


def check_permissions(ctx: Context) -> list[Finding]:
    """Each principal's effective permissions on each resource hold what its steps need:
    one line per account and step, or one per resource where something is missing."""
    steps: dict[tuple[str, str], list[access.Need]] = {}
    for need in access.NEEDS:
        steps.setdefault((need.principal, need.what), []).append(need)
    findings = []
    for (principal, what), needs in steps.items():
        # No submitter or viewer group set: nothing to check. GitHub's principalSet names a
        # repository check is not told about; the workflow's first sign-in tests it.
        member = access.principal_member(principal, ctx.settings)
        if member is None or principal == "github":
            continue
        who = member.partition(":")[2]
        failed = []
        for need in needs:
            resource = access.resource_name(need.resource, ctx.settings)
            try:
                held = _effective_permissions(ctx, member, need.resource, resource)
            except exceptions.GoogleAPICallError as exc:
                reading = f"cannot read the policy of {resource}"
                failed.append(_fails("permissions", reading, exc, ctx.setup_command))
                continue
            missing = [p for p in need.permissions if p not in held]
            if missing:
                message = f"{who} lacks {', '.join(missing)} on {resource} ({what})"
                failed.append(Finding("permissions", False, message, ctx.setup_command))
        findings += failed or [Finding("permissions", True, f"{who}: {what}")]
    return findings


def _effective_permissions(ctx: Context, member: str, key: str, resource: str) -> set[str]:
    """The permissions `member` holds on `resource`: bindings on the resource itself (when
    it has a policy of its own) and on the project, which every resource inherits."""
    keys = ["project"] if key in ("project", "prediction_datasets") else [key, "project"]
    held: set[str] = set()
    for policy_key in keys:
        for binding in ctx.policy(policy_key)["bindings"]:
            if member in binding["members"] and condition_holds(binding.get("condition"), resource):
                held |= ctx.permissions_of(binding["role"])
    return held


def check_locations(ctx: Context) -> list[Finding]:
    """Bucket, dataset and BigQuery jobs where the region is: Vertex batch prediction needs
    its BigQuery input and output in the model's region."""
    s = ctx.settings
    findings = []
    bucket = access.bucket_name(s)
    try:
        location = ctx.clients.storage.get_bucket(bucket).location.lower()
        if location in (s.region.lower(), _multi_region(s.region)):
            findings.append(Finding("locations", True, f"bucket gs://{bucket} in {location}"))
        else:
            findings.append(
                Finding(
                    "locations",
                    False,
                    f"bucket gs://{bucket} is in {location}, region is {s.region}: runs write "
                    "their artifacts across regions",
                    f"set bucket to a new bucket's gs:// URI in churn.toml, then "
                    f"{ctx.setup_command}",
                )
            )
    except exceptions.NotFound:
        findings.append(
            Finding("locations", False, f"bucket gs://{bucket} does not exist", ctx.setup_command)
        )
    except exceptions.GoogleAPICallError as exc:
        findings.append(_fails("locations", f"cannot read gs://{bucket}", exc, ctx.setup_command))
    for project, dataset in dict.fromkeys(access.datasets(s).values()):
        findings.append(_dataset_location(ctx, project, dataset))
    return findings


def _dataset_location(ctx: Context, project: str, dataset: str) -> Finding:
    s = ctx.settings
    try:
        location = ctx.clients.bigquery.get_dataset(f"{project}.{dataset}").location
    except exceptions.NotFound:
        return Finding(
            "locations",
            False,
            f"BigQuery dataset {project}.{dataset} does not exist",
            ctx.setup_command,
        )
    except exceptions.GoogleAPICallError as exc:
        return _fails(
            "locations", f"cannot read dataset {project}.{dataset}", exc, ctx.setup_command
        )
    if location.lower() != s.region.lower():
        other = f"{dataset}_{s.region.replace('-', '_')}"
        return Finding(
            "locations",
            False,
            f"BigQuery dataset {project}.{dataset} is in {location}, region is {s.region}: "
            "Vertex batch prediction needs its input and output in the model's region "
            "(a dataset cannot move)",
            f'set source = "bq://{project}.{other}.customers" and predictions = '
            f'"bq://{project}.{other}.churn_predictions" in churn.toml, then '
            f"{ctx.setup_command} (it makes the dataset there), and load the customers "
            "into it (or add --sample-data)",
        )
    if (s.bigquery_location or "").lower() != location.lower():
        return Finding(
            "locations",
            False,
            f"bigquery_location is {s.bigquery_location} but dataset {project}.{dataset} is "
            f"in {location}",
            f"unset bigquery_location (it follows the region) or set it to {location}",
        )
    return Finding("locations", True, f"BigQuery dataset {project}.{dataset} in {location}")


def _multi_region(region: str) -> str:
    return {"us": "us", "europe": "eu", "asia": "asia"}.get(region.split("-")[0], "")


def check_repositories(ctx: Context) -> list[Finding]:
    s = ctx.settings
    findings = []
    for repository, kind in (
        (access.DOCKER_REPOSITORY, "DOCKER"),
        (access.TEMPLATE_REPOSITORY, "KFP"),
    ):
        name = f"projects/{s.project}/locations/{s.region}/repositories/{repository}"
        try:
            found = ctx.clients.artifact_registry.get_repository(name=name)
        except exceptions.NotFound:
            findings.append(
                Finding("repositories", False, f"{name} does not exist", ctx.setup_command)
            )
            continue
        except exceptions.GoogleAPICallError as exc:
            findings.append(_fails("repositories", f"cannot read {name}", exc, ctx.setup_command))
            continue
        if found.format_.name != kind:
            findings.append(
                Finding(
                    "repositories",
                    False,
                    f"{name} holds {found.format_.name}, not {kind}",
                    f"delete it, then {ctx.setup_command}",
                )
            )
        else:
            findings.append(Finding("repositories", True, f"{repository} ({kind.lower()})"))
    return findings


_STRING = {"STRING"}
_NUMBER = {"INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC"}


def check_source_table(ctx: Context) -> list[Finding]:
    """The source table exists and its columns fit the data contract (metadata only)."""
    s = ctx.settings
    uri = s.source_uri
    project, dataset, table = access.source_table(s)
    load = (
        f"load your customers into {project}.{dataset}.{table}, or generated ones: "
        f"{ctx.setup_command} --sample-data"
    )
    try:
        found = ctx.clients.bigquery.get_table(f"{project}.{dataset}.{table}")
    except exceptions.NotFound:
        return [Finding("source table", False, f"{uri} does not exist", load)]
    except exceptions.GoogleAPICallError as exc:
        return [_fails("source table", f"cannot read {uri}", exc, ctx.setup_command)]
    columns = {column_key(field.name): field.field_type.upper() for field in found.schema}
    problems = []
    for column in TELCO_CHURN.columns:
        kind = columns.get(column_key(column.name))
        expected = _NUMBER if column.kind == "numeric" else _STRING
        if kind is None:
            problems.append(f"`{column.name}` missing")
        elif kind not in expected:
            problems.append(f"`{column.name}` is {kind}, expected {' or '.join(sorted(expected))}")
    if problems:
        return [
            Finding(
                "source table",
                False,
                f"{uri} does not fit the data contract: {'; '.join(problems)}",
                "fix the table, or the contract in components/contract.py",
            )
        ]
    return [Finding("source table", True, f"{uri} fits the data contract")]


def check_champion(ctx: Context) -> list[Finding]:
    """Scoring needs a champion in the registry (Vertex AI Model Registry's alias)."""
    from components.registry.vertex import CHAMPION, parse_vertex_uri

    s = ctx.settings
    uri = s.registry_uri
    if not uri.startswith("vertex://"):
        return [Finding("champion", True, f"registry {uri} is local: not checked here")]
    from google.cloud import aiplatform_v1

    parts = parse_vertex_uri(uri)
    model = f"projects/{parts['project']}/locations/{parts['location']}/models/{parts['model']}"
    client = aiplatform_v1.ModelServiceClient(
        transport="rest",
        client_options={"api_endpoint": parts["api_endpoint"] or s.vertex_endpoint},
    )
    train = f"python submit.py train --project {s.project} --region {s.region} --wait"
    try:
        found = client.get_model(name=f"{model}@{CHAMPION}")
    except exceptions.NotFound:
        # A new project has none until its first training run: not a failure of set-up.
        message = f"no champion in {model} yet: scoring refuses to run until one is promoted"
        return [Finding("champion", True, message, train, warning=True)]
    except exceptions.GoogleAPICallError as exc:
        return [_fails("champion", f"cannot read {model}", exc, ctx.setup_command)]
    return [Finding("champion", True, f"{model} version {found.version_id}")]


def check_images(ctx: Context) -> list[Finding]:
    """Both images exist in Artifact Registry (runs refuse to start without them); before the
    first `build` that is a warning, as the champion is before the first training."""
    from pipelines import images

    s = ctx.settings
    build = f"python submit.py build --project {s.project} --region {s.region}"
    client = images.registry_client(s)
    findings = []
    for name, uri in images.configured_images(s).items():
        try:
            pinned = images.resolve_image(uri, client)
        except images.ImageError as exc:
            message = str(exc).removesuffix(f"; {images.BUILD_FIX}")
            findings.append(Finding("images", True, message, build, warning=True))
            continue
        findings.append(Finding("images", True, f"{name}: {pinned}"))
    return findings


def check_schedules(ctx: Context) -> list[Finding]:
    """Each schedule exists (as a Cloud Scheduler job or a Vertex schedule), is enabled,
    starts a template that is published and pinned by its sha256 version, and its last run
    started. Not scheduled yet is a warning; a schedule that cannot start its run fails."""
    from pipelines import schedules, templates, vertex

    s = ctx.settings
    command = f"python submit.py schedule --project {s.project} --region {s.region}"
    findings = []
    for name in schedules.SCHEDULE_NAMES.values():
        try:
            state = schedules.find_schedule(s, name)
        except vertex.VertexError as exc:
            findings.append(Finding("schedules", False, str(exc), ctx.setup_command))
            continue
        if state is None:
            message = f"{name} does not exist: nothing starts its runs"
            findings.append(Finding("schedules", True, message, command, warning=True))
            continue
        where = f"{name} ({state.state.lower()}, {state.cron} {state.time_zone})"
        if "/sha256:" not in state.template_uri:
            findings.append(
                Finding("schedules", False, f"{where} starts {state.template_uri!r}, not a "
                        "template pinned by its sha256 version", command)
            )  # fmt: skip
        elif not templates.template_published(s, state.template_uri):
            findings.append(
                Finding("schedules", False, f"{where} starts {state.template_uri}, which is "
                        "not published", command)
            )  # fmt: skip
        elif state.last_error:
            findings.append(
                Finding("schedules", False, f"{where}: its last run at {state.last_run.split()[0]} "
                        f"did not start: {state.last_error}", ctx.setup_command)
            )  # fmt: skip
        elif state.state not in ("ENABLED", "ACTIVE"):
            resume = f"{command} --resume"
            findings.append(Finding("schedules", True, f"{where} starts no runs", resume,
                                    warning=True))  # fmt: skip
        else:
            last = f"; last run {state.last_run}" if state.last_run else "; has not run yet"
            findings.append(Finding("schedules", True, where + last))
    return findings


CHECKS: list[Check] = [
    check_apis,
    check_accounts,
    check_permissions,
    check_locations,
    check_repositories,
    check_source_table,
    check_images,
    check_champion,
    check_schedules,
]
"""Every check, in the order they print."""


def run_checks(settings: Settings, checks: list[Check] | None = None) -> list[Finding]:
    ctx = Context(settings, AdminClients(settings))
    with credentials_needed():
        return [finding for check in checks or CHECKS for finding in check(ctx)]


def as_json(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(finding) for finding in findings]
