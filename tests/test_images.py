"""What can be checked about the container images without building them; the images
themselves are proven by `containers/smoke.py`, which `.ci/run` runs after the tests."""

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((REPO / "containers").glob("*/Dockerfile"))
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _run_instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_both_images_have_a_dockerfile() -> None:
    assert [path.parent.name for path in DOCKERFILES] == ["components", "serving"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_images_install_no_development_tools(dockerfile: Path) -> None:
    dev = PROJECT["optional-dependencies"]["dev"]
    dev = [re.split(r"[\s<>=!~\[]", requirement, maxsplit=1)[0] for requirement in dev]
    for run in _run_instructions(dockerfile):
        assert "[dev]" not in run and "--editable" not in run and "install -e" not in run, run
        for name in dev:
            assert name not in run, f"{dockerfile.parent.name} image installs {name}: {run}"


def test_the_wheel_the_images_install_ships_every_module(tmp_path: Path) -> None:
    """The images `pip install` a wheel built from the project, and nothing else of the
    checkout: a package the wheel leaves out (a new subpackage `pyproject.toml` does not
    find) would fail only there, while editable installs keep passing."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    modules = set()
    for package in ("components", "pipelines"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / package, source / package, ignore=ignore)
        modules |= {p.relative_to(source).as_posix() for p in (source / package).rglob("*.py")}
    wheel_dir = tmp_path / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    subprocess.run([*pip_wheel, "-w", str(wheel_dir), str(source)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert modules - shipped == set()


def _build_stage(dockerfile: Path) -> list[str]:
    """The instructions of the Dockerfile's first stage, `FROM ... AS build` up to the next
    FROM (comments aside)."""
    text = dockerfile.read_text()
    start = text.index("FROM python:3.11-slim AS build")
    stage = text[start : text.index("\nFROM ", start + 1)]
    return [line for line in stage.splitlines() if line.strip() and not line.startswith("#")]


def test_both_images_share_one_build_stage() -> None:
    """Instruction for instruction, so the second image's build reuses the first's cached
    layers (one install of the dependencies) and both hold the same versions: a model is
    unpickled by the scikit-learn that pickled it."""
    components, serving = (_build_stage(path) for path in DOCKERFILES)
    assert components == serving
    assert any("pip install" in line for line in components)


def _containers_module(name: str):
    """A script of containers/ (they are not a package), imported."""
    sys.path.insert(0, str(REPO / "containers"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_the_lock_pins_every_dependency_within_pyproject_range() -> None:
    """The images install containers/requirements.lock and then the project with
    `--no-deps`: a dependency missing from the lock, or pinned outside the range
    pyproject.toml allows, would be missing or wrong in the images only."""
    lock = _containers_module("lock")
    pins = lock.read_pins()
    assert pins and all(version and hashes for version, hashes in pins.values()), pins
    for line in PROJECT["dependencies"]:
        requirement = Requirement(line)
        name = lock.normalize(requirement.name)
        assert name in pins, f"{name} is not in the lock: run `python containers/lock.py`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, pyproject.toml wants {requirement}: "
            "run `python containers/lock.py`"
        )


def test_the_lock_was_made_from_pyproject_dependencies() -> None:
    """Any change to the dependencies (one added, a range moved) needs a new lock, even
    one the pins happen to satisfy: the lock records which dependencies it resolved."""
    lock = _containers_module("lock")
    assert lock.recorded_digest() == lock.dependencies_digest(), (
        "pyproject.toml's dependencies changed since containers/requirements.lock was made: "
        "run `python containers/lock.py`"
    )


def test_a_dependency_added_without_relocking_is_caught(tmp_path: Path) -> None:
    lock = _containers_module("lock")
    pyproject = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('    "rich>=13",\n', '    "rich>=13",\n    "tqdm>=4",\n'))
    assert "tqdm" in pyproject.read_text()
    assert lock.dependencies_digest(pyproject) != lock.recorded_digest()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_images_install_the_lock_then_the_project_alone(dockerfile: Path) -> None:
    stage = _build_stage(dockerfile)
    joined = re.sub(r"\\\n", " ", "\n".join(stage)).splitlines()
    installs = [line for line in joined if line.startswith("RUN ") and "pip install" in line]
    assert any("--require-hashes -r requirements.lock" in run for run in installs), installs
    assert "COPY containers/requirements.lock ./" in stage
    # Every other install adds nothing the lock does not pin.
    for run in installs:
        if "requirements.lock" not in run:
            assert "--no-deps" in run, run


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_what_an_image_uninstalls_is_installed(dockerfile: Path) -> None:
    """pip only warns when asked to uninstall what is not installed: a renamed or dropped
    dependency would stay in the image, or a typo would keep a package, unnoticed."""
    from importlib import metadata

    (slim,) = [run for run in _run_instructions(dockerfile) if "--uninstall" in run]
    names = re.search(r"--uninstall ((?:[\w.-]+\s+)+?)--", slim).group(1).split()
    assert names
    installed = {
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in metadata.distributions()
    }
    assert {re.sub(r"[-_.]+", "-", name).lower() for name in names} - installed == set()


def test_the_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """containers/slim.py imports every module the image's code names at build time, so a
    dependency cut from an image fails its build; the lazy imports inside functions (how
    the cloud backends load their clients) are the ones a run would otherwise find."""
    sys.path.insert(0, str(REPO / "containers"))
    try:
        import slim
    finally:
        sys.path.pop(0)
    module = tmp_path / "module.py"
    module.write_text(
        "import json\n"
        "from kfp.dsl import Input\n"
        "def read():\n"
        "    from google.cloud import bigquery\n"
        "    import duckdb\n"
        "    from . import sibling\n"
    )
    assert slim._named_modules(module) == [
        ("json", []),
        ("kfp.dsl", ["Input"]),
        ("google.cloud", ["bigquery"]),
        ("duckdb", []),
    ]
