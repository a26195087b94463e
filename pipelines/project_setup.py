"""`submit.py setup`: everything a Google Cloud project needs, created idempotently.

APIs; the three service accounts; the bucket and the BigQuery dataset in the region; both
Artifact Registry repositories; optionally Workload Identity Federation for one GitHub
repository; every grant of pipelines/access.py (read-modify-write of each IAM policy with
its etag, never dropping a binding that is there); optionally generated customers in the
source table. Each item reports what it did ("created", "granted …") or "exists", so a
second run changes nothing and says so. A dry run prints what each item sends, one JSON
line a request, without credentials or network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions

from components.errors import ChurnError, google_reason
from components.settings import Settings
from pipelines import access
from pipelines.cloud_admin import (
    AdminClients,
    credentials_needed,
    dataset_access_entry,
    policy_request,
    read_policy,
    with_grants,
    write_policy,
)
from pipelines.vertex import ApiRequest

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class SetupError(ChurnError):
    """A set-up request Google refused; the message names the item and Google's words."""


@dataclass
class Item:
    """One thing setup makes sure of: `requests` is what making it sends (a dry run prints
    them); `ensure` makes it so and says what it did, or "exists"."""

    what: str
    requests: list[ApiRequest]
    ensure: Callable[[], str]


@dataclass(frozen=True)
class Options:
    """What setup makes beyond what every project needs (the viewer group is a setting)."""

    github_repository: str | None = None
    sample_data: bool = False


def plan(settings: Settings, options: Options, clients: AdminClients) -> list[Item]:
    """Every item, in the order they must be made (APIs first, grants once the resources
    they name exist)."""
    if not settings.project:
        raise ChurnError("no Google Cloud project set: pass --project or set CHURN_PROJECT")
    return [
        _apis(settings, clients),
        *(_account(settings, clients, principal) for principal in ("pipelines", "scheduler", "ci")),
        _bucket(settings, clients),
        *(
            _dataset(settings, clients, project, dataset)
            for project, dataset in dict.fromkeys(access.datasets(settings).values())
        ),
        *(
            _repository(settings, clients, repository, kind)
            for repository, kind in (
                (access.DOCKER_REPOSITORY, "DOCKER"),
                (access.TEMPLATE_REPOSITORY, "KFP"),
            )
        ),
        *(
            _workload_identity(settings, clients, options.github_repository)
            if options.github_repository
            else []
        ),
        *_policies(settings, clients, options),
        *([_sample_data(settings)] if options.sample_data else []),
    ]


def run(
    settings: Settings, options: Options, *, dry_run: bool, report: Callable[[str, str], None]
) -> list[tuple[str, str]]:
    """Make every item (or, with `dry_run`, print its requests); `report(what, outcome)`
    is called as each is done. Returns (what, outcome) of each."""
    clients = AdminClients(settings)
    outcomes = []
    for item in plan(settings, options, clients):
        if dry_run:
            for request in item.requests:
                print(request.line())
            continue
        try:
            with credentials_needed():
                outcome = item.ensure()
        except exceptions.GoogleAPICallError as exc:
            raise SetupError(f"{item.what}: {google_reason(exc)}") from None
        report(item.what, outcome)
        outcomes.append((item.what, outcome))
    return outcomes


# --- items ------------------------------------------------------------------------------


def _apis(settings: Settings, clients: AdminClients) -> Item:
    parent = f"projects/{settings.project}"

    def ensure() -> str:
        names = [f"{parent}/services/{api}" for api in access.APIS]
        found = clients.service_usage.batch_get_services(request={"parent": parent, "names": names})
        missing = [s.name.rsplit("/", 1)[-1] for s in found.services if s.state.name != "ENABLED"]
        if not missing:
            return "exists"
        clients.service_usage.batch_enable_services(
            request={"parent": parent, "service_ids": missing}
        ).result(timeout=600)
        return f"enabled {', '.join(missing)}"

    body = {"serviceIds": list(access.APIS)}
    url = clients.url("serviceusage", f"v1/{parent}/services:batchEnable")
    return Item(f"APIs ({len(access.APIS)})", [ApiRequest("POST", url, body)], ensure)


def _account(settings: Settings, clients: AdminClients, principal: str) -> Item:
    email = access.account_email(principal, settings)
    account_id = email.split("@")[0]
    name = f"projects/{settings.project}/serviceAccounts/{email}"
    display = {
        "pipelines": "churn-pipelines: the pipelines' steps run as this account",
        "scheduler": "churn-scheduler: Cloud Scheduler starts runs as this account",
        "ci": "churn-ci: GitHub Actions pushes images and templates as this account",
    }[principal]
    body = {
        "accountId": account_id,
        "serviceAccount": {"displayName": account_id, "description": display},
    }

    def ensure() -> str:
        try:
            clients.iam("GET", f"v1/{name}")
            return "exists"
        except exceptions.NotFound:
            pass
        if not email.endswith(f"@{settings.project}.iam.gserviceaccount.com"):
            raise SetupError(
                f"service account {email} is not in project {settings.project}: setup makes "
                "accounts in the project only; make it there or unset the setting"
            )
        clients.iam("POST", f"v1/projects/{settings.project}/serviceAccounts", body)
        return "created"

    url = clients.url("iam", f"v1/projects/{settings.project}/serviceAccounts")
    return Item(f"service account {email}", [ApiRequest("POST", url, body)], ensure)


