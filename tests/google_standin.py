"""A stand-in for Google Cloud's REST APIs on 127.0.0.1, for wire tests.

No emulator exists for Vertex AI or Cloud Scheduler, so tests point the real client
libraries (and the real CLI) at this server: it records every request, answers the ones a
test has routed, and answers anything else with Google's 404 error shape. Credentials go
through the real service-account flow: `service_account_key` writes a throwaway key whose
token URI is this server's `/token`, so a request that reaches a routed API carries the
bearer token this server issued (and `requests` proves it). The token says who asked (the
key's `client_email`, from the JWT assertion posted to `/token`): `Request.caller`.

`GoogleStandIn.iam` judges callers as Google's IAM does (`Iam.allowed(member, permission,
resource)`, roles expanded to permissions with tests/data/iam_roles.json; its `policies` are
the state a test breaks on purpose, `grant`/`revoke` the way to). Any route can refuse a
caller in Google's words with `refuse(standin, request, api, permission, resource)` (or build
the body with `permission_denied`). `CloudProject` routes the admin APIs `submit.py setup`
and `check` call, and enforces IAM per caller on each.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CLIENT_EMAIL = "tester@standin-project.iam.gserviceaccount.com"
_TOKEN_PREFIX = "standin-token."
ROLES_FILE = Path(__file__).parent / "data" / "iam_roles.json"


def access_token(email: str) -> str:
    """The bearer token the stand-in issues to `email`: it names the caller."""
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(email.encode()).decode()


def _jwt_claims(token: str) -> dict[str, Any] | None:
    try:
        claims = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    except (IndexError, ValueError, TypeError):
        return None


@dataclass
class Request:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def caller(self) -> str | None:
        """The email of the service account whose token this is: one this server issued,
        or the self-signed JWT google-auth sends instead when a client library allows it
        (its issuer); None without either."""
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        if token.startswith(_TOKEN_PREFIX):
            try:
                return base64.urlsafe_b64decode(token.removeprefix(_TOKEN_PREFIX)).decode()
            except ValueError:
                return None
        claims = _jwt_claims(token)
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        return (
            issuer if isinstance(issuer, str) and issuer.endswith(".gserviceaccount.com") else None
        )

    @property
    def member(self) -> str | None:
        """The caller as an IAM member (`serviceAccount:EMAIL`)."""
        return f"serviceAccount:{self.caller}" if self.caller else None

    @property
    def authorized(self) -> bool:
        return self.caller is not None


Handler = Callable[[Request, re.Match[str]], tuple[int, Any]]
"""Answers a routed request: (HTTP status, JSON body, or bytes sent as plain text)."""


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


@dataclass
class GoogleStandIn:
    """A recording HTTP server answering like Google's APIs; use as a context manager."""

    requests: list[Request] = field(default_factory=list)
    iam: Iam = field(default_factory=lambda: Iam())
    _routes: list[_Route] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, path_pattern: str, handler: Handler) -> None:
        """Answer `method` requests whose path fully matches `path_pattern` (a regex) with
        `handler`; later routes win over earlier ones."""
        self._routes.insert(0, _Route(method, re.compile(path_pattern), handler))

    def respond(self, method: str, path_pattern: str, body: Any, status: int = 200) -> None:
        """Answer matching requests with a fixed JSON body."""
        self.route(method, path_pattern, lambda _request, _match: (status, body))

    def requests_to(self, method: str, path_pattern: str) -> list[Request]:
        """The recorded requests of `method` whose path fully matches `path_pattern`."""
        pattern = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    def __enter__(self) -> GoogleStandIn:
        standin = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw=self.rfile.read(length) if length else b"",
                )
                standin.requests.append(request)
                status, body = standin._dispatch(request)
                # Bytes go out as they are: some APIs (Artifact Registry's KFP upload) answer
                # with plain text.
                raw = isinstance(body, bytes)
                payload = body if raw else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if raw else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, *_args: Any) -> None:  # the recording is the log
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # A short poll: shutdown() waits for it, once per test.
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST" and request.path == "/token":
            # google-auth's service-account flow posts a JWT assertion signed with the key;
            # its issuer is the key's client_email. (The signature is not checked.)
            assertion = parse_qs(request.raw.decode()).get("assertion", [""])[0]
            claims = _jwt_claims(assertion) or {}
            if not str(claims.get("iss", "")).endswith(".gserviceaccount.com"):
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
            token = access_token(claims["iss"])
            return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if route.method == request.method and match:
                if not request.authorized:
                    return 401, _error(401, "UNAUTHENTICATED", "no valid bearer token")
                return route.handler(request, match)
        return 404, _error(404, "NOT_FOUND", f"{request.method} {request.path} is not routed")


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "status": status, "message": message}}


Authorize = Callable[[str | None, str, str], bool]
"""(member, permission, resource) -> whether that caller holds it there: `Iam.allowed`, or
`allow_all` for a test about something else. Each API's stand-in takes one."""


def allow_all(_member: str | None, _permission: str, _resource: str) -> bool:
    return True


def account_resource(email: str) -> str:
    """The IAM resource of a service account, in the project its address names (what an
    `iam.serviceAccounts.actAs` check is judged on: grants on the account or its project)."""
    project = email.partition("@")[2].removesuffix(".iam.gserviceaccount.com")
    return f"projects/{project}/serviceAccounts/{email}"


