"""Build both container images with podman and prove that they work, on a machine with no
Docker engine (see DESIGN.md, "Container images").

    python containers/smoke.py                 # install tools, make the base, build, smoke-test
    python containers/smoke.py --skip-build    # smoke-test the images already built
    python containers/smoke.py --prepare       # only install the tools and make the base

It runs as root (CI's clean machine): it installs podman, runc, debootstrap and the CNI
plugins with apt if they are missing, and makes a stand-in for `python:3.11-slim` with
debootstrap once (Docker Hub is unreachable here). Then:

1. builds `containers/components/Dockerfile` and `containers/serving/Dockerfile`;
2. component image, with no network: runs the training pipeline under `kfp.local` on
   generated customers with the project installed in the image (it checks the code is the
   installed package, not a checkout), checks that the run registered a model, then runs the
   scoring pipeline on other customers: those are the batch scores;
3. serving image, serving that registered version: its health route answers, and a
   Vertex-format predict request and one shaped as Vertex batch prediction sends BigQuery
   rows (`instance_type="object"`) both get, per customer, the batch scores;
4. prints both image sizes and the time of every phase.

The host side needs only the standard library; the project's code runs in the images.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "docker.io/library/python:3.11-slim"
IMAGES = {
    "components": "localhost/churn-pipelines/components:smoke",
    "serving": "localhost/churn-pipelines/serving:smoke",
}
# On every image a build makes, its build stages too: what a rebuild leaves untagged can
# then be removed without touching anyone else's images.
BUILD_LABEL = "churn-pipelines.smoke-build=1"
APT_PACKAGES = ("podman", "runc", "debootstrap", "containernetworking-plugins")
# crun and podman's default limits fail in this sandbox (DESIGN.md).
RUN_FLAGS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")
# In the container: this script, and the directory the runs write to.
SCRIPT_MOUNT = "/smoke-script"
WORK_MOUNT = "/smoke"
TRAIN_ROWS = 2_000
SCORE_ROWS = 40
PROBABILITY_TOLERANCE = 1e-9


class SmokeError(Exception):
    """A check failed; the message is the one line the CLI prints."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--skip-install", action="store_true", help="do not apt-get install missing tools"
    )
    parser.add_argument(
        "--skip-build", action="store_true", help="smoke-test the images already built"
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only install the tools and make the base image (.ci/run does this while the "
        "tests' environments install)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where runs, requests and logs go (default: a new temporary directory, "
        "removed after a successful run)",
    )
    parser.add_argument("--inside-image", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside_image:
        return _inside_component_image(args.inside_image)
    try:
        return _smoke(args)
    except SmokeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _smoke(args: argparse.Namespace) -> int:
    started = time.monotonic()
    timings: dict[str, float] = {}
    keep = args.work_dir is not None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="churn-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    # The images run as an unprivileged user, which writes its runs here.
    work.chmod(0o777)
    with _timed("tools", timings):
        if not args.skip_install:
            _install_tools()
        _require_tools()
    with _timed("base image", timings):
        _ensure_base_image(work)
    if args.prepare:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    if not args.skip_build:
        for name in IMAGES:
            with _timed(f"build {name}", timings):
                _build(name, work / f"build-{name}.log")
        # The images this build replaced, and the build stages no image refers to now.
        _podman("image", "prune", "--force", "--filter", f"label={BUILD_LABEL}")
    sizes = {name: _image_size(image) for name, image in IMAGES.items()}
    for name, size in sizes.items():
        print(f"image {IMAGES[name]}: {size / 1e6:,.0f} MB")
    with _timed("smoke components", timings):
        trained = _smoke_component_image(work)
    with _timed("smoke serving", timings):
        _smoke_serving_image(work, trained)
    total = time.monotonic() - started
    record = {"seconds": timings | {"total": round(total, 1)}, "image_bytes": sizes}
    (work / "smoke.json").write_text(json.dumps(record, indent=2))
    print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in record["seconds"].items()))
    print("both images passed the smoke test")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


