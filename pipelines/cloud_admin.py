"""The Google Cloud admin clients `setup` and `check` use, and IAM policies as plain dicts.

Official client libraries over REST (works wherever HTTPS does): Service Usage, Resource
Manager (v3), Artifact Registry, Cloud Storage, BigQuery. IAM (service accounts, their
policies, roles, Workload Identity pools) goes to its REST API through google-auth's
AuthorizedSession: google-cloud-iam's iam_admin_v1 client has a gRPC transport only, and
no client covers the pools.
`Settings.google_api_endpoint` points all of them at one host (the tests' stand-in).

Every policy, whatever API holds it, is handled as `{"version", "bindings": [{"role",
"members", "condition"?}], "etag"}`; a BigQuery dataset's access list is read and written
as such a policy too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from components.errors import ChurnError
from components.settings import Settings
from pipelines import access
from pipelines.vertex import CLOUD_PLATFORM

HOSTS = {
    "serviceusage": "serviceusage.googleapis.com",
    "iam": "iam.googleapis.com",
    "cloudresourcemanager": "cloudresourcemanager.googleapis.com",
    "artifactregistry": "artifactregistry.googleapis.com",
    "storage": "storage.googleapis.com",
    "bigquery": "bigquery.googleapis.com",
}

# BigQuery answers dataset access with its legacy names for these three roles.
_LEGACY_DATASET_ROLES = {
    "OWNER": "roles/bigquery.dataOwner",
    "WRITER": "roles/bigquery.dataEditor",
    "READER": "roles/bigquery.dataViewer",
}
_ENTITY_MEMBERS = {"userByEmail": None, "groupByEmail": "group", "iamMember": ""}


@contextmanager
def credentials_needed() -> Iterator[None]:
    """No Google credentials on this machine becomes one line saying how to sign in."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except DefaultCredentialsError:
        raise ChurnError(
            "no Google Cloud credentials found: run `gcloud auth application-default login` "
            "(or set GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None


class AdminClients:
    """One client per API, made on first use, for `settings`'s project."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.google_api_endpoint

    def url(self, api: str, path: str) -> str:
        """The REST URL of `path` on `api` (a key of HOSTS), as a dry run prints it."""
        base = self.endpoint or f"https://{HOSTS[api]}"
        return f"{base.rstrip('/')}/{path.lstrip('/')}"

    def _options(self) -> dict[str, str] | None:
        return {"api_endpoint": self.endpoint} if self.endpoint else None

    @cached_property
    def service_usage(self) -> Any:
        from google.cloud import service_usage_v1

        return service_usage_v1.ServiceUsageClient(transport="rest", client_options=self._options())

    def iam(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One IAM REST call (`path` after https://iam.googleapis.com/); a refusal raises the
        google.api_core exception a client library would."""
        from google.api_core import exceptions

        response = self.session.request(method, self.url("iam", path), json=body, timeout=60)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        return response.json()

    @cached_property
    def projects(self) -> Any:
        from google.cloud import resourcemanager_v3

        return resourcemanager_v3.ProjectsClient(transport="rest", client_options=self._options())

    @cached_property
    def artifact_registry(self) -> Any:
        from google.cloud import artifactregistry_v1

        return artifactregistry_v1.ArtifactRegistryClient(
            transport="rest", client_options=self._options()
        )

    @cached_property
    def storage(self) -> Any:
        from google.cloud import storage

        return storage.Client(project=self.settings.project, client_options=self._options())

    @cached_property
    def bigquery(self) -> Any:
        from google.cloud import bigquery

        return bigquery.Client(project=self.settings.project, client_options=self._options())

    @cached_property
    def session(self) -> Any:
        """An authorized HTTP session, for the APIs without a client library."""
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM])
        return AuthorizedSession(credentials)

    @cached_property
    def project_number(self) -> str:
        project = self.projects.get_project(name=f"projects/{self.settings.project}")
        return project.name.removeprefix("projects/")


# --- policies as dicts ------------------------------------------------------------------


