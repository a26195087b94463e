"""Build and push the two container images: with Cloud Build, or with a local docker or
podman; each returns the images by the digests they were pushed as (what pipelines/images.py
pins runs to)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from components.settings import Settings
from pipelines.build_context import REPO_ROOT, git, source_files, source_tarball
from pipelines.images import ImageError, RegistryImage, as_image_error, configured_images

DOCKERFILES = {
    "components": "containers/components/Dockerfile",
    "serving": "containers/serving/Dockerfile",
}
"""Each image and the Dockerfile it is built from (the build context is the repository)."""
DOCKER_BUILDER = "gcr.io/cloud-builders/docker"

StepEvent = Callable[[str, str, float, str], None]
"""(step, "started" | "progress" | "succeeded" | "failed", seconds, detail), as for runs."""


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
    commit = git(root, "rev-parse", "HEAD").strip()
    if commit and not git(root, "status", "--porcelain", "--untracked-files=no").strip():
        tags.append(f"git-{commit[:12]}")
    return tags


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

    with as_image_error("connecting to Cloud Build"):
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
    with as_image_error(f"uploading the build source to gs://{bucket}/{name}"):
        blob = storage.Client(project=settings.project).bucket(bucket).blob(name)
        blob.upload_from_string(tarball, content_type="application/gzip")
    tags = build_tags(settings, root)
    request = cloud_build_request(settings, bucket, name, blob.generation or 0, tags)
    parent = f"projects/{settings.project}/locations/{settings.region}"
    client = build_client(settings)
    with as_image_error("creating the build"):
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
        with as_image_error(f"reading build {name}"):
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
