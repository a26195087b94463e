"""Slim the virtualenv an image copies out of its build stage to what that image runs.

Runs in `containers/*/Dockerfile`, with the virtualenv's Python, after `pip install
--no-compile` of the project: once in the build stage the two images share, for what
either image does without, then in each image's own stage:

    python slim.py --shared
    python slim.py --uninstall DIST... --remove-packages PKG... \
        --scan MODULE... --import MODULE... --scan-env KEY=VALUE... --check MODULE...

`--shared`:
1. removes what no installed code runs: libraries' test suites and type stubs, C and Cython
   sources and headers, pyarrow's Flight and S3 libraries (only `pyarrow.flight` and
   `pyarrow.fs`'s optional S3 support load them), and the Google client libraries' async
   REST transports while aiohttp is not installed (each `rest_asyncio` module raises
   ImportError as it is imported, which its package catches);
2. strips the symbol tables of shared libraries (`strip --strip-unneeded`: the dynamic
   symbols a loader resolves stay), leaving the libraries auditwheel vendored in `*.libs/`
   as they are, and fails if any library that loaded before no longer loads; then links
   files with the same bytes (wheels vendor the same libraries twice) to one copy.

For one image:
1. uninstalls distributions the image's code does not import, and the named top-level
   packages of kept distributions;
2. imports, in a fresh interpreter with the `--scan-env` environment (the one the image's
   code runs in), every `--scan` module (each module of a package) and every module its
   source names, imports inside functions too, and the `--import` modules (what a library
   loads by name at run time): so a missing dependency fails the build rather than a step,
   and byte code is written for what the image runs only (a module never imported keeps
   its source; imported after all, it is compiled then). `--check` modules are imported
   the same way, in the ordinary environment, without writing byte code: what only a local
   run's driver imports, once per run;
3. uninstalls pip and setuptools: nothing installs packages in a running image.
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SITE = Path(sysconfig.get_path("purelib"))
# Directories and files that installed code never reads at run time.
TEST_DIRS = ("tests",)
BUILD_ONLY_SUFFIXES = (".h", ".hpp", ".c", ".cc", ".cpp", ".pxd", ".pyx", ".pxi", ".pyi")
# These ship their unit tests beside the code, as `*_test.py` (scipy.stats has real modules
# named so: the rule is for these packages only).
TESTS_BESIDE_CODE = ("kfp", "kubernetes", "google_cloud_pipeline_components")
PYARROW_OPTIONAL = (
    "_flight.*.so",
    "flight.py",
    "libarrow_flight.so*",
    "libarrow_python_flight.so*",
    "_s3fs.*.so",
    "libarrow_s3.so*",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", action="store_true", help="the build stage's part")
    parser.add_argument("--uninstall", nargs="*", default=[], metavar="DIST")
    parser.add_argument("--remove-packages", nargs="*", default=[], metavar="PKG")
    parser.add_argument("--scan", nargs="*", default=[], metavar="MODULE")
    parser.add_argument("--import", nargs="*", default=[], metavar="MODULE", dest="modules")
    parser.add_argument("--scan-env", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--check", nargs="*", default=[], metavar="MODULE")
    parser.add_argument("--load", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--import-all", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load is not None:
        return _report_loadable(args.load)
    if args.import_all is not None:
        return _import_all(args.import_all, args.modules)
    if args.shared:
        _remove_build_only_files()
        _strip_shared_libraries()
        _link_duplicates()
        return 0
    if not args.scan:
        parser.error("--scan: name the modules the image runs")

    _pip("uninstall", "-y", *args.uninstall)
    for package in args.remove_packages:
        shutil.rmtree(SITE / package)
    scan_env = dict(pair.split("=", 1) for pair in args.scan_env)
    imported = _python("--import-all", *args.scan, "--import", *args.modules, env=scan_env)
    if args.check:
        imported += _python("--import-all", *args.check, env={"PYTHONDONTWRITEBYTECODE": "1"})
    removed = set(args.remove_packages) & {name.split(".")[0] for name in imported}
    if removed:
        raise SystemExit(f"removed packages were imported: {sorted(removed)}")
    _pip("uninstall", "-y", "pip", "setuptools")
    return 0


def _remove_build_only_files() -> None:
    for path in sorted(SITE.rglob("*"), reverse=True):  # children before their parents
        if not path.exists() or path.is_symlink():
            continue
        if path.is_dir() and path.name in TEST_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in BUILD_ONLY_SUFFIXES:
            path.unlink()
    for package in TESTS_BESIDE_CODE:
        for path in (SITE / package).rglob("*_test.py"):
            path.unlink()
    for directory in (SITE / "pyarrow" / "include",):
        shutil.rmtree(directory, ignore_errors=True)
    for pattern in PYARROW_OPTIONAL:
        for path in (SITE / "pyarrow").glob(pattern):
            path.unlink()
    if importlib.util.find_spec("aiohttp") is None:
        for path in (SITE / "google").glob("**/transports/rest_asyncio.py"):
            if "import aiohttp" in path.read_text():
                path.unlink()


def _shared_libraries() -> list[Path]:
    libraries = []
    for path in sorted(SITE.rglob("*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        if any(part.endswith(".libs") for part in path.relative_to(SITE).parts):
            continue
        with open(path, "rb") as handle:
            if handle.read(4) == b"\x7fELF":
                libraries.append(path)
    return libraries


def _strip_shared_libraries() -> None:
    libraries = [str(path) for path in _shared_libraries()]
    before = set(_python("--load", *libraries))
    subprocess.run(["strip", "--strip-unneeded", *libraries], check=True)
    after = set(_python("--load", *libraries))
    if before - after:
        raise SystemExit(f"stripping broke: {sorted(before - after)}")


def _link_duplicates() -> None:
    first: dict[tuple[int, str], Path] = {}
    for path in sorted(SITE.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.stat().st_size < 65536:
            continue
        key = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        if key in first:
            path.unlink()
            os.link(first[key], path)
        else:
            first[key] = path


def _report_loadable(paths: list[str]) -> int:
    """Print which of the libraries the dynamic loader loads (some never load outside
    their package, e.g. for want of an optional system library: they are compared, not
    required)."""
    loaded = []
    for path in paths:
        try:
            ctypes.CDLL(path)
        except OSError:
            continue
        loaded.append(path)
    print(json.dumps(loaded), flush=True)
    os._exit(0)  # some libraries' destructors abort at interpreter exit


def _import_all(scanned: list[str], modules: list[str]) -> int:
    """Import each scanned module (each module of a package) and every module its source
    imports, then the other modules; print what got imported."""
    for name in modules:
        importlib.import_module(name)
    for name in scanned:
        module = importlib.import_module(name)
        source = Path(module.__file__ or "")
        files = sorted(source.parent.rglob("*.py")) if source.name == "__init__.py" else [source]
        for path in files:
            parts = path.relative_to(SITE).with_suffix("").parts
            importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            for named in _named_modules(path):
                _import(named)
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)


def _named_modules(path: Path) -> list[tuple[str, list[str]]]:
    named = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named.append((node.module, [alias.name for alias in node.names]))
    return named


def _import(named: tuple[str, list[str]]) -> None:
    module_name, names = named
    module = importlib.import_module(module_name)
    for name in names:
        # `from package import module` names a submodule, not an attribute.
        submodule = f"{module_name}.{name}"
        if not hasattr(module, name) and hasattr(module, "__path__") and _exists(submodule):
            importlib.import_module(f"{module_name}.{name}")


def _exists(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _python(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run this script's hidden mode in a fresh interpreter; its last line of output."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, __file__, *args]
    done = subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True, env=environment | (env or {})
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # a library's prints come first


if __name__ == "__main__":
    sys.exit(main())