@contextlib.contextmanager
def _timed(phase: str, timings: dict[str, float]) -> Iterator[None]:
    print(f"== {phase}", flush=True)
    clock = time.monotonic()
    yield
    timings[phase] = round(time.monotonic() - clock, 1)
    print(f"   {phase}: {timings[phase]:.0f}s", flush=True)


# --- tools and the stand-in base image ----------------------------------------------------


def _install_tools() -> None:
    missing = [p for p in APT_PACKAGES if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SmokeError(f"{', '.join(missing)} missing: run as root or install them with apt")
    print(f"   apt-get install {' '.join(missing)}", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], "apt-get update", env=env)
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        "apt-get install",
        env=env,
    )


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def _require_tools() -> None:
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            raise SmokeError(f"{tool} is not installed (apt-get install {' '.join(APT_PACKAGES)})")


def _ensure_base_image(work: Path) -> None:
    """Docker Hub is unreachable here: a Debian bookworm root file system with Python 3.11
    stands in for `python:3.11-slim`. It proves the Dockerfile steps and the app in the
    image, not the upstream base layer."""
    if _podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        print(f"   {BASE_IMAGE} exists", flush=True)
        return
    rootfs = work / "rootfs"
    packages = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd"
    print(f"   debootstrap bookworm (log: {work / 'debootstrap.log'})", flush=True)
    with open(work / "debootstrap.log", "wb") as log:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", rootfs],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise SmokeError(f"debootstrap failed: {_tail(work / 'debootstrap.log')}")
    # pip installs into the system Python, as in the official image.
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    # TLS to the package registries is re-signed on these machines: trust what the host does.
    for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
    _run(["chroot", str(rootfs), "update-ca-certificates"], "update-ca-certificates")
    # What debian:bookworm-slim, under python:3.11-slim, leaves out too: the image sizes
    # measured here should be the Dockerfiles' doing, not the stand-in's.
    leftovers = ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*")
    leftovers += ("usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*")
    for pattern in leftovers:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [*_PODMAN, "import", "--change", "ENV LANG=C.UTF-8", "-", BASE_IMAGE],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
    )
    tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise SmokeError(f"podman import of the base image failed: {imported.stderr.strip()}")
    shutil.rmtree(rootfs, ignore_errors=True)


# --- podman --------------------------------------------------------------------------------

_PODMAN = ("podman", "--storage-driver", "overlay", "--runtime", "runc")


def _podman(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*_PODMAN, *args], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SmokeError(f"podman {args[0]} failed: {detail[-1] if detail else 'no output'}")
    return result


_STEP = re.compile(r"(\[\d+/\d+\] )?STEP ")  # "[2/2] STEP 3/8: ..." in a multi-stage build