def policy_from_proto(policy: Any) -> dict[str, Any]:
    """A google.iam.v1 Policy (protobuf) as a dict."""
    import base64

    bindings = []
    for binding in policy.bindings:
        entry: dict[str, Any] = {"role": binding.role, "members": list(binding.members)}
        if binding.condition.expression:
            entry["condition"] = {
                "title": binding.condition.title,
                "expression": binding.condition.expression,
            }
        bindings.append(entry)
    return {
        "version": policy.version,
        "bindings": bindings,
        "etag": base64.b64encode(policy.etag).decode(),
    }


def policy_to_proto(policy: dict[str, Any]) -> Any:
    import base64

    from google.iam.v1 import policy_pb2
    from google.type import expr_pb2

    proto = policy_pb2.Policy(version=policy["version"], etag=base64.b64decode(policy["etag"]))
    for binding in policy["bindings"]:
        condition = binding.get("condition")
        proto.bindings.append(
            policy_pb2.Binding(
                role=binding["role"],
                members=binding["members"],
                condition=expr_pb2.Expr(**condition) if condition else None,
            )
        )
    return proto


def dataset_policy(dataset: Any) -> dict[str, Any]:
    """A BigQuery dataset's access entries as a policy (legacy role names mapped back)."""
    bindings: dict[str, list[str]] = {}
    for entry in dataset.access_entries:
        role = _LEGACY_DATASET_ROLES.get(entry.role, entry.role)
        if entry.entity_type == "userByEmail":
            kind = "serviceAccount" if entry.entity_id.endswith(".gserviceaccount.com") else "user"
            member = f"{kind}:{entry.entity_id}"
        elif entry.entity_type == "groupByEmail":
            member = f"group:{entry.entity_id}"
        elif entry.entity_type == "iamMember":
            member = entry.entity_id
        else:  # special groups, views, routines: no member setup grants or check reads
            continue
        bindings.setdefault(role, []).append(member)
    return {
        "version": 1,
        "bindings": [{"role": role, "members": members} for role, members in bindings.items()],
        "etag": dataset.etag or "",
    }


def dataset_access_entry(role: str, member: str) -> Any:
    from google.cloud import bigquery

    kind, _, who = member.partition(":")
    entity = {"serviceAccount": "userByEmail", "user": "userByEmail", "group": "groupByEmail"}
    return bigquery.AccessEntry(role=role, entity_type=entity[kind], entity_id=who)


