"""The two container images: build and push them (Cloud Build, or a local docker or podman),
and pin what runs use to the pushed digests.

Vertex pulls an executor's image when a step starts, and ingests the serving image when a
model version is uploaded: an image that was never pushed fails a run at its first step, or
at registration, long after it was submitted. So every submission, published template and
schedule names images by digest (`...@sha256:...`), resolved here through the Artifact
Registry API before anything is sent, and an image that does not exist stops the command
with the line that fixes it (`python submit.py build`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from components.errors import ChurnError, google_reason
from components.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {
    "components": "containers/components/Dockerfile",
    "serving": "containers/serving/Dockerfile",
}
"""Each image and the Dockerfile it is built from (the build context is the repository)."""
DOCKER_BUILDER = "gcr.io/cloud-builders/docker"
BUILD_FIX = "run `python submit.py build`"

_IMAGE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[a-z0-9.:-]+)/"
    r"(?P<repository>[a-z0-9_.-]+)/(?P<image>[a-z0-9_./-]+?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)

StepEvent = Callable[[str, str, float, str], None]
"""(step, "started" | "progress" | "succeeded" | "failed", seconds, detail), as for runs."""


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
def _google(what: str) -> Iterator[None]:
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

    with _google("connecting to Artifact Registry"):
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
    with _google(f"looking up image {uri}"):
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
    return replace(settings, component_image=images["components"], serving_image=images["serving"])


# --- what a build pushes ----------------------------------------------------------------


def build_targets(settings: Settings) -> dict[str, RegistryImage]:
    """Where each image is pushed: the configured image's repository and name."""
    targets = {}
    for name, uri in configured_images(settings).items():
        image = RegistryImage.parse(uri)
        if image is None:
            raise ImageError(
                f"{name} image {uri} is not in Artifact Registry; `build` pushes to "
                "LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE (component_image, serving_image)"
            )
        targets[name] = image
    return targets


def build_tags(settings: Settings, root: Path = REPO_ROOT) -> list[str]:
    """The tags a build pushes: the configured tag (default: the project version) and
    `git-<commit>` when the tracked files are those of the commit."""
    tags = []
    for image in build_targets(settings).values():
        tag = image.tag or metadata.version("churn-pipelines")
        if tag not in tags:
            tags.append(tag)
    commit = _git(root, "rev-parse", "HEAD").strip()
    if commit and not _git(root, "status", "--porcelain", "--untracked-files=no").strip():
        tags.append(f"git-{commit[:12]}")
    return tags


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def source_files(root: Path = REPO_ROOT) -> list[str]:
    """The repository's tracked files that `.dockerignore` lets into the build context."""
    listed = _git(root, "ls-files", "-z", "--cached")
    if not listed:
        raise ImageError(f"{root} is not a git checkout: `build` sends the tracked files")
    ignore = _dockerignore(root)
    return sorted(
        path
        for path in listed.split("\0")
        if path and (root / path).is_file() and not _ignored(path, ignore)
    )


