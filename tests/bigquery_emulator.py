"""The BigQuery emulator (bqemulator, DuckDB-backed REST + Storage Read gRPC) as a local
process, for the `bigquery` test tier.

Its DuckDB pin clashes with ours, so it lives in a virtualenv of its own, made on first use
under `$CHURN_TEST_CACHE` (default `~/.cache/churn-pipelines`) and reused after that. It
runs with a `HOME` of its own holding the spatial extension its start-up installs (copied
from the wheel that ships it: otherwise it downloads it). Anything that keeps it from
starting is raised as `EmulatorUnavailable` with the reason, for the tests to skip on.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VERSION = "1.4.0"
REQUIREMENTS = [
    f"bqemulator=={VERSION}",
    "duckdb==1.5.*",
    "duckdb-extension-spatial==1.5.5",  # not duckdb-ext-spatial: built for DuckDB 1.4
    "numpy",  # it registers UDFs with numpy types and fails to start without it
]
SPATIAL = "v1.5.5"
PROJECT = "churn-test"


class EmulatorUnavailable(Exception):
    """The emulator could not be installed or started; the message says why."""


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    log: Path

    @property
    def environment(self) -> dict[str, str]:
        """What points `components.warehouse.bigquery` at this emulator."""
        return {
            "CHURN_BIGQUERY_API_ENDPOINT": f"http://127.0.0.1:{self.rest_port}",
            "CHURN_BIGQUERY_STORAGE_ENDPOINT": f"http://127.0.0.1:{self.grpc_port}",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "churn-pipelines"
    return Path(os.environ.get("CHURN_TEST_CACHE", default))


def ensure_virtualenv(root: Path | None = None) -> Path:
    """The emulator's virtualenv, made if missing; a marker file written last says it is
    complete, so an install cut short is redone, not trusted."""
    venv = (root or cache_dir()) / f"bqemulator-{VERSION}"
    marker = venv / "installed.txt"
    if marker.exists() and marker.read_text() == "\n".join(REQUIREMENTS):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise EmulatorUnavailable(
                f"cannot install the BigQuery emulator ({' '.join(command[:4])}): "
                + " | ".join(tail)
            )
    marker.write_text("\n".join(REQUIREMENTS))
    return venv


def _emulator_home(venv: Path, home: Path) -> Path:
    """A HOME whose DuckDB extension directory already holds the spatial extension."""
    shipped = list(
        venv.glob(f"lib/python*/site-packages/duckdb_extension_spatial/extensions/{SPATIAL}")
    )
    if not shipped:
        raise EmulatorUnavailable(f"{venv} has no spatial extension under {SPATIAL}")
    target = home / ".duckdb" / "extensions" / SPATIAL / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    for path in shipped[0].rglob("*.duckdb_extension"):
        shutil.copy(path, target / path.name)
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(home: Path, *, timeout: float = 60.0) -> Emulator:
    """Install if needed, then start the emulator on 127.0.0.1 and wait until it answers."""
    venv = ensure_virtualenv()
    rest, grpc = _free_port(), _free_port()
    log = home / "bqemulator.log"
    environment = {**os.environ, "HOME": str(_emulator_home(venv, home))}
    command = [
        str(venv / "bin" / "bqemulator"),
        "start",
        "--rest-port",
        str(rest),
        "--grpc-port",
        str(grpc),
        "--project",
        PROJECT,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=home, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    emulator = Emulator(process, rest, grpc, log)
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{rest}/bigquery/v2/projects/{PROJECT}/datasets"
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise EmulatorUnavailable(
                f"the BigQuery emulator exited with {process.returncode}: " + " | ".join(tail)
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return emulator
        except OSError:
            if time.monotonic() > deadline:
                emulator.stop()
                raise EmulatorUnavailable(
                    f"the BigQuery emulator did not answer on port {rest} within {timeout:.0f}s"
                ) from None
            time.sleep(0.2)


if __name__ == "__main__":
    # `.ci/run` makes the virtualenv up front, so its install shows in CI's log on its own.
    try:
        print(f"BigQuery emulator virtualenv: {ensure_virtualenv()}")
    except EmulatorUnavailable as exc:
        print(f"{exc}; the bigquery tests will be skipped", file=sys.stderr)