def with_grants(
    policy: dict[str, Any], grants: list[tuple[str, str, str]]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """`policy` with every (role, member, condition expression) of `grants` added, keeping
    every binding it had; and the grants that were missing."""
    bindings = [dict(b, members=list(b["members"])) for b in policy["bindings"]]
    added = []
    for role, member, condition in grants:
        binding = next(
            (
                b
                for b in bindings
                if b["role"] == role and b.get("condition", {}).get("expression", "") == condition
            ),
            None,
        )
        if binding is None:
            binding = {"role": role, "members": []}
            if condition:
                binding["condition"] = {"title": "churn-pipelines", "expression": condition}
            bindings.append(binding)
        if member not in binding["members"]:
            binding["members"].append(member)
            added.append((role, member, condition))
    version = 3 if any("condition" in b for b in bindings) else policy.get("version", 1)
    return {**policy, "version": version, "bindings": bindings}, added


_STARTS_WITH = re.compile(r'resource\.name\.startsWith\("([^"]*)"\)')


def condition_holds(condition: dict[str, Any] | None, resource: str) -> bool | None:
    """Whether a binding's condition holds for `resource`: True without one; None for an
    expression this project does not evaluate (only resource.name.startsWith)."""
    if not condition:
        return True
    match = _STARTS_WITH.fullmatch(condition.get("expression", "").strip())
    if not match:
        return None
    return resource.startswith(match[1])


def read_policy(clients: AdminClients, settings: Settings, key: str) -> dict[str, Any]:
    """The allow policy of the resource `key` names (pipelines/access.py), as a dict; a
    conditional binding is read whole (policy version 3)."""
    resource = access.resource_name(key, settings)
    if key == "project":
        return policy_from_proto(
            clients.projects.get_iam_policy(
                request={"resource": resource, "options": {"requested_policy_version": 3}}
            )
        )
    if key == "bucket":
        bucket = clients.storage.bucket(access.bucket_name(settings))
        policy = bucket.get_iam_policy(requested_policy_version=3).to_api_repr()
        return {
            "version": policy.get("version", 1),
            "bindings": [
                {**b, "members": sorted(b["members"])} for b in policy.get("bindings", [])
            ],
            "etag": policy.get("etag", ""),
        }
    if key in access.DATASET_KEYS:
        project, dataset_id = access.datasets(settings)[key]
        dataset = clients.bigquery.get_dataset(f"{project}.{dataset_id}")
        # The dataset as read goes along: writing it back sends the etag it was read with.
        return dataset_policy(dataset) | {"dataset": dataset}
    if key.startswith("account:"):
        # IAM takes the version as a query parameter here, and no body.
        query = "options.requestedPolicyVersion=3"
        policy = clients.iam("POST", f"v1/{resource}:getIamPolicy?{query}")
        return {"version": 1, "bindings": [], "etag": ""} | policy
    if key.startswith("repository:"):
        return policy_from_proto(
            clients.artifact_registry.get_iam_policy(
                request={"resource": resource, "options": {"requested_policy_version": 3}}
            )
        )
    raise ValueError(f"no policy of its own: {key!r}")


def write_policy(clients: AdminClients, settings: Settings, key: str, policy: dict[str, Any]):
    """Write `policy` (read by read_policy, then changed) back with the etag it was read
    with: a change made in between fails (409/412) instead of being overwritten."""
    resource = access.resource_name(key, settings)
    if key == "project":
        clients.projects.set_iam_policy(
            request={"resource": resource, "policy": policy_to_proto(policy)}
        )
    elif key == "bucket":
        from google.api_core.iam import Policy

        bucket = clients.storage.bucket(access.bucket_name(settings))
        bucket.set_iam_policy(Policy.from_api_repr(policy))
    elif key in access.DATASET_KEYS:
        dataset = policy["dataset"]
        entries = list(dataset.access_entries)
        have = {(b["role"], m) for b in dataset_policy(dataset)["bindings"] for m in b["members"]}
        for binding in policy["bindings"]:
            for member in binding["members"]:
                if (binding["role"], member) not in have:
                    entries.append(dataset_access_entry(binding["role"], member))
        dataset.access_entries = entries
        # update_dataset sends the etag read as If-Match: a change made since fails (412).
        clients.bigquery.update_dataset(dataset, ["access_entries"])
    elif key.startswith("account:"):
        clients.iam("POST", f"v1/{resource}:setIamPolicy", {"policy": policy})
    else:
        clients.artifact_registry.set_iam_policy(
            request={"resource": resource, "policy": policy_to_proto(policy)}
        )


def policy_request(clients: AdminClients, settings: Settings, key: str) -> tuple[str, str]:
    """(method, URL) of the request that writes the policy, as a dry run prints it."""
    resource = access.resource_name(key, settings)
    if key == "project":
        return "POST", clients.url("cloudresourcemanager", f"v3/{resource}:setIamPolicy")
    if key == "bucket":
        return "PUT", clients.url("storage", f"storage/v1/b/{access.bucket_name(settings)}/iam")
    if key in access.DATASET_KEYS:
        project, dataset = access.datasets(settings)[key]
        return "PATCH", clients.url(
            "bigquery", f"bigquery/v2/projects/{project}/datasets/{dataset}"
        )
    if key.startswith("account:"):
        return "POST", clients.url("iam", f"v1/{resource}:setIamPolicy")
    return "POST", clients.url("artifactregistry", f"v1/{resource}:setIamPolicy")
