"""The two container images as runs use them: pinned to the digests they were pushed as,
looked up in Artifact Registry.

Vertex pulls an executor's image when a step starts, and ingests the serving image when a
model version is uploaded: an image that was never pushed fails a run at its first step, or
at registration, long after it was submitted. So every submission, published template and
schedule names images by digest (`...@sha256:...`), resolved here through the Artifact
Registry API before anything is sent, and an image that does not exist stops the command
with the line that fixes it (`python submit.py build`; building is pipelines/build.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from components.errors import ChurnError, google_reason
from components.settings import Settings

BUILD_FIX = "run `python submit.py build`"

_IMAGE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[a-z0-9.:-]+)/"
    r"(?P<repository>[a-z0-9_.-]+)/(?P<image>[a-z0-9_./-]+?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


class ImageError(ChurnError):
    """An image is missing, cannot be looked up, or could not be built or pushed."""


@dataclass(frozen=True)
class RegistryImage:
    """A Docker image in Artifact Registry: LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE,
    with a tag or a digest."""

    location: str
    project: str
    repository: str
    image: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, uri: str) -> RegistryImage | None:
        match = _IMAGE.fullmatch(uri)
        return cls(**match.groupdict()) if match else None

    @property
    def base(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}/{self.image}"

    @property
    def uri(self) -> str:
        if self.digest:
            return f"{self.base}@{self.digest}"
        return f"{self.base}:{self.tag or 'latest'}"

    @property
    def repository_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"

    @property
    def package_name(self) -> str:
        # The API escapes the slashes of a nested image name inside the package id.
        return f"{self.repository_name}/packages/{quote(self.image, safe='')}"


@contextmanager
def as_image_error(what: str) -> Iterator[None]:
    """A refused request, or credentials that cannot be had, as one line naming `what`."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth

    try:
        yield
    except auth.GoogleAuthError as exc:
        raise ImageError(
            f"{what} failed: no usable Google credentials ({exc}); "
            "run `gcloud auth application-default login`"
        ) from None
    except exceptions.GoogleAPICallError as exc:
        raise ImageError(f"{what} failed: {google_reason(exc)}") from None


def configured_images(settings: Settings) -> dict[str, str]:
    """The image each part of a run uses, as configured (usually a tag)."""
    return {"components": settings.component_image_uri, "serving": settings.serving_image_uri}


# --- resolving tags to digests ----------------------------------------------------------


def registry_client(settings: Settings) -> Any:
    from google.cloud import artifactregistry_v1

    with as_image_error("connecting to Artifact Registry"):
        return artifactregistry_v1.ArtifactRegistryClient(
            transport="rest", client_options={"api_endpoint": settings.artifact_registry_endpoint}
        )


def resolve_image(uri: str, client: Any) -> str:
    """`uri` by digest: a tag looked up to the version it points at now, a digest checked
    to exist. Fails with one line naming the image and the command that pushes it."""
    from google.api_core import exceptions

    image = RegistryImage.parse(uri)
    if image is None:
        raise ImageError(
            f"image {uri} is not in Artifact Registry (LOCATION-docker.pkg.dev/PROJECT/REPO/"
            "IMAGE): runs on Vertex AI pin their images by digest, looked up there"
        )
    with as_image_error(f"looking up image {uri}"):
        try:
            if image.digest:
                client.get_docker_image(
                    name=f"{image.repository_name}/dockerImages/"
                    f"{quote(image.image, safe='')}@{image.digest}"
                )
                return image.uri
            tag = client.get_tag(name=f"{image.package_name}/tags/{image.tag or 'latest'}")
        except exceptions.NotFound:
            missing = f"image {uri} does not exist in Artifact Registry; {BUILD_FIX}"
            raise ImageError(missing) from None
    digest = tag.version.rsplit("/versions/", 1)[-1]
    return replace(image, tag=None, digest=digest).uri


def pinned(settings: Settings) -> Settings:
    """`settings` with both images named by digest, each checked to exist."""
    client = registry_client(settings)
    images = {name: resolve_image(uri, client) for name, uri in configured_images(settings).items()}
    return settings.replace(component_image=images["components"], serving_image=images["serving"])
