"""Artifact Registry (Docker repositories) and Cloud Build routes for the Google stand-in
(tests/google_standin.py), answering with the shapes and error words of the v1 REST APIs:

- Artifact Registry: repositories of format DOCKER; docker images named by digest
  (`dockerImages/IMAGE@sha256:...`; a tag there is an invalid argument, as Google says);
  packages with versions (`sha256:...`) and tags; a push with an existing tag moves it to
  the new version, leaving the old version untagged, as Artifact Registry does.
- Cloud Build: `projects.locations.builds.create` answers with a long-running operation
  whose metadata holds the build; the build goes QUEUED -> WORKING (one step a GET) ->
  SUCCESS or FAILURE. Creating refuses a source object that does not exist in Cloud
  Storage (read from the GCS emulator); a `docker build -f FILE` whose FILE is not in the
  source fails its step; once the steps succeed, every name in `images` is pushed to the
  registry above (a name no step built, or a repository that does not exist, fails the
  push) and `results.images` lists each with its digest.

`ArtifactRegistry.image_exists(uri)` answers for a tag or a digest, for the Vertex routes.
IAM is not judged here: every authorised caller may read and push.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from google_standin import Authorize, account_resource, allow_all, error, permission_denied

_REPO = (
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/repositories/(?P<repo>[^/]+)"
)
_PACKAGE = _REPO + r"/packages/(?P<package>[^/]+)"
_IMAGE_URI = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/"
    r"(?P<image>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def _registry_uri(repository: str) -> str:
    """`LOCATION-docker.pkg.dev/PROJECT/REPO` of `projects/PROJECT/locations/LOCATION/...`."""
    _, project, _, location, _, repo = repository.split("/")
    return f"{location}-docker.pkg.dev/{project}/{repo}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


NOT_FOUND = error(404, "NOT_FOUND", "Requested entity was not found.")
INVALID = error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")


@dataclass
class _Version:
    digest: str
    size: int
    time: str


@dataclass
class _Package:
    versions: dict[str, _Version] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class ArtifactRegistry:
    """Docker repositories, their images' versions and tags."""

    def __init__(self, standin, repositories: dict[str, dict[str, Any]] | None = None) -> None:
        """`repositories`: another stand-in's (google_standin.CloudProject, which `setup`
        makes them in and which serves their metadata); by default this one's own."""
        self.packages: dict[tuple[str, str], _Package] = {}
        if repositories is None:
            self.repositories: dict[str, dict[str, Any]] = {}
            standin.route("GET", _REPO, self._get_repository)
        else:
            self.repositories = repositories
        standin.route("GET", _REPO + r"/dockerImages", self._list_images)
        standin.route("GET", _REPO + r"/dockerImages/(?P<image>[^/]+)", self._get_image)
        standin.route("GET", _PACKAGE + r"/tags", self._list_tags)
        standin.route("GET", _PACKAGE + r"/tags/(?P<tag>[^/]+)", self._get_tag)
        standin.route("GET", _PACKAGE + r"/versions", self._list_versions)
        standin.route("GET", _PACKAGE + r"/versions/(?P<version>[^/]+)", self._get_version)

    # --- what a test (or the setup under test) makes ------------------------------------

    def create_repository(self, project: str, location: str, repository: str) -> str:
        name = f"projects/{project}/locations/{location}/repositories/{repository}"
        now = _now()
        self.repositories[name] = {
            "name": name,
            "format": "DOCKER",
            "mode": "STANDARD_REPOSITORY",
            "createTime": now,
            "updateTime": now,
            "registryUri": f"{location}-docker.pkg.dev/{project}/{repository}",
        }
        return name

    def push(self, uri: str, content: bytes = b"", size: int = 1) -> str:
        """Push an image to `LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG` (or by digest);
        its digest is the sha256 of `content` (random when empty). A tag already on another
        version moves to this one. Returns the image by digest; raises LookupError with the
        registry's words when the repository does not exist."""
        match = _IMAGE_URI.fullmatch(uri)
        if match is None:
            raise ValueError(f"not an Artifact Registry image: {uri}")
        repo = self._repo_name(match)
        if repo not in self.repositories:
            raise LookupError(f'name unknown: Repository "{match["repo"]}" not found')
        digest = (
            match["digest"] or "sha256:" + hashlib.sha256(content or uuid.uuid4().bytes).hexdigest()
        )
        package = self.packages.setdefault((repo, match["image"]), _Package())
        package.versions.setdefault(digest, _Version(digest, size, _now()))
        if match["tag"]:
            package.tags[match["tag"]] = digest
        return f"{_registry_uri(repo)}/{match['image']}@{digest}"

    def image_exists(self, uri: str) -> bool:
        """Whether `uri` (by tag, default `latest`, or by digest) names a pushed image."""
        match = _IMAGE_URI.fullmatch(uri)
        if match is None:
            return False
        package = self.packages.get((self._repo_name(match), match["image"]))
        if package is None:
            return False
        if match["digest"]:
            return match["digest"] in package.versions
        return (match["tag"] or "latest") in package.tags

    def tags_of(self, uri_without_tag: str) -> dict[str, str]:
        """Tag -> digest of an image (for assertions)."""
        match = _IMAGE_URI.fullmatch(uri_without_tag)
        return dict(self.packages[(self._repo_name(match), match["image"])].tags)

    @staticmethod
    def _repo_name(match: re.Match[str]) -> str:
        return (
            f"projects/{match['project']}/locations/{match['location']}/repositories/"
            f"{match['repo']}"
        )

    # --- routes ---------------------------------------------------------------------------

    def _repo(self, match: re.Match[str]) -> str | None:
        name = (
            f"projects/{match['project']}/locations/{match['location']}/repositories/"
            f"{match['repo']}"
        )
        return name if name in self.repositories else None

    def _package(self, match: re.Match[str]) -> tuple[str, str, _Package] | None:
        repo = self._repo(match)
        image = unquote(match["package"])
        package = self.packages.get((repo, image)) if repo else None
        return (repo, image, package) if package else None

    def _get_repository(self, _request, match):
        repo = self._repo(match)
        return (200, self.repositories[repo]) if repo else NOT_FOUND

    def _docker_image(self, repo: str, image: str, version: _Version) -> dict[str, Any]:
        package = self.packages[(repo, image)]
        registry = _registry_uri(repo)
        return {
            "name": f"{repo}/dockerImages/{image.replace('/', '%2F')}@{version.digest}",
            "uri": f"{registry}/{image}@{version.digest}",
            "tags": sorted(t for t, d in package.tags.items() if d == version.digest),
            "imageSizeBytes": str(version.size),
            "uploadTime": version.time,
            "mediaType": MEDIA_TYPE,
            "buildTime": version.time,
            "updateTime": version.time,
        }

    def _get_image(self, _request, match):
        repo = self._repo(match)
        image, at, digest = unquote(match["image"]).partition("@")
        if not at or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return INVALID  # a docker image is named by digest only
        package = self.packages.get((repo, image)) if repo else None
        if package is None or digest not in package.versions:
            return NOT_FOUND
        return 200, self._docker_image(repo, image, package.versions[digest])

    def _list_images(self, _request, match):
        repo = self._repo(match)
        if repo is None:
            return NOT_FOUND
        images = [
            self._docker_image(repo, image, version)
            for (owner, image), package in sorted(self.packages.items())
            if owner == repo
            for version in package.versions.values()
        ]
        return 200, {"dockerImages": images} if images else {}

    def _tag(self, repo: str, image: str, tag: str, digest: str) -> dict[str, str]:
        package = f"{repo}/packages/{image.replace('/', '%2F')}"
        return {"name": f"{package}/tags/{tag}", "version": f"{package}/versions/{digest}"}

    def _get_tag(self, _request, match):
        found = self._package(match)
        tag = unquote(match["tag"])
        if found is None or tag not in found[2].tags:
            return NOT_FOUND
        repo, image, package = found
        return 200, self._tag(repo, image, tag, package.tags[tag])

    def _list_tags(self, _request, match):
        found = self._package(match)
        if found is None:
            return NOT_FOUND
        repo, image, package = found
        tags = [self._tag(repo, image, t, d) for t, d in sorted(package.tags.items())]
        return 200, {"tags": tags} if tags else {}

    def _version(self, repo: str, image: str, version: _Version) -> dict[str, Any]:
        package = self.packages[(repo, image)]
        return {
            "name": f"{repo}/packages/{image.replace('/', '%2F')}/versions/{version.digest}",
            "createTime": version.time,
            "updateTime": version.time,
            "relatedTags": [
                self._tag(repo, image, t, d)
                for t, d in sorted(package.tags.items())
                if d == version.digest
            ],
            "metadata": {
                "imageSizeBytes": str(version.size),
                "mediaType": MEDIA_TYPE,
                "buildTime": version.time,
                "name": self._docker_image(repo, image, version)["name"],
            },
        }

    def _get_version(self, _request, match):
        found = self._package(match)
        version = unquote(match["version"])
        if found is None or version not in found[2].versions:
            return NOT_FOUND
        repo, image, package = found
        return 200, self._version(repo, image, package.versions[version])

    def _list_versions(self, _request, match):
        found = self._package(match)
        if found is None:
            return NOT_FOUND
        repo, image, package = found
        versions = [self._version(repo, image, v) for v in package.versions.values()]
        return 200, {"versions": versions} if versions else {}