def _build(name: str, log_path: Path) -> None:
    """Build one image from the repository root, printing its STEP lines."""
    command = [
        *_PODMAN,
        "build",
        "--isolation",
        "chroot",
        "--pull=never",
        "--label",
        BUILD_LABEL,
        "-f",
        str(REPO / "containers" / name / "Dockerfile"),
        "-t",
        IMAGES[name],
        str(REPO),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if _STEP.match(line):
                print(f"   {line.rstrip()[:110]}", flush=True)
        process.wait()
    if process.returncode != 0:
        raise SmokeError(f"building the {name} image failed: {_tail(log_path)} (log: {log_path})")


def _image_size(image: str) -> int:
    result = _podman("image", "inspect", "--format", "{{.Size}}", image, check=False)
    if result.returncode != 0:
        raise SmokeError(f"image {image} does not exist: build it (drop --skip-build)")
    return int(result.stdout.strip())


# --- component image -----------------------------------------------------------------------


def _smoke_component_image(work: Path) -> dict[str, Any]:
    """Train and batch-score inside the component image; return what the run reported."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    log_path = work / "component-run.log"
    command = [
        *_PODMAN,
        "run",
        "--rm",
        *RUN_FLAGS,
        # Nothing may be installed at run time: the steps get no network at all.
        "--network",
        "none",
        "-v",
        f"{Path(__file__).resolve().parent}:{SCRIPT_MOUNT}:ro",
        "-v",
        f"{home}:{WORK_MOUNT}",
        # The image's own working directory, as on Vertex: steps run `python -m`, so a
        # source tree there would be imported instead of the installed package.
        IMAGES["components"],
        "python",
        f"{SCRIPT_MOUNT}/{Path(__file__).name}",
        "--inside-image",
        WORK_MOUNT,
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if line.startswith("   "):
                print(line.rstrip(), flush=True)
        process.wait()
    if process.returncode != 0:
        raise SmokeError(f"the component image failed its run: {_tail(log_path)} (log: {log_path})")
    return json.loads((home / "result.json").read_text())


def _inside_component_image(work: Path) -> int:
    """Runs in the component image: train, check the registration, batch-score other
    customers, and write the two predict request bodies for the serving image."""
    import components
    from components.data.sample_data import generate_customers
    from components.settings import Settings
    from pipelines.compiling import build_pipeline
    from pipelines.runner import run_locally

    scoring_pipeline = build_pipeline("scoring", Settings())
    training_pipeline = build_pipeline("training", Settings())

    package = Path(components.__file__).resolve()
    if not {"site-packages", "dist-packages"} & set(package.parts):
        print(f"error: components imported from {package}, not the installed package")
        return 1
    print(f"   project imported from {package.parent}", flush=True)

    def on_step(step: str, event: str, seconds: float, detail: str) -> None:
        # run_locally captures stdout into the run's log.
        if event in ("succeeded", "failed"):
            print(f"   {event:9} {step} ({seconds:.1f}s)", file=sys.stderr, flush=True)

    settings = Settings(home=work)
    source = work / "customers.csv"
    generate_customers(n_rows=TRAIN_ROWS, seed=7).to_csv(source, index=False)
    training = run_locally(
        training_pipeline,
        {
            "source_uri": str(source),
            "registry_uri": settings.registry_uri,
            "invalid_row_tolerance": settings.invalid_row_tolerance,
            "test_size": settings.test_size,
            "seed": settings.seed,
            "cv_folds": 2,
            "candidates_per_family": 1,
            "search_budget_seconds": 10.0,
            "promotion_metric": settings.promotion_metric,
            "promotion_margin": settings.promotion_margin,
            "promotion_floor": settings.promotion_floor,
        },
        home=work,
        on_step=on_step,
    )
    if training.status != "succeeded" or not training.summary:
        print(f"error: training failed in {training.failed_step}: {training.error}")
        return 1
    version = int(training.summary["model_version"])
    model_dir = Path(settings.registry_uri) / f"v{version:04d}"
    if not any(model_dir.glob("*.joblib")) or not (model_dir / "version.json").is_file():
        print(f"error: training reported model version {version}, but {model_dir} is empty")
        return 1
    print(f"   registered model v{version} ({training.summary['best_model']})", flush=True)

    rows = generate_customers(n_rows=SCORE_ROWS, seed=8, messy=False)
    rows_path = work / "score-customers.csv"
    rows.to_csv(rows_path, index=False)
    scoring = run_locally(
        scoring_pipeline,
        {
            "source_uri": str(rows_path),
            "registry_uri": settings.registry_uri,
            "output_uri": f"duckdb://{work / 'warehouse.duckdb'}?table=churn_predictions",
            "model_ref": str(version),
            "export_dir": str(work / "predictions"),
            "workers": 1,
        },
        home=work,
        on_step=on_step,
    )
    if scoring.status != "succeeded" or not scoring.summary:
        print(f"error: scoring failed in {scoring.failed_step}: {scoring.error}")
        return 1
    if scoring.summary["rows"]["scored"] != SCORE_ROWS:
        print(f"error: batch scoring scored {scoring.summary['rows']} of {SCORE_ROWS} rows")
        return 1

    records = [
        {k: (None if _missing(v) else v) for k, v in r.items()} for r in rows.to_dict("records")
    ]
    (work / "online-request.json").write_text(json.dumps({"instances": records}))
    (work / "batch-request.json").write_text(json.dumps({"instances": _as_bigquery(records)}))
    result = {
        "model_version": version,
        "model_dir": str(model_dir.relative_to(work)),
        "predictions_csv": str(Path(scoring.summary["exports"]["predictions"]).relative_to(work)),
    }
    (work / "result.json").write_text(json.dumps(result))
    return 0


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_bigquery(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as Vertex batch prediction sends a BigQuery table with
    `instance_type="object"`: each row one JSON object keyed by column name, every column of
    the table (no `included_fields`), the label and columns outside the contract included.

    No `key_field`: batch prediction leaves the key field out of the instance it sends, and
    the server needs `customerID` in it. How batch prediction writes INT64 values is not
    documented; BigQuery's own JSON form is a string, so this request sends integers as
    strings while the online request sends them as numbers: both must score the same.
    """
    shaped = []
    for record in records:
        row = {
            k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in record.items()
        }
        row["loaded_at"] = "2026-12-01T00:00:00Z"
        shaped.append(row)
    return shaped


# --- serving image -------------------------------------------------------------------------


def _smoke_serving_image(work: Path, trained: dict[str, Any]) -> None:
    home = work / "home"
    port = _free_port()
    name = f"churn-smoke-serving-{os.getpid()}"
    _podman(
        "run",
        "--detach",
        "--name",
        name,
        *RUN_FLAGS,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-v",
        f"{home / trained['model_dir']}:/model:ro",
        "-e",
        "AIP_STORAGE_URI=/model",
        IMAGES["serving"],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, name)
        print(f"   {url}/health answers", flush=True)
        batch = _batch_scores(home / trained["predictions_csv"])
        for kind in ("online", "batch"):
            body = (home / f"{kind}-request.json").read_bytes()
            served = _post(f"{url}/predict", body)
            _check_scores(kind, json.loads(body)["instances"], served, batch, trained)
            print(f"   {kind}-shaped request: {len(batch)} customers, batch scores", flush=True)
    except SmokeError:
        logs = _podman("logs", "--tail", "20", name, check=False)
        (work / "serving.log").write_text(logs.stdout + logs.stderr)
        raise
    finally:
        _podman("rm", "--force", name, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, container: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        state = _podman("inspect", "--format", "{{.State.Status}}", container, check=False)
        if state.stdout.strip() not in ("running", "created", "configured"):
            logs = _podman("logs", "--tail", "5", container, check=False)
            last = (logs.stdout + logs.stderr).strip().splitlines()
            raise SmokeError(f"serving container stopped: {last[-1] if last else 'no output'}")
        time.sleep(0.5)
    raise SmokeError(f"serving container did not answer {url}/health within {timeout:.0f}s")


def _post(url: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SmokeError(f"POST {url} answered {exc.code}: {exc.read()[:200]!r}") from None


def _batch_scores(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def _check_scores(
    kind: str,
    instances: list[dict[str, Any]],
    served: dict[str, Any],
    batch: dict[str, dict[str, str]],
    trained: dict[str, Any],
) -> None:
    predictions = served.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise SmokeError(f"{kind} request: expected {len(instances)} predictions, got {served}")
    for prediction in predictions:
        customer = prediction.get("customer_id")
        if "error" in prediction:
            raise SmokeError(f"{kind} request: customer {customer}: {prediction['error']}")
        expected = batch.get(customer)
        if expected is None:
            raise SmokeError(f"{kind} request: customer {customer} has no batch score")
        difference = abs(float(expected["churn_probability"]) - prediction["churn_probability"])
        if difference > PROBABILITY_TOLERANCE:
            raise SmokeError(
                f"{kind} request: customer {customer} scored {prediction['churn_probability']}"
                f", batch scored {expected['churn_probability']}"
            )
        same_call = (
            str(prediction["churn_predicted"]).lower() == expected["churn_predicted"].lower()
        )
        if not same_call or prediction["risk_tier"] != expected["risk_tier"]:
            raise SmokeError(f"{kind} request: customer {customer}: {prediction} vs {expected}")
        if int(prediction["model_version"]) != trained["model_version"]:
            raise SmokeError(f"{kind} request: served model version {prediction['model_version']}")


# --- helpers --------------------------------------------------------------------------------


def _run(command: list[str], what: str, **kwargs: Any) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SmokeError(f"{what} failed: {detail[-1] if detail else 'no output'}")


def _tail(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no output"


if __name__ == "__main__":
    sys.exit(main())