def _bucket(settings: Settings, clients: AdminClients) -> Item:
    name = access.bucket_name(settings)
    body = {
        "name": name,
        "location": settings.region,
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}},
    }

    def ensure() -> str:
        try:
            bucket = clients.storage.get_bucket(name)
            return f"exists (in {bucket.location})"
        except exceptions.NotFound:
            pass
        bucket = clients.storage.bucket(name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        clients.storage.create_bucket(bucket, location=settings.region)
        return f"created in {settings.region}"

    url = clients.url("storage", f"storage/v1/b?project={settings.project}")
    return Item(f"bucket gs://{name}", [ApiRequest("POST", url, body)], ensure)


def _dataset(settings: Settings, clients: AdminClients, project: str, dataset: str) -> Item:
    location = settings.bigquery_location

    def ensure() -> str:
        from google.cloud import bigquery

        try:
            found = clients.bigquery.get_dataset(f"{project}.{dataset}")
            if found.location.lower() != location.lower():
                # A dataset cannot move; check says what to do instead.
                return f"exists, in {found.location}, not {location}: see `check`"
            return f"exists (in {found.location})"
        except exceptions.NotFound:
            pass
        made = bigquery.Dataset(f"{project}.{dataset}")
        made.location = location
        clients.bigquery.create_dataset(made)
        return f"created in {location}"

    body = {"datasetReference": {"projectId": project, "datasetId": dataset}, "location": location}
    url = clients.url("bigquery", f"bigquery/v2/projects/{project}/datasets")
    return Item(f"BigQuery dataset {project}.{dataset}", [ApiRequest("POST", url, body)], ensure)


def _repository(settings: Settings, clients: AdminClients, repository: str, kind: str) -> Item:
    parent = f"projects/{settings.project}/locations/{settings.region}"
    description = {
        "DOCKER": "churn-pipelines component and serving images",
        "KFP": "churn-pipelines pipeline templates",
    }[kind]

    def ensure() -> str:
        try:
            clients.artifact_registry.get_repository(name=f"{parent}/repositories/{repository}")
            return "exists"
        except exceptions.NotFound:
            pass
        clients.artifact_registry.create_repository(
            request={
                "parent": parent,
                "repository_id": repository,
                "repository": {"format_": kind, "description": description},
            }
        ).result(timeout=300)
        return "created"

    url = clients.url("artifactregistry", f"v1/{parent}/repositories?repositoryId={repository}")
    body = {"format": kind, "description": description}
    return Item(
        f"Artifact Registry repository {repository} ({kind.lower()}, {settings.region})",
        [ApiRequest("POST", url, body)],
        ensure,
    )


def _workload_identity(settings: Settings, clients: AdminClients, repository: str) -> list[Item]:
    """A pool and an OIDC provider for GitHub Actions that only `repository`'s workflows
    can use (its attribute condition); the grant to act as churn-ci is in the policies."""
    if repository.count("/") != 1 or not all(repository.split("/")):
        raise ChurnError(f"--github-repository must be ORG/REPO, got {repository!r}")
    pools = f"v1/projects/{settings.project}/locations/global/workloadIdentityPools"
    pool_url = clients.url("iam", f"{pools}?workloadIdentityPoolId={access.WIF_POOL}")
    pool_body = {"displayName": "GitHub Actions", "description": "churn-pipelines CI"}
    provider_url = clients.url(
        "iam",
        f"{pools}/{access.WIF_POOL}/providers?workloadIdentityPoolProviderId={access.WIF_POOL}",
    )
    provider_body = {
        "displayName": "GitHub Actions",
        "attributeMapping": {
            "google.subject": "assertion.sub",
            "attribute.repository": "assertion.repository",
            "attribute.ref": "assertion.ref",
        },
        "attributeCondition": f"assertion.repository == '{repository}'",
        "oidc": {"issuerUri": GITHUB_ISSUER},
    }

    def ensure(get_path: str, create_path: str, body: dict[str, Any]) -> Callable[[], str]:
        def make() -> str:
            try:
                clients.iam("GET", get_path)
                return "exists"
            except exceptions.NotFound:
                pass
            _wait(clients, clients.iam("POST", create_path, body))
            return "created"

        return make

    pool_get = f"{pools}/{access.WIF_POOL}"
    provider_get = f"{pools}/{access.WIF_POOL}/providers/{access.WIF_POOL}"
    pool_create = f"{pools}?workloadIdentityPoolId={access.WIF_POOL}"
    provider_create = (
        f"{pools}/{access.WIF_POOL}/providers?workloadIdentityPoolProviderId={access.WIF_POOL}"
    )
    return [
        Item(
            f"Workload Identity pool {access.WIF_POOL}",
            [ApiRequest("POST", pool_url, pool_body)],
            ensure(pool_get, pool_create, pool_body),
        ),
        Item(
            f"Workload Identity provider {access.WIF_POOL} (only {repository})",
            [ApiRequest("POST", provider_url, provider_body)],
            ensure(provider_get, provider_create, provider_body),
        ),
    ]


def _wait(clients: AdminClients, operation: dict[str, Any], seconds: float = 120.0) -> None:
    """Wait for an IAM long-running operation (a new pool or provider) to finish."""
    import time

    deadline = time.monotonic() + seconds
    while not operation.get("done"):
        if time.monotonic() > deadline:
            raise SetupError(f"{operation.get('name')} did not finish in {seconds:.0f}s")
        time.sleep(2)
        operation = clients.iam("GET", f"v1/{operation['name']}")
    if "error" in operation:
        raise SetupError(f"{operation['name']}: {operation['error'].get('message')}")


def _policies(settings: Settings, clients: AdminClients, options: Options) -> Iterator[Item]:
    """One item per resource whose policy gets grants: read, add what is missing, write
    back with the etag read (a concurrent change fails rather than being overwritten)."""
    # Keyed by resource name: the customer and predictions tables share a dataset by default.
    keys: dict[str, str] = {}
    by_resource: dict[str, list[tuple[str, str, str]]] = {}
    for grant in access.GRANTS:
        member = access.principal_member(
            grant.principal,
            settings,
            github_repository=options.github_repository or "",
        )
        if member is None:
            continue
        condition = access.condition_expression(grant, settings)
        resource = access.resource_name(grant.resource, settings)
        keys.setdefault(resource, grant.resource)
        by_resource.setdefault(resource, []).append((grant.role, member, condition))
    for resource, grants in by_resource.items():
        yield _policy(settings, clients, keys[resource], grants)


def _resolve(member: str, clients: AdminClients) -> str:
    """A principalSet names its pool by project number: a dry run prints the placeholder,
    a real run asks Resource Manager for the number when it writes the grant."""
    if f"projects/{access.PROJECT_NUMBER}/" in member:
        return member.replace(access.PROJECT_NUMBER, clients.project_number)
    return member


def _policy(
    settings: Settings, clients: AdminClients, key: str, grants: list[tuple[str, str, str]]
) -> Item:
    resource = access.resource_name(key, settings)
    method, url = policy_request(clients, settings, key)

    def ensure() -> str:
        wanted = [(role, _resolve(member, clients), cond) for role, member, cond in grants]
        policy, added = with_grants(read_policy(clients, settings, key), wanted)
        if not added:
            return "exists"
        write_policy(clients, settings, key, policy)
        return f"granted {len(added)} role binding(s)"

    # A dry run cannot read the policy: it shows the bindings the write adds (a dataset's
    # as the access entries BigQuery takes).
    dry, _added = with_grants({"version": 1, "bindings": [], "etag": ""}, grants)
    if key in access.DATASET_KEYS:
        body: Any = {
            "access": [
                dataset_access_entry(role, member).to_api_repr() for role, member, _c in grants
            ]
        }
    else:
        body = {"policy": dry} if method == "POST" else dry
    return Item(f"IAM policy of {resource}", [ApiRequest(method, url, body)], ensure)


def _sample_data(settings: Settings) -> Item:
    """Generated customers in the source table, when it does not exist: through the
    warehouse's one BigQuery write (a load job)."""
    from components.warehouse import parse_uri

    uri = settings.source_uri
    table = parse_uri(uri).bigquery_table
    project = table.split(".")[0]

    def ensure() -> str:
        from components.data.sample_data import generate_customers
        from components.warehouse import table_exists, write_table

        if table_exists(uri):
            return "exists (left as it is)"
        write_table(generate_customers(settings.sample_rows, seed=settings.seed), uri)
        return f"loaded {settings.sample_rows:,} generated customers"

    body = {
        "configuration": {
            "load": {
                "destinationTable": dict(
                    zip(("projectId", "datasetId", "tableId"), table.split("."), strict=True)
                ),
                "sourceFormat": "PARQUET",
                "writeDisposition": "WRITE_TRUNCATE",
            }
        }
    }
    url = (
        "https://bigquery.googleapis.com/upload/bigquery/v2/projects/"
        f"{project}/jobs?uploadType=resumable"
    )
    return Item(
        f"source table {uri} ({settings.sample_rows:,} generated customers if it does not exist)",
        [ApiRequest("POST", url, body)],
        ensure,
    )