_BUILDS = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_TERMINAL = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}


@dataclass
class _Build:
    body: dict[str, Any]
    files: dict[str, bytes]
    source: bytes
    ticks: int = 0
    logs: list[str] = field(default_factory=list)


class CloudBuild:
    """Builds in one stand-in, pushing to `registry`. Each GET of a build moves it on one
    step; `storage` is a google-cloud-storage client of the GCS emulator the source is in."""

    def __init__(
        self,
        standin,
        registry: ArtifactRegistry,
        storage: Any,
        *,
        authorize: Authorize = allow_all,
    ) -> None:
        """`authorize` judges the caller (`cloudbuild.builds.create`, and `actAs` on the
        build's own account) and that account: it must read the source object and may push
        to each image's repository, or the build fails as Cloud Build's would."""
        self.registry, self.storage, self.authorize = registry, storage, authorize
        self.builds: dict[str, _Build] = {}
        self.operations: dict[str, str] = {}  # operation name -> build id
        standin.route("POST", _BUILDS + r"/builds", self._create)
        standin.route("GET", _BUILDS + r"/builds/(?P<id>[^/:]+)", self._get)
        standin.route("GET", _BUILDS + r"/operations/(?P<op>[^/:]+)", self._operation)

    def _create(self, request, match):
        from google.cloud.devtools import cloudbuild_v1
        from google.protobuf import json_format

        body = request.json or {}
        try:  # fields Cloud Build does not know are refused, as the API refuses them
            parsed = cloudbuild_v1.Build.wrap(
                json_format.ParseDict(body, cloudbuild_v1.Build.pb(cloudbuild_v1.Build()))
            )
        except json_format.ParseError as exc:
            return error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        parent = f"projects/{match['project']}"
        if not self.authorize(request.member, "cloudbuild.builds.create", parent):
            return error(
                403,
                "PERMISSION_DENIED",
                f"The caller does not have permission ('cloudbuild.builds.create' on {parent}).",
            )
        account = body.get("serviceAccount", "").rsplit("/", 1)[-1]
        if account and not self.authorize(
            request.member, "iam.serviceAccounts.actAs", account_resource(account)
        ):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"generic::invalid_argument: could not resolve service account {account}: "
                "the caller lacks iam.serviceAccounts.actAs on it (or it does not exist)",
            )
        modes = cloudbuild_v1.BuildOptions.LoggingMode
        if account and parsed.options.logging not in (modes.CLOUD_LOGGING_ONLY, modes.NONE):
            return error(
                400,
                "INVALID_ARGUMENT",
                "generic::invalid_argument: if 'build.service_account' is specified, the build "
                "must either (a) specify 'build.logs_bucket', (b) use the REGIONAL_USER_OWNED_"
                "BUCKET build.options.default_logs_bucket_behavior option, or (c) use either "
                "CLOUD_LOGGING_ONLY / NONE logging options",
            )
        if not body.get("steps"):
            return error(400, "INVALID_ARGUMENT", "invalid build: no build steps")
        storage_source = body.get("source", {}).get("storageSource")
        if not storage_source:
            return error(400, "INVALID_ARGUMENT", "invalid build: no source")
        bucket, name = storage_source.get("bucket", ""), storage_source.get("object", "")
        builder = f"serviceAccount:{account}" if account else None
        if account and not self.authorize(
            builder, "storage.objects.get", f"projects/_/buckets/{bucket}"
        ):
            source = f"projects/_/buckets/{bucket}/o/{name}"
            return permission_denied("storage", "storage.objects.get", source, account)
        blob = self.storage.bucket(bucket).get_blob(name)
        generation = storage_source.get("generation")
        if blob is None or (generation and int(generation) != blob.generation):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"could not resolve source: googleapi: Error 404: No such object: "
                f"{bucket}/{name}, notFound",
            )
        source = blob.download_as_bytes()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(source))) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        build_id = str(uuid.uuid4())
        project, location = match["project"], match["location"]
        build = body | {
            "name": f"projects/{project}/locations/{location}/builds/{build_id}",
            "id": build_id,
            "projectId": project,
            "status": "QUEUED",
            "createTime": _now(),
            "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region={location}/"
            f"{build_id}?project={project}",
            "steps": [dict(step) for step in body["steps"]],
        }
        self.builds[build_id] = _Build(build, files, source)
        operation = f"projects/{project}/locations/{location}/operations/{uuid.uuid4().hex}"
        self.operations[operation] = build_id
        return 200, {"name": operation, "metadata": self._metadata(build)}

    @staticmethod
    def _metadata(build: dict[str, Any]) -> dict[str, Any]:
        return {
            "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
            "build": build,
        }

    def _get(self, _request, match):
        found = self.builds.get(match["id"])
        if found is None or not found.body["name"].startswith(
            f"projects/{match['project']}/locations/{match['location']}/"
        ):
            return NOT_FOUND
        self._advance(found)
        return 200, found.body

    def _operation(self, _request, match):
        name = f"projects/{match['project']}/locations/{match['location']}/operations/{match['op']}"
        if name not in self.operations:
            return NOT_FOUND
        build = self.builds[self.operations[name]].body
        answer: dict[str, Any] = {"name": name, "metadata": self._metadata(build)}
        if build["status"] in _TERMINAL:
            answer["done"] = True
            if build["status"] == "SUCCESS":
                answer["response"] = {
                    "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.Build"
                } | build
            else:
                answer["error"] = {"code": 2, "message": f"Build failed; {build['statusDetail']}"}
        return 200, answer

    def _advance(self, found: _Build) -> None:
        build = found.body
        if build["status"] in _TERMINAL:
            return
        found.ticks += 1
        now = _now()
        if build["status"] == "QUEUED":
            build |= {"status": "WORKING", "startTime": now}
            build["timing"] = {"FETCHSOURCE": {"startTime": now, "endTime": now}}
        running = [s for s in build["steps"] if s.get("status") == "WORKING"]
        for index, step in enumerate(build["steps"]):
            if step in running:
                if not self._run_step(found, index, step):
                    return
                continue
            if "status" not in step:
                step |= {"status": "WORKING", "timing": {"startTime": now}}
                return
        self._push(found)

    def _run_step(self, found: _Build, index: int, step: dict[str, Any]) -> bool:
        now = _now()
        step["timing"]["endTime"] = now
        args = step.get("args", [])
        problem = None
        if step.get("name") != "gcr.io/cloud-builders/docker" or args[:1] != ["build"]:
            problem = f"unsupported step {step.get('name')} {args[:1]}"
        else:
            dockerfile = args[args.index("-f") + 1] if "-f" in args else "Dockerfile"
            if dockerfile not in found.files:
                problem = (
                    "unable to prepare context: unable to evaluate symlinks in Dockerfile "
                    f"path: lstat /workspace/{dockerfile}: no such file or directory"
                )
        if problem:
            found.logs.append(problem)
            step["status"] = "FAILURE"
            detail = (
                f'Build step failure: build step {index} "{step.get("name")}" failed: '
                "step exited with non-zero status: 1"
            )
            self._finish(found, "FAILURE", detail, "USER_BUILD_STEP")
            return False
        step["status"] = "SUCCESS"
        # Like a real build, not reproducible: each build's image has a digest of its own.
        content = found.source + found.files[dockerfile] + found.body["id"].encode()
        step["_digest"] = "sha256:" + hashlib.sha256(content).hexdigest()
        step["_names"] = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-t"]
        return True

    def _push(self, found: _Build) -> None:
        build = found.body
        built = {name: s["_digest"] for s in build["steps"] for name in s.get("_names", [])}
        for step in build["steps"]:
            step.pop("_digest", None), step.pop("_names", None)
        missing = [name for name in build.get("images", []) if name not in built]
        if missing:
            detail = f"failed to find one or more images after execution of build steps: {missing}"
            self._finish(found, "FAILURE", detail, "PUSH_FAILED")
            return
        results = []
        now = _now()
        # Pushed as the build's account (none named: the project's default build account,
        # which a new project grants nothing here).
        account = build.get("serviceAccount", "").rsplit("/", 1)[-1]
        builder = f"serviceAccount:{account}" if account else None
        for name in build.get("images", []):
            repository = self.registry._repo_name(_IMAGE_URI.fullmatch(name))
            if not self.authorize(
                builder, "artifactregistry.repositories.uploadArtifacts", repository
            ):
                detail = (
                    f"failed to push {name}: denied: Permission 'artifactregistry.repositories."
                    f"uploadArtifacts' denied on resource {repository} (or it may not exist)"
                )
                self._finish(found, "FAILURE", detail, "PUSH_FAILED")
                return
            try:
                self.registry.push(f"{name}@{built[name]}")  # moves the tag
            except LookupError as exc:
                self._finish(found, "FAILURE", f"failed to push {name}: {exc}", "PUSH_FAILED")
                return
            results.append(
                {
                    "name": name,
                    "digest": built[name],
                    "pushTiming": {"startTime": now, "endTime": now},
                }
            )
        build["results"] = {"images": results, "buildStepImages": [""] * len(build["steps"])}
        build["timing"] |= {
            "BUILD": {"startTime": build["startTime"], "endTime": now},
            "PUSH": {"startTime": now, "endTime": now},
        }
        self._finish(found, "SUCCESS", "", None)

    def _finish(self, found: _Build, status: str, detail: str, failure: str | None) -> None:
        build = found.body
        build |= {"status": status, "finishTime": _now()}
        if detail:
            build["statusDetail"] = detail
        if failure:
            build["failureInfo"] = {"type": failure, "detail": detail}
