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
from functools import cached_property
from typing import Any

from components.settings import Settings

SCOPE = "https://www.googleapis.com/auth/cloud-platform"

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

        credentials, _project = google.auth.default(scopes=[SCOPE])
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
