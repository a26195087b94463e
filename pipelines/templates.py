"""Pipeline templates: publish a compiled one (`pipelines.compiling.compile_pipeline`) to the
KFP repository in Artifact Registry, where schedules and runs name it by its sha256 version."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from components.settings import Settings
from pipelines.vertex import ApiRequest, VertexError, access_token


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
    client = RegistryClient(host=settings.template_registry_uri, auth=ApiAuth(access_token()))
    try:
        package, version = client.upload_pipeline(str(path), tags=tags)
    except Exception as exc:  # requests' HTTPError, or a reply that is no package/version
        raise VertexError(
            f"uploading {path.name} to {settings.template_registry_uri} failed: {exc}"
        ) from None
    return Published(
        package, version, tags, f"{settings.template_registry_uri}/{package}/{version}"
    )


def template_published(settings: Settings, template_uri: str) -> bool:
    """Whether the KFP repository holds `template_uri` (`<repository>/<package>/<version>`):
    read as a PipelineJob's `templateUri` is, by downloading it."""
    import requests

    try:
        answer = requests.get(
            template_uri, headers={"Authorization": f"Bearer {access_token()}"}, timeout=60
        )
    except requests.RequestException as exc:
        raise VertexError(f"reading template {template_uri} failed: {exc}") from None
    if answer.status_code == 404:
        return False
    if not answer.ok:
        raise VertexError(
            f"reading template {template_uri} failed: {answer.status_code} {answer.text[:200]}"
        )
    return True
