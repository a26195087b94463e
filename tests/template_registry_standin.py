"""Artifact Registry's KFP repositories on the Google stand-in (tests/google_standin.py).

What `kfp.registry.RegistryClient` talks to at `https://<region>-kfp.pkg.dev/<project>/<repo>`:
an upload is a multipart form of `content` (the template YAML) and `tags`, answered with
`<package>/sha256:<digest of the content>` as plain text; a template is read back by
`<package>/<version or tag>`. As in Artifact Registry, the version is the content's digest
(the same YAML uploads as the same version), a tag names one version at a time and moves
when a new upload carries it, the repository must exist, and the caller needs
`artifactregistry.repositories.uploadArtifacts` to upload and
`artifactregistry.repositories.downloadArtifacts` to read.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from google_standin import Authorize, allow_all, error, permission_denied


@dataclass
class Package:
    versions: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class TemplateRegistry:
    """The KFP repositories of one project, served under `/<project>/<repo>` on `standin`
    (the tests set `template_registry` to `<standin url>/<project>/<repo>`)."""

    def __init__(
        self,
        standin: Any,
        project: str,
        location: str,
        *,
        repositories: Callable[[], set[str]] = lambda: {"churn-pipelines"},
        authorize: Authorize = allow_all,
    ) -> None:
        self.project, self.location = project, location
        self.repositories, self.authorize = repositories, authorize
        self.packages: dict[tuple[str, str], Package] = {}
        self.uploads: list[dict[str, Any]] = []  # each upload: package, version, tags, content
        base = rf"/{project}/(?P<repo>[^/]+)"
        standin.route("POST", base, self._upload)
        standin.route("GET", base + r"/(?P<package>[^/]+)/(?P<ref>[^/]+)", self._download)

    def template(self, repo: str, package: str, ref: str) -> bytes | None:
        """The YAML a template URI names (by version or tag), or None."""
        found = self.packages.get((repo, package))
        if found is None:
            return None
        return found.versions.get(found.tags.get(ref, ref))

    def _repository(self, request, match, permission: str):
        repo = match["repo"]
        resource = f"projects/{self.project}/locations/{self.location}/repositories/{repo}"
        if repo not in self.repositories():
            return error(404, "NOT_FOUND", f"Requested entity was not found: {resource}")
        if not self.authorize(request.member, permission, resource):
            api = "artifactregistry.googleapis.com"
            return permission_denied(api, permission, resource, request.caller)
        return None

    def _upload(self, request, match):
        refused = self._repository(request, match, "artifactregistry.repositories.uploadArtifacts")
        if refused:
            return refused
        head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.raw)
        parts = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
        if "content" not in parts:
            return error(400, "INVALID_ARGUMENT", "the upload has no content part")
        content = parts["content"].get_payload(decode=True)
        try:
            package = next(yaml.safe_load_all(content))["pipelineInfo"]["name"]
        except (yaml.YAMLError, KeyError, TypeError, StopIteration):
            return error(400, "INVALID_ARGUMENT", "the content is not a KFP pipeline template")
        version = "sha256:" + hashlib.sha256(content).hexdigest()
        found = self.packages.setdefault((match["repo"], package), Package())
        found.versions[version] = content
        tags = parts["tags"].get_content() if "tags" in parts else ""
        for tag in filter(None, tags.split(",")):
            found.tags[tag] = version  # a tag names one version: it moves to this upload
        self.uploads.append(
            {"package": package, "version": version, "tags": tags, "content": content}
        )
        return 200, f"{package}/{version}".encode()

    def _download(self, request, match):
        refused = self._repository(
            request, match, "artifactregistry.repositories.downloadArtifacts"
        )
        if refused:
            return refused
        content = self.template(match["repo"], match["package"], match["ref"])
        if content is None:
            return error(404, "NOT_FOUND", "Requested entity was not found.")
        return 200, content