def error(code: int, status: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    """Google's JSON error answer: (HTTP status, body)."""
    return code, {"error": {"code": code, "status": status, "message": message, **extra}}


# --- IAM --------------------------------------------------------------------------------


@functools.cache
def role_permissions() -> dict[str, frozenset[str]]:
    """Each predefined role the stand-in knows, with its includedPermissions."""
    data = json.loads(ROLES_FILE.read_text())
    return {role["name"]: frozenset(role["includedPermissions"]) for role in data["roles"]}


def role_resource(name: str) -> dict[str, Any] | None:
    """A role as IAM's roles.get answers it, or None when the stand-in does not know it."""
    data = json.loads(ROLES_FILE.read_text())
    for role in data["roles"]:
        if role["name"] == name:
            keys = ("name", "title", "description", "includedPermissions", "stage", "etag")
            return {key: role[key] for key in keys}
    return None


_STARTS_WITH = re.compile(r'resource\.name\.startsWith\("([^"]*)"\)')


class PolicyConflict(Exception):
    """setIamPolicy with an etag that is not the policy's current one."""


@dataclass
class Iam:
    """IAM allow policies as Google evaluates them: a member holds a permission on a
    resource when a binding on the resource or an ancestor (the project: buckets, datasets,
    repositories and service accounts inherit its policy) grants a role that includes it,
    to the member or to a group the member is in, and the binding's condition holds.

    Conditions: only `resource.name.startsWith("...")` is evaluated; any other expression
    never matches (stricter than Google, which evaluates all of CEL)."""

    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Resource name -> {"version", "bindings": [{"role", "members", "condition"?}], "etag"}."""
    parents: dict[str, str] = field(default_factory=dict)
    """Resource name -> the project it is in, where its name does not say (buckets)."""
    groups: dict[str, set[str]] = field(default_factory=dict)
    """"group:EMAIL" -> its members ("user:…", "serviceAccount:…")."""

    def policy(self, resource: str) -> dict[str, Any]:
        return self.policies.setdefault(
            resource, {"version": 1, "bindings": [], "etag": "BwAAAA=="}
        )

    def set_policy(self, resource: str, policy: dict[str, Any]) -> dict[str, Any]:
        """Replace `resource`'s policy as setIamPolicy does: refused (PolicyConflict) when
        `policy` carries an etag that is not the current one; the stored etag changes."""
        current = self.policy(resource)
        if policy.get("etag") and policy["etag"] != current["etag"]:
            raise PolicyConflict(resource)
        bindings = [
            {k: v for k, v in b.items() if k in ("role", "members", "condition")}
            for b in policy.get("bindings", [])
            if b.get("members")
        ]
        serial = int.from_bytes(base64.b64decode(current["etag"])[1:], "big") + 1
        etag = base64.b64encode(b"\x07" + serial.to_bytes(5, "big")).decode()
        version = 3 if any("condition" in b for b in bindings) else policy.get("version", 1)
        self.policies[resource] = {"version": version, "bindings": bindings, "etag": etag}
        return self.policies[resource]

    def grant(self, member: str, role: str, resource: str, condition: str = "") -> None:
        """Add a binding (for tests that set up state directly)."""
        policy = self.policy(resource)
        binding: dict[str, Any] = {"role": role, "members": [member]}
        if condition:
            binding["condition"] = {"title": "test", "expression": condition}
        self.set_policy(resource, {**policy, "bindings": [*policy["bindings"], binding]})

    def revoke(self, member: str, role: str | None = None, resource: str | None = None) -> None:
        """Remove `member` from bindings of `role` (any) on `resource` (any): what a test
        breaks on purpose."""
        for name in [resource] if resource else list(self.policies):
            policy = self.policy(name)
            bindings = [
                b | {"members": [m for m in b["members"] if m != member]}
                if role in (None, b["role"])
                else b
                for b in policy["bindings"]
            ]
            self.set_policy(name, {**policy, "bindings": bindings})

    def ancestors(self, resource: str) -> list[str]:
        """`resource`, the resources it is inside (a table's dataset), and its project."""
        chain = [resource]
        parts = resource.split("/")
        while len(parts) > 2:
            parts = parts[:-2]
            chain.append("/".join(parts))
        if resource in self.parents:
            chain.append(self.parents[resource])
        return [name for name in chain if name != "projects/_"]

    def allowed(self, member: str | None, permission: str, resource: str) -> bool:
        """Whether `member` holds `permission` on `resource`."""
        if member is None:
            return False
        members = {member, "allUsers", "allAuthenticatedUsers"}
        members |= {group for group, inside in self.groups.items() if member in inside}
        roles = role_permissions()
        for name in self.ancestors(resource):
            for binding in self.policy(name)["bindings"]:
                if (
                    permission in roles.get(binding["role"], ())
                    and members & set(binding["members"])
                    and _condition_holds(binding.get("condition"), resource)
                ):
                    return True
        return False


def refuse(
    standin: GoogleStandIn, request: Request, api: str, permission: str, resource: str
) -> tuple[int, dict[str, Any]] | None:
    """For any stand-in route: Google's 403 when the caller lacks `permission` on
    `resource` (see `permission_denied` for `api`), None when the call may go on."""
    if standin.iam.allowed(request.member, permission, resource):
        return None
    return permission_denied(api, permission, resource, request.caller)


def _condition_holds(condition: dict[str, Any] | None, resource: str) -> bool:
    if not condition:
        return True
    match = _STARTS_WITH.fullmatch(condition.get("expression", "").strip())
    return bool(match) and resource.startswith(match[1])


def permission_denied(
    api: str, permission: str, resource: str, caller: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The 403 Google's APIs answer a caller who lacks `permission` on `resource`, in each
    API's words: `api` is "bigquery", "storage" or a gRPC-transcoded API's host
    ("iam.googleapis.com", "artifactregistry.googleapis.com", ...)."""
    if api == "bigquery":
        # "Access Denied: Dataset p:d: Permission bigquery.datasets.get denied on dataset
        # p:d (or it may not exist)."; project-level rights read differently.
        parts = resource.split("/")
        if len(parts) == 2:
            what = f"Project {parts[1]}"
            message = (
                f"Access Denied: {what}: User does not have {permission} permission in "
                f"project {parts[1]}."
            )
        else:
            kind = "table" if "/tables/" in resource else "dataset"
            name = f"{parts[1]}:{parts[3]}" + (f".{parts[5]}" if kind == "table" else "")
            message = (
                f"Access Denied: {kind.title()} {name}: Permission {permission} denied on "
                f"{kind} {name} (or it may not exist)."
            )
        errors = [{"message": message, "domain": "global", "reason": "accessDenied"}]
        return error(403, "PERMISSION_DENIED", message, errors=errors)
    if api == "storage":
        message = (
            f"{caller} does not have {permission} access to the Google Cloud Storage "
            f"{'object' if '/o/' in resource else 'bucket'}. Permission '{permission}' "
            "denied on resource (or it may not exist)."
        )
        return 403, {
            "error": {
                "code": 403,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": "forbidden"}],
            }
        }
    message = (
        f"Permission '{permission}' denied on resource '//{api}/{resource}' (or it may not exist)."
    )
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": permission, "resource": resource},
        }
    ]
    return error(403, "PERMISSION_DENIED", message, details=details)


def service_account_key(path: Path, token_uri: str, client_email: str = CLIENT_EMAIL) -> Path:
    """Write a throwaway service-account key file (a fresh RSA key, never committed) whose
    token URI is `token_uri`, so google-auth's real flow gets its tokens there, as
    `client_email`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": client_email.split("@")[1].split(".")[0],
                "private_key_id": "standin",
                "private_key": pem,
                "client_email": client_email,
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


# --- the admin APIs of one project --------------------------------------------------------

_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_LEGACY_DATASET_ROLES = {
    "roles/bigquery.dataOwner": "OWNER",
    "roles/bigquery.dataEditor": "WRITER",
    "roles/bigquery.dataViewer": "READER",
}
_ENTITY_KINDS = {"serviceAccount": "userByEmail", "user": "userByEmail", "group": "groupByEmail"}


@dataclass
class CloudProject:
    """One Google Cloud project behind the admin APIs `setup` and `check` call: Service
    Usage, IAM (service accounts, their policies, roles.get, Workload Identity pools),
    Resource Manager (the project and its policy), Cloud Storage buckets, BigQuery datasets
    and tables (metadata), Artifact Registry repositories. Every call is judged per caller
    by `standin.iam` and refused, in the API's words, as Google refuses it: a disabled API,
    a missing permission, a missing resource, a stale etag, a malformed id.

    `admin` (the stand-in key's account) holds the narrow admin roles a person setting a
    project up needs; everything else starts empty, as in a new project."""

    standin: GoogleStandIn
    project: str = "standin-project"
    number: str = "123456789012"
    admin: str = CLIENT_EMAIL
    services: set[str] = field(default_factory=lambda: {"serviceusage.googleapis.com"})
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    repositories: dict[str, dict[str, Any]] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)

    ADMIN_ROLES = (
        "roles/serviceusage.serviceUsageAdmin",
        "roles/iam.serviceAccountAdmin",
        "roles/resourcemanager.projectIamAdmin",
        "roles/storage.admin",
        "roles/bigquery.dataOwner",
        "roles/bigquery.user",
        "roles/artifactregistry.admin",
        "roles/iam.workloadIdentityPoolAdmin",
        "roles/aiplatform.user",
        "roles/cloudscheduler.admin",
        "roles/cloudbuild.builds.editor",
    )

    def __post_init__(self) -> None:
        for role in self.ADMIN_ROLES:
            self.iam.grant(f"serviceAccount:{self.admin}", role, self.name)
        p = "/v1/projects/(?P<project>[^/:]+)"
        route = self.standin.route
        route("GET", p + r"/services:batchGet", self._services_get)
        route("POST", p + r"/services:batchEnable", self._services_enable)
        route("GET", r"/v1/roles/(?P<role>[^/:]+)", self._role)
        route("GET", p + r"/serviceAccounts/(?P<email>[^/:]+)", self._account_get)
        route("POST", p + r"/serviceAccounts", self._account_create)
        route("POST", p + r"/serviceAccounts/(?P<email>[^/:]+):getIamPolicy", self._account_policy)
        route("POST", p + r"/serviceAccounts/(?P<email>[^/:]+):setIamPolicy", self._account_policy)
        route("GET", r"/v3/projects/(?P<project>[^/:]+)", self._project_get)
        route(
            "POST",
            r"/v3/projects/(?P<project>[^/:]+):(?P<verb>getIamPolicy|setIamPolicy)",
            self._project_policy,
        )
        route("GET", r"/storage/v1/b/(?P<bucket>[^/]+)", self._bucket_get)
        route("POST", r"/storage/v1/b", self._bucket_create)
        route("GET", r"/storage/v1/b/(?P<bucket>[^/]+)/iam", self._bucket_policy)
        route("PUT", r"/storage/v1/b/(?P<bucket>[^/]+)/iam", self._bucket_policy)
        bq = r"/bigquery/v2/projects/(?P<project>[^/]+)/datasets"
        route("GET", bq + r"/(?P<dataset>[^/]+)", self._dataset_get)
        route("POST", bq, self._dataset_create)
        route("PATCH", bq + r"/(?P<dataset>[^/]+)", self._dataset_patch)
        route("GET", bq + r"/(?P<dataset>[^/]+)/tables/(?P<table>[^/]+)", self._table_get)
        route("POST", bq + r"/(?P<dataset>[^/]+)/tables", self._table_create)
        repos = p + r"/locations/(?P<location>[^/]+)/repositories"
        route("GET", repos + r"/(?P<repo>[^/:]+)", self._repository_get)
        route("POST", repos, self._repository_create)
        route("GET", repos + r"/(?P<repo>[^/:]+):getIamPolicy", self._repository_policy)
        route("POST", repos + r"/(?P<repo>[^/:]+):setIamPolicy", self._repository_policy)
        pools = p + r"/locations/global/workloadIdentityPools"
        route("GET", pools + r"/(?P<pool>[^/]+)", self._pool_get)
        route("POST", pools, self._pool_create)
        route("GET", pools + r"/(?P<pool>[^/]+)/providers/(?P<provider>[^/]+)", self._provider_get)
        route("POST", pools + r"/(?P<pool>[^/]+)/providers", self._provider_create)

    @property
    def iam(self) -> Iam:
        return self.standin.iam

    @property
    def name(self) -> str:
        return f"projects/{self.project}"

    # --- helpers ---------------------------------------------------------------------

    def _refuse(
        self, request: Request, api: str, permission: str, resource: str, service: str = ""
    ) -> tuple[int, Any] | None:
        """Google's answer when the API is disabled or the caller lacks `permission` on
        `resource`; None when the call may go on."""
        service = service or (api if "." in api else f"{api}.googleapis.com")
        if service not in self.services:
            message = (
                f"{service.split('.')[0].title()} API has not been used in project "
                f"{self.number} before or it is disabled. Enable it by visiting "
                f"https://console.developers.google.com/apis/api/{service}/overview?project="
                f"{self.number} then retry."
            )
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {"service": service, "consumer": f"projects/{self.number}"},
                }
            ]
            return error(403, "PERMISSION_DENIED", message, details=details)
        if not self.iam.allowed(request.member, permission, resource):
            return permission_denied(api, permission, resource, request.caller)
        return None

    def _mine(self, project: str) -> bool:
        return project in (self.project, self.number, "-")

    def _not_found(self, what: str) -> tuple[int, Any]:
        return error(404, "NOT_FOUND", what)

    @staticmethod
    def _policy_json(policy: dict[str, Any], requested_version: int) -> dict[str, Any]:
        """A policy as getIamPolicy answers it: conditional bindings are only shown to a
        caller asking for version 3; others see their roles renamed, as Google does."""
        bindings = policy["bindings"]
        if requested_version < 3 and any("condition" in b for b in bindings):
            bindings = [
                {"role": b["role"] + "_withcond_standin", "members": b["members"]}
                if "condition" in b
                else b
                for b in bindings
            ]
            return {"version": 1, "bindings": bindings, "etag": policy["etag"]}
        return {"version": policy["version"], "bindings": bindings, "etag": policy["etag"]}

    def _set_policy(self, resource: str, policy: dict[str, Any]) -> tuple[int, Any]:
        if (
            any("condition" in b for b in policy.get("bindings", []))
            and policy.get("version", 1) < 3
        ):
            return error(
                400,
                "INVALID_ARGUMENT",
                "Invalid IAM policy: Conditional bindings require policy version 3.",
            )
        unknown = [b["role"] for b in policy.get("bindings", []) if not _known_role(b["role"])]
        if unknown:
            return error(
                400, "INVALID_ARGUMENT", f"Role {unknown[0]} is not supported for this resource."
            )
        try:
            stored = self.iam.set_policy(resource, policy)
        except PolicyConflict:
            return error(
                409,
                "ABORTED",
                "There were concurrent policy changes. Please retry the whole read-modify-write "
                "with exponential backoff.",
            )
        return 200, self._policy_json(stored, 3)

    # --- Service Usage ---------------------------------------------------------------

    def _service(self, name: str) -> dict[str, Any]:
        state = "ENABLED" if name in self.services else "DISABLED"
        return {
            "name": f"projects/{self.number}/services/{name}",
            "parent": f"projects/{self.number}",
            "state": state,
        }

    def _services_get(self, request, match):
        if not self._mine(match["project"]):
            return permission_denied(
                "serviceusage.googleapis.com", "serviceusage.services.get", self.name
            )
        refused = self._refuse(
            request, "serviceusage.googleapis.com", "serviceusage.services.get", self.name
        )
        if refused:
            return refused
        names = [name.rsplit("/", 1)[-1] for name in request.query.get("names", [])]
        if not names or len(names) > 30:
            return error(400, "INVALID_ARGUMENT", "Between 1 and 30 names must be requested.")
        return 200, {"services": [self._service(name) for name in names]}

    def _services_enable(self, request, match):
        refused = self._refuse(
            request, "serviceusage.googleapis.com", "serviceusage.services.enable", self.name
        )
        if refused:
            return refused
        ids = request.json.get("serviceIds", [])
        if not ids or len(ids) > 20:
            return error(400, "INVALID_ARGUMENT", "Between 1 and 20 services must be enabled.")
        self.services |= set(ids)
        response = {
            "@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
            "services": [self._service(name) for name in ids],
        }
        return 200, {"name": "operations/enable.standin", "done": True, "response": response}

    # --- IAM -------------------------------------------------------------------------

    def _role(self, request, match):
        role = role_resource(f"roles/{match['role']}")
        if role is None:
            # The stand-in knows only the roles in tests/data/iam_roles.json.
            return self._not_found(f"The role named roles/{match['role']} was not found.")
        return 200, role

    def _account_resource(self, email: str) -> str:
        return f"projects/{self.project}/serviceAccounts/{email}"

    def _account_get(self, request, match):
        email = unquote(match["email"])
        resource = self._account_resource(email)
        refused = self._refuse(request, "iam.googleapis.com", "iam.serviceAccounts.get", resource)
        if refused:
            return refused
        if email not in self.accounts:
            return self._not_found(f"Unknown service account: {email}")
        return 200, self.accounts[email]

    def _account_create(self, request, match):
        refused = self._refuse(
            request, "iam.googleapis.com", "iam.serviceAccounts.create", self.name
        )
        if refused:
            return refused
        body = request.json
        account_id = body.get("accountId", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", account_id) or not (
            6 <= len(account_id) <= 30
        ):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value for field 'accountId': '{account_id}'. Account id must match "
                "regex '[a-z]([-a-z0-9]*[a-z0-9])?' and be 6-30 characters long.",
            )
        email = f"{account_id}@{self.project}.iam.gserviceaccount.com"
        if email in self.accounts:
            return error(
                409,
                "ALREADY_EXISTS",
                f"Service account {account_id} already exists within project {self.name}.",
            )
        self.accounts[email] = {
            "name": self._account_resource(email),
            "projectId": self.project,
            "uniqueId": str(100000000000000000000 + len(self.accounts)),
            "email": email,
            "displayName": body.get("serviceAccount", {}).get("displayName", ""),
            "description": body.get("serviceAccount", {}).get("description", ""),
            "etag": "MDEwMjE5MjA=",
            "oauth2ClientId": "1",
        }
        return 200, self.accounts[email]

    def _account_policy(self, request, match):
        email = unquote(match["email"])
        resource = self._account_resource(email)
        setting = request.path.endswith(":setIamPolicy")
        permission = f"iam.serviceAccounts.{'setIamPolicy' if setting else 'getIamPolicy'}"
        refused = self._refuse(request, "iam.googleapis.com", permission, resource)
        if refused:
            return refused
        if email not in self.accounts:
            return self._not_found(f"Unknown service account: {email}")
        if setting:
            return self._set_policy(resource, request.json["policy"])
        if request.json:
            # IAM's getIamPolicy on a service account has no body: options go in the query.
            name = next(iter(request.json))
            return error(
                400,
                "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.',
            )
        version = int(request.query.get("options.requestedPolicyVersion", ["0"])[0])
        return 200, self._policy_json(self.iam.policy(resource), version)

    def _pool_get(self, request, match):
        name = f"projects/{self.number}/locations/global/workloadIdentityPools/{match['pool']}"
        refused = self._refuse(
            request, "iam.googleapis.com", "iam.googleapis.com/workloadIdentityPools.get", self.name
        )
        if refused:
            return refused
        if match["pool"] not in self.pools:
            return self._not_found("Requested entity was not found.")
        return 200, self.pools[match["pool"]] | {"name": name}

    def _pool_create(self, request, match):
        refused = self._refuse(
            request,
            "iam.googleapis.com",
            "iam.googleapis.com/workloadIdentityPools.create",
            self.name,
        )
        if refused:
            return refused
        pool = request.query.get("workloadIdentityPoolId", [""])[0]
        if not re.fullmatch(r"[a-z0-9-]{4,32}", pool) or pool.startswith("gcp-"):
            return error(400, "INVALID_ARGUMENT", "Invalid workload identity pool id.")
        if pool in self.pools:
            return error(409, "ALREADY_EXISTS", "Requested entity already exists")
        self.pools[pool] = {**request.json, "state": "ACTIVE", "providers": {}}
        name = f"projects/{self.number}/locations/global/workloadIdentityPools/{pool}"
        return 200, {"name": f"{name}/operations/create", "done": True}

    def _provider_get(self, request, match):
        refused = self._refuse(
            request,
            "iam.googleapis.com",
            "iam.googleapis.com/workloadIdentityPoolProviders.get",
            self.name,
        )
        if refused:
            return refused
        pool = self.pools.get(match["pool"])
        if pool is None or match["provider"] not in pool["providers"]:
            return self._not_found("Requested entity was not found.")
        return 200, pool["providers"][match["provider"]]

    def _provider_create(self, request, match):
        refused = self._refuse(
            request,
            "iam.googleapis.com",
            "iam.googleapis.com/workloadIdentityPoolProviders.create",
            self.name,
        )
        if refused:
            return refused
        pool = self.pools.get(match["pool"])
        if pool is None:
            return self._not_found("Requested entity was not found.")
        provider = request.query.get("workloadIdentityPoolProviderId", [""])[0]
        body = request.json
        if provider in pool["providers"]:
            return error(409, "ALREADY_EXISTS", "Requested entity already exists")
        if "oidc" in body and not body.get("attributeCondition"):
            # Google refuses OIDC providers for GitHub's issuer without an attribute condition.
            return error(
                400,
                "INVALID_ARGUMENT",
                "The attribute condition must reference one of the provider's claims.",
            )
        pool["providers"][provider] = {**body, "state": "ACTIVE"}
        return 200, {"name": "operations/provider", "done": True}

    # --- Resource Manager --------------------------------------------------------------

    def _project_get(self, request, match):
        if not self._mine(match["project"]):
            return permission_denied(
                "cloudresourcemanager.googleapis.com",
                "resourcemanager.projects.get",
                f"projects/{match['project']}",
            )
        refused = self._refuse(
            request,
            "cloudresourcemanager.googleapis.com",
            "resourcemanager.projects.get",
            self.name,
        )
        if refused:
            return refused
        return 200, {
            "name": f"projects/{self.number}",
            "projectId": self.project,
            "state": "ACTIVE",
            "displayName": self.project,
            "parent": "organizations/1",
        }

    def _project_policy(self, request, match):
        verb = match["verb"]
        if not self._mine(match["project"]):
            return error(403, "PERMISSION_DENIED", "The caller does not have permission")
        refused = self._refuse(
            request,
            "cloudresourcemanager.googleapis.com",
            f"resourcemanager.projects.{verb}",
            self.name,
        )
        if refused:
            return _terse(refused)
        if verb == "setIamPolicy":
            return self._set_policy(self.name, request.json["policy"])
        version = (request.json or {}).get("options", {}).get("requestedPolicyVersion", 0)
        return 200, self._policy_json(self.iam.policy(self.name), version)

    # --- Cloud Storage ---------------------------------------------------------------

    def _bucket_resource(self, bucket: str) -> str:
        # Bucket names are global; every bucket asked about here is judged as this project's.
        resource = f"projects/_/buckets/{bucket}"
        self.iam.parents.setdefault(resource, self.name)
        return resource

    def _bucket_get(self, request, match):
        resource = self._bucket_resource(match["bucket"])
        refused = self._refuse(
            request, "storage", "storage.buckets.get", resource, "storage.googleapis.com"
        )
        if refused:
            return refused
        if match["bucket"] not in self.buckets:
            return _storage_error(404, "The specified bucket does not exist.", "notFound")
        return 200, self.buckets[match["bucket"]]

    def _bucket_create(self, request, match):
        project = request.query.get("project", [""])[0]
        if not self._mine(project):
            return error(400, "INVALID_ARGUMENT", "Invalid project.")
        refused = self._refuse(
            request, "storage", "storage.buckets.create", self.name, "storage.googleapis.com"
        )
        if refused:
            return refused
        body = request.json
        name = body.get("name", "")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", name):
            return _storage_error(400, "Invalid bucket name: '" + name + "'", "invalid")
        if name in self.buckets:
            message = "Your previous request to create the named bucket succeeded and you "
            return _storage_error(409, message + "already own it.", "conflict")
        self.buckets[name] = {
            "kind": "storage#bucket",
            "id": name,
            "name": name,
            "projectNumber": self.number,
            "location": body.get("location", "US").upper(),
            "locationType": "region" if "-" in body.get("location", "US") else "multi-region",
            "storageClass": body.get("storageClass", "STANDARD"),
            "iamConfiguration": body.get("iamConfiguration", {}),
            "metageneration": "1",
            "etag": "CAE=",
        }
        self.iam.parents[self._bucket_resource(name)] = self.name
        return 200, self.buckets[name]

    def _bucket_policy(self, request, match):
        resource = self._bucket_resource(match["bucket"])
        setting = request.method == "PUT"
        permission = f"storage.buckets.{'setIamPolicy' if setting else 'getIamPolicy'}"
        refused = self._refuse(request, "storage", permission, resource, "storage.googleapis.com")
        if refused:
            return refused
        if match["bucket"] not in self.buckets:
            return _storage_error(404, "The specified bucket does not exist.", "notFound")
        if setting:
            status, policy = self._set_policy(resource, request.json)
            if status == 409:  # Cloud Storage answers a stale etag with 412
                return _storage_error(412, "Precondition Failed", "conditionNotMet")
            if status != 200:
                return status, policy
        else:
            version = int(request.query.get("optionsRequestedPolicyVersion", ["1"])[0])
            policy = self._policy_json(self.iam.policy(resource), version)
        return 200, {"kind": "storage#policy", "resourceId": resource, **policy}

    # --- BigQuery ---------------------------------------------------------------------

    def _dataset_resource(self, project: str, dataset: str) -> str:
        return f"projects/{project}/datasets/{dataset}"

    def _dataset_json(self, key: str) -> dict[str, Any]:
        dataset = self.datasets[key]
        access = []
        for binding in self.iam.policy(dataset["_resource"])["bindings"]:
            role = _LEGACY_DATASET_ROLES.get(binding["role"], binding["role"])
            for member in binding["members"]:
                kind, _, who = member.partition(":")
                if kind == "specialGroup":
                    access.append({"role": role, "specialGroup": who})
                else:
                    access.append({"role": role, _ENTITY_KINDS.get(kind, "iamMember"): who})
        return {k: v for k, v in dataset.items() if not k.startswith("_")} | {"access": access}

    def _dataset_get(self, request, match):
        project, dataset = match["project"], match["dataset"]
        resource = self._dataset_resource(project, dataset)
        refused = self._refuse(request, "bigquery", "bigquery.datasets.get", resource)
        if refused:
            return refused
        key = f"{project}:{dataset}"
        if key not in self.datasets:
            return _bigquery_error(404, "NOT_FOUND", f"Not found: Dataset {key}", "notFound")
        return 200, self._dataset_json(key)

    def _dataset_create(self, request, match):
        project = match["project"]
        refused = self._refuse(
            request, "bigquery", "bigquery.datasets.create", f"projects/{project}"
        )
        if refused:
            return refused
        body = request.json
        dataset = body["datasetReference"]["datasetId"]
        key = f"{project}:{dataset}"
        if not re.fullmatch(r"[A-Za-z0-9_]{1,1024}", dataset):
            return _bigquery_error(
                400, "INVALID_ARGUMENT", f'Invalid dataset ID "{dataset}".', "invalid"
            )
        if key in self.datasets:
            return _bigquery_error(
                409, "ALREADY_EXISTS", f"Already Exists: Dataset {key}", "duplicate"
            )
        location = body.get("location", "US")
        if location not in ("US", "EU") and not _REGION.fullmatch(location):
            message = f"Location {location} is not found or access is unauthorized."
            return _bigquery_error(400, "INVALID_ARGUMENT", message, "invalid")
        resource = self._dataset_resource(project, dataset)
        self.datasets[key] = {
            "kind": "bigquery#dataset",
            "id": key,
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "location": location,
            "etag": "AAAAAA==",
            "_resource": resource,
        }
        # Without an access list, BigQuery makes the creator the dataset's owner, beside the
        # project's basic-role groups.
        owners = [request.member] if request.member else []
        self.iam.policies[resource] = {
            "version": 1,
            "etag": "AAAAAA==",
            "bindings": [
                {
                    "role": "roles/bigquery.dataOwner",
                    "members": [*owners, "specialGroup:projectOwners"],
                },
                {"role": "roles/bigquery.dataEditor", "members": ["specialGroup:projectWriters"]},
                {"role": "roles/bigquery.dataViewer", "members": ["specialGroup:projectReaders"]},
            ],
        }
        return 200, self._dataset_json(key)

    def _dataset_patch(self, request, match):
        project, dataset = match["project"], match["dataset"]
        resource = self._dataset_resource(project, dataset)
        key = f"{project}:{dataset}"
        body = request.json
        for permission in ("bigquery.datasets.update",) + (
            ("bigquery.datasets.setIamPolicy",) if "access" in body else ()
        ):
            refused = self._refuse(request, "bigquery", permission, resource)
            if refused:
                return refused
        if key not in self.datasets:
            return _bigquery_error(404, "NOT_FOUND", f"Not found: Dataset {key}", "notFound")
        if_match = request.headers.get("if-match")
        if if_match and if_match != self.datasets[key]["etag"]:
            return _bigquery_error(
                412, "FAILED_PRECONDITION", "Precondition check failed.", "conditionNotMet"
            )
        if "location" in body and body["location"] != self.datasets[key]["location"]:
            return _bigquery_error(
                400, "INVALID_ARGUMENT", "Cannot change dataset location.", "invalid"
            )
        if "access" in body:
            legacy = {v: k for k, v in _LEGACY_DATASET_ROLES.items()}
            bindings: dict[str, list[str]] = {}
            for entry in body["access"]:
                role = legacy.get(entry["role"], entry["role"])
                if not _known_role(role):
                    return _bigquery_error(
                        400, "INVALID_ARGUMENT", f"Invalid role: {entry['role']}", "invalid"
                    )
                if "userByEmail" in entry:
                    who = entry["userByEmail"]
                    member = (
                        "serviceAccount:" if who.endswith(".gserviceaccount.com") else "user:"
                    ) + who
                elif "groupByEmail" in entry:
                    member = "group:" + entry["groupByEmail"]
                elif "specialGroup" in entry:
                    member = "specialGroup:" + entry["specialGroup"]
                else:
                    member = entry.get("iamMember", "")
                bindings.setdefault(role, []).append(member)
            self.iam.policies[resource] = {
                "version": 1,
                "etag": self.iam.policy(resource)["etag"],
                "bindings": [{"role": r, "members": m} for r, m in bindings.items()],
            }
        serial = int(base64.b64decode(self.datasets[key]["etag"]).hex() or "0", 16) + 1
        self.datasets[key]["etag"] = base64.b64encode(serial.to_bytes(4, "big")).decode()
        return 200, self._dataset_json(key)

    def _table_get(self, request, match):
        project, dataset, table = match["project"], match["dataset"], match["table"]
        resource = f"{self._dataset_resource(project, dataset)}/tables/{table}"
        refused = self._refuse(request, "bigquery", "bigquery.tables.get", resource)
        if refused:
            return refused
        key = f"{project}:{dataset}.{table}"
        if key not in self.tables:
            return _bigquery_error(404, "NOT_FOUND", f"Not found: Table {key}", "notFound")
        return 200, self.tables[key]

    def _table_create(self, request, match):
        project, dataset = match["project"], match["dataset"]
        resource = self._dataset_resource(project, dataset)
        refused = self._refuse(request, "bigquery", "bigquery.tables.create", resource)
        if refused:
            return refused
        if f"{project}:{dataset}" not in self.datasets:
            return _bigquery_error(
                404, "NOT_FOUND", f"Not found: Dataset {project}:{dataset}", "notFound"
            )
        body = request.json
        table = body["tableReference"]["tableId"]
        key = f"{project}:{dataset}.{table}"
        if key in self.tables:
            return _bigquery_error(
                409, "ALREADY_EXISTS", f"Already Exists: Table {key}", "conflict"
            )
        self.tables[key] = body | {
            "kind": "bigquery#table",
            "id": key,
            "numRows": "0",
            "location": self.datasets[f"{project}:{dataset}"]["location"],
            "type": "TABLE",
        }
        return 200, self.tables[key]

    # --- Artifact Registry ------------------------------------------------------------

    def _repository_resource(self, location: str, repo: str) -> str:
        return f"projects/{self.project}/locations/{location}/repositories/{repo}"

    def _repository_get(self, request, match):
        resource = self._repository_resource(match["location"], match["repo"])
        refused = self._refuse(
            request,
            "artifactregistry.googleapis.com",
            "artifactregistry.repositories.get",
            resource,
        )
        if refused:
            return refused
        if resource not in self.repositories:
            return self._not_found("Requested entity was not found.")
        return 200, self.repositories[resource]

    def _repository_create(self, request, match):
        parent = f"projects/{self.project}/locations/{match['location']}"
        refused = self._refuse(
            request,
            "artifactregistry.googleapis.com",
            "artifactregistry.repositories.create",
            parent,
        )
        if refused:
            return refused
        if not _REGION.fullmatch(match["location"]) and match["location"] not in (
            "us",
            "europe",
            "asia",
        ):
            return error(400, "INVALID_ARGUMENT", f"Invalid location: {match['location']}")
        repo = request.query.get("repositoryId", [""])[0]
        if not re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", repo):
            return error(400, "INVALID_ARGUMENT", f"Invalid repository id {repo!r}.")
        resource = self._repository_resource(match["location"], repo)
        if resource in self.repositories:
            return error(409, "ALREADY_EXISTS", "the repository already exists")
        from google.cloud import artifactregistry_v1

        # The body parsed into the real proto (clients send enums as numbers or names).
        repository = artifactregistry_v1.Repository.from_json(
            request.raw or b"{}", ignore_unknown_fields=False
        )
        if repository.format_ == artifactregistry_v1.Repository.Format.FORMAT_UNSPECIFIED:
            return error(400, "INVALID_ARGUMENT", "Repository format must be specified.")
        body = json.loads(
            artifactregistry_v1.Repository.to_json(repository, use_integers_for_enums=False)
        )
        self.repositories[resource] = {**body, "name": resource, "mode": "STANDARD_REPOSITORY"}
        return 200, {
            "name": f"{parent}/operations/create-{repo}",
            "done": True,
            "response": {
                "@type": "type.googleapis.com/google.devtools.artifactregistry.v1.Repository",
                **self.repositories[resource],
            },
        }

    def _repository_policy(self, request, match):
        resource = self._repository_resource(match["location"], match["repo"])
        setting = request.path.endswith(":setIamPolicy")
        permission = (
            f"artifactregistry.repositories.{'setIamPolicy' if setting else 'getIamPolicy'}"
        )
        refused = self._refuse(request, "artifactregistry.googleapis.com", permission, resource)
        if refused:
            return _terse(refused)
        if resource not in self.repositories:
            return self._not_found("Requested entity was not found.")
        if setting:
            return self._set_policy(resource, request.json["policy"])
        version = int(request.query.get("options.requestedPolicyVersion", ["0"])[0])
        return 200, self._policy_json(self.iam.policy(resource), version)


def _storage_error(code: int, message: str, reason: str) -> tuple[int, dict[str, Any]]:
    """Cloud Storage's JSON API error (no `status`, `errors` with a reason)."""
    errors = [{"message": message, "domain": "global", "reason": reason}]
    return code, {"error": {"code": code, "message": message, "errors": errors}}


def _bigquery_error(code: int, status: str, message: str, reason: str) -> tuple[int, Any]:
    """BigQuery's error: Google's shape plus `errors` with a reason."""
    errors = [{"message": message, "domain": "global", "reason": reason}]
    return error(code, status, message, errors=errors)


def _terse(refused: tuple[int, Any]) -> tuple[int, Any]:
    """getIamPolicy and setIamPolicy say less than other methods when permission is denied."""
    if "SERVICE_DISABLED" in json.dumps(refused[1]):
        return refused
    return error(403, "PERMISSION_DENIED", "The caller does not have permission")


def _known_role(role: str) -> bool:
    return role in role_permissions() or role in _LEGACY_DATASET_ROLES