def _dockerignore(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    path = root / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    rules = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((keep, _glob(pattern)))
    return rules


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**` for any number of folders)."""
    pieces = pattern.split("/")
    parts = []
    for i, piece in enumerate(pieces):
        if piece == "**":
            parts.append("(?:.*/)?" if i < len(pieces) - 1 else ".*")
            continue
        # `*` and `?` stay within one path segment.
        regex = re.sub(r"\[(.*?)\]|(\*)|(\?)|([^[*?]+)", _segment, piece)
        parts.append(regex + "/")
    regex = "".join(parts).removesuffix("/")
    # A pattern that names a folder excludes everything in it.
    return re.compile(f"(?s:{regex})(?:/.*)?")


def _segment(match: re.Match[str]) -> str:
    chars, star, question, literal = match.groups()
    if chars is not None:
        return f"[{'^' + chars[1:] if chars.startswith('^') else chars}]"
    if star:
        return "[^/]*"
    if question:
        return "[^/]"
    return re.escape(literal)


def _ignored(path: str, rules: Iterable[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for keep, pattern in rules:  # the last matching rule wins, as in Docker
        if pattern.fullmatch(path):
            ignored = not keep
    return ignored


def source_tarball(root: Path = REPO_ROOT) -> bytes:
    """The build context as a gzipped tar, byte-identical for identical files (no times,
    owners or modes of this machine), so an unchanged checkout uploads the same object."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in source_files(root):
            data = (root / path).read_bytes()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if (root / path).stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


# --- Cloud Build ------------------------------------------------------------------------


def cloud_build_request(
    settings: Settings, bucket: str, object_name: str, generation: int, tags: list[str]
) -> Any:
    """One build of both images, one step each, in order (the second reuses the first's
    cached build stage); Cloud Build pushes every tag listed in `images` once the steps
    succeed, and reports each pushed name with its digest in `results.images`."""
    from google.cloud.devtools import cloudbuild_v1

    steps, images = [], []
    for name, target in build_targets(settings).items():
        names = [f"{target.base}:{tag}" for tag in tags]
        tagging = [arg for image in names for arg in ("-t", image)]
        steps.append(
            cloudbuild_v1.BuildStep(
                id=f"build {name}",
                name=DOCKER_BUILDER,
                args=["build", "-f", DOCKERFILES[name], *tagging, "."],
            )
        )
        images += names
    return cloudbuild_v1.Build(
        source=cloudbuild_v1.Source(
            storage_source=cloudbuild_v1.StorageSource(
                bucket=bucket, object_=object_name, generation=generation
            )
        ),
        steps=steps,
        images=images,
        timeout={"seconds": 3600},
        tags=["churn-pipelines"],
        # As churn-ci, which `setup` lets push to `churn` and read the source: a new
        # project's default build account may do neither. A build with an account of its
        # own must send its logs somewhere other than the default logs bucket.
        service_account=f"projects/{settings.project}/serviceAccounts/{settings.ci_account}",
        options=cloudbuild_v1.BuildOptions(
            logging=cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY
        ),
    )


def source_object(settings: Settings, tarball: bytes) -> tuple[str, str]:
    """(bucket, object) the build context is uploaded to: named by its content."""
    bucket = settings.bucket_uri.removeprefix("gs://").split("/", 1)[0]
    return bucket, f"build-source/{hashlib.sha256(tarball).hexdigest()[:20]}.tgz"


def build_client(settings: Settings) -> Any:
    from google.cloud.devtools import cloudbuild_v1

    with _google("connecting to Cloud Build"):
        return cloudbuild_v1.CloudBuildClient(
            transport="rest", client_options={"api_endpoint": settings.cloud_build_endpoint}
        )


def dry_run_cloud_build(settings: Settings, root: Path = REPO_ROOT) -> list[str]:
    """The upload and the build a `build` sends, as the JSON lines a dry run prints."""
    from pipelines.vertex import ApiRequest, api_url, rest_json

    tarball = source_tarball(root)
    bucket, name = source_object(settings, tarball)
    upload = ApiRequest(
        "POST",
        f"https://storage.googleapis.com/upload/storage/v1/b/{bucket}/o?uploadType=media"
        f"&name={quote(name, safe='')}",
        {"bytes": len(tarball), "files": len(source_files(root))},
    )
    build = cloud_build_request(settings, bucket, name, 0, build_tags(settings, root))
    create = ApiRequest(
        "POST",
        api_url(
            settings.cloud_build_endpoint,
            f"projects/{settings.project}/locations/{settings.region}/builds",
        ),
        rest_json(build),
    )
    return [upload.line(), create.line()]


def cloud_build(settings: Settings, on_step: StepEvent, root: Path = REPO_ROOT) -> dict[str, str]:
    """Upload the build context, build and push both images with Cloud Build, follow it
    step by step; returns each image by its pushed digest."""
    from google.cloud import storage
    from google.cloud.devtools import cloudbuild_v1

    tarball = source_tarball(root)
    bucket, name = source_object(settings, tarball)
    with _google(f"uploading the build source to gs://{bucket}/{name}"):
        blob = storage.Client(project=settings.project).bucket(bucket).blob(name)
        blob.upload_from_string(tarball, content_type="application/gzip")
    tags = build_tags(settings, root)
    request = cloud_build_request(settings, bucket, name, blob.generation or 0, tags)
    parent = f"projects/{settings.project}/locations/{settings.region}"
    client = build_client(settings)
    with _google("creating the build"):
        started = client.create_build(parent=parent, build=request).metadata.build
    build = _follow_build(settings, client, f"{parent}/builds/{started.id}", on_step)
    Status = cloudbuild_v1.Build.Status
    if build.status != Status.SUCCESS:
        detail = build.failure_info.detail or build.status_detail or build.status.name
        raise ImageError(
            f"build {build.id} {build.status.name.lower()}: {detail}; log: {build.log_url}"
        )
    return _pushed(build_targets(settings), tags, build.results.images)


def _follow_build(settings: Settings, client: Any, name: str, on_step: StepEvent) -> Any:
    from google.cloud.devtools import cloudbuild_v1

    Status = cloudbuild_v1.Build.Status
    done = {Status.SUCCESS, Status.FAILURE, Status.INTERNAL_ERROR, Status.TIMEOUT}
    done |= {Status.CANCELLED, Status.EXPIRED}
    reported: dict[str, str] = {}
    while True:
        with _google(f"reading build {name}"):
            build = client.get_build(name=name)
        for step in build.steps:
            event = {
                Status.WORKING: "started",
                Status.SUCCESS: "succeeded",
                Status.FAILURE: "failed",
                Status.TIMEOUT: "failed",
                Status.CANCELLED: "failed",
            }.get(step.status)
            if event is None or reported.get(step.id) == event:
                continue
            if event != "started" and step.id not in reported:
                on_step(step.id, "started", 0.0, "")
            reported[step.id] = event
            on_step(step.id, event, _seconds(step.timing), "")
        if build.status in done:
            if build.status == Status.SUCCESS:
                push = build.timing.get("PUSH")
                on_step("push images", "succeeded", _seconds(push) if push else 0.0, "")
            return build
        time.sleep(settings.poll_seconds)


def _seconds(span: Any) -> float:
    if span is None or not span.start_time or not span.end_time:
        return 0.0
    return (span.end_time - span.start_time).total_seconds()


def _pushed(
    targets: dict[str, RegistryImage], tags: list[str], results: Iterable[Any]
) -> dict[str, str]:
    digests = {result.name: result.digest for result in results}
    pushed = {}
    for name, target in targets.items():
        digest = digests.get(f"{target.base}:{tags[0]}")
        if not digest:
            raise ImageError(f"the build pushed no {target.base}:{tags[0]}")
        pushed[name] = f"{target.base}@{digest}"
    return pushed


# --- docker or podman on this machine ---------------------------------------------------


@dataclass(frozen=True)
class Command:
    step: str
    """What the progress display calls it ("build components", "push serving:0.1.0")."""
    argv: list[str]
    stdin: str | None = None


def local_build_commands(
    settings: Settings, tool: str, token: str, digest_dir: Path, root: Path = REPO_ROOT
) -> list[Command]:
    """Log in to the registry with an access token, build each image with every tag, push
    each tag. podman writes the pushed digest to a file; docker prints it."""
    targets = build_targets(settings)
    tags = build_tags(settings, root)
    hosts = sorted({f"https://{t.location}-docker.pkg.dev" for t in targets.values()})
    commands = [
        Command(
            f"log in to {host.removeprefix('https://')}",
            [tool, "login", "-u", "oauth2accesstoken", "--password-stdin", host],
            token,
        )
        for host in hosts
    ]
    for name, target in targets.items():
        tagging = [arg for tag in tags for arg in ("-t", f"{target.base}:{tag}")]
        build = [tool, "build", "-f", DOCKERFILES[name], *tagging, "."]
        commands.append(Command(f"build {name}", build))
        for tag in tags:
            push = [tool, "push"]
            if tool == "podman":
                push += ["--digestfile", str(digest_dir / f"{name}-{tag}")]
            commands.append(Command(f"push {name}:{tag}", [*push, f"{target.base}:{tag}"]))
    return commands


def local_build(
    settings: Settings, tool: str, on_step: StepEvent, token: str, root: Path = REPO_ROOT
) -> dict[str, str]:
    """Build and push both images with `tool` (docker or podman); returns each image by the
    digest its first tag was pushed as."""
    import tempfile

    targets = build_targets(settings)
    tags = build_tags(settings, root)
    pushed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as digest_dir:
        for command in local_build_commands(settings, tool, token, Path(digest_dir), root):
            argv, step = command.argv, command.step
            on_step(step, "started", 0.0, "")
            started = time.monotonic()
            try:
                out = subprocess.run(
                    argv, cwd=root, input=command.stdin, capture_output=True, text=True
                )
            except OSError as exc:
                raise ImageError(
                    f"{tool} cannot be run ({exc.strerror or exc}): install it, or build with "
                    "Cloud Build (leave out --builder)"
                ) from None
            seconds = time.monotonic() - started
            if out.returncode != 0:
                on_step(step, "failed", seconds, "")
                lines = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
                raise ImageError(f"`{' '.join(argv[:2])}` failed: {lines[-1]}")
            on_step(step, "succeeded", seconds, "")
            for name, target in targets.items():
                if argv[1] == "push" and argv[-1] == f"{target.base}:{tags[0]}":
                    digest = _pushed_digest(tool, out.stdout, Path(digest_dir), name, tags[0])
                    pushed[name] = f"{target.base}@{digest}"
    return pushed


def _pushed_digest(tool: str, stdout: str, digest_dir: Path, name: str, tag: str) -> str:
    if tool == "podman":
        text = (digest_dir / f"{name}-{tag}").read_text().strip()
    else:  # docker push ends with "TAG: digest: sha256:... size: N"
        found = re.findall(r"digest: (sha256:[0-9a-f]{64})", stdout)
        text = found[-1] if found else ""
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", text):
        raise ImageError(f"{tool} push of {name} reported no digest")
    return text


def dry_run_local_build(settings: Settings, tool: str, root: Path = REPO_ROOT) -> list[str]:
    commands = local_build_commands(settings, tool, "TOKEN", Path("DIGESTS"), root)
    return [json.dumps({"command": command.argv}) for command in commands]
