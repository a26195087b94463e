"""What can be checked about the container images without building them; the images
themselves are proven by `containers/smoke.py`, which `.ci/run` runs after the tests."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

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
