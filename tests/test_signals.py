"""Stopping the CLI: SIGINT, SIGTERM and SIGHUP, in the foreground or started in the
background by a script, stop a local run's whole process tree within seconds, record the
run as interrupted with the step it had got to, print one line and exit 128 + the signal;
a re-run starts at once. `serve` takes its model server down however it is stopped, its
own death included. A step that outlives its stopped run cannot change the registry."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.data.sample_data import generate_customers
from components.errors import RegistryError
from components.registry import LocalRegistry
from components.registry.live_run import LIVE_RUN_VARIABLE, end_run, live_run
from pipelines.process_tree import descendants
from pipelines.runner import list_runs

ROOT = Path(__file__).resolve().parents[1]
# The step a stopped training run is stopped in: one that runs for seconds.
STEP_TASK, STEP_NAME = "train-candidates", "4. Train candidates and select"


def _running(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie is not: it has ended, unreaped)."""
    alive = set()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] != "Z":
            alive.add(pid)
    return alive


def _train_until_step(home: Path, source: Path, config: Path, task: str, *, background: bool):
    """A `submit.py train` started as a user or a script would (`background`: with SIGINT
    ignored, as a non-interactive shell starts `cmd &`), returned once it runs `task`, with
    the processes below it then."""
    command = [
        sys.executable, str(ROOT / "submit.py"), "train", "--home", str(home), "--local",
        "--config", str(config), "--source", str(source), "--cv-folds", "2",
        "--candidates-per-family", "1",
    ]  # fmt: skip

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    run = subprocess.Popen(
        command,
        cwd=home.parent,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so a failing test can still end what it started
        preexec_fn=ignore_sigint if background else None,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        logs = list((home / "runs").glob("pending-*.log"))
        if logs and f"'{task}'" in logs[0].read_text(errors="replace") and descendants(run.pid):
            break
        time.sleep(0.05)
    assert run.poll() is None, run.communicate()
    tree = descendants(run.pid)
    assert tree, "the run has no step process to stop"
    return run, tree


def _stop(run: subprocess.Popen, stop: signal.Signals, tree: set[int]) -> tuple[str, float]:
    started = time.monotonic()
    run.send_signal(stop)
    try:
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    seconds = time.monotonic() - started
    # The stopped steps are the run's own children or were adopted by it: gone with it.
    deadline = time.monotonic() + 5
    while _running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(tree), f"step processes outlived the stopped run: {_running(tree)}"
    return stderr, seconds


@pytest.mark.slow
def test_a_stopped_run_stops_its_steps_is_recorded_and_a_rerun_starts_at_once(
    tmp_path: Path, no_config: Path, reliability
) -> None:
    home, source = tmp_path / "home", tmp_path / "customers.csv"
    generate_customers(1_200, seed=5).to_csv(source, index=False)
    # SIGTERM in a step busy for seconds; then the re-run, started as a script starts it,
    # gets SIGINT as soon as its first step starts (recorded in whichever step it got to).
    cases = [(signal.SIGTERM, False, STEP_TASK), (signal.SIGINT, True, "ingest")]
    errors = []
    for stop, background, task in cases:
        run, tree = _train_until_step(home, source, no_config, task, background=background)
        stderr, seconds = _stop(run, stop, tree)

        assert run.returncode == 128 + stop, stderr
        assert seconds < 10, f"stopping took {seconds:.1f}s"
        assert "Traceback" not in stderr, stderr
        line = stderr.strip().splitlines()[-1]
        stopped = re.fullmatch(
            rf"interrupted: run \S+ (interrupted by {stop.name} in step "
            r"(\d\. [^;]+)); listed by `python submit\.py runs`",
            line,
        )
        assert stopped, stderr
        errors.append(stopped[1])
        where = "started in the background, SIGINT ignored" if background else "foreground"
        reliability.record(
            "fault",
            "signals",
            f"{stop.name} to `train` ({where}) in step {stopped[2]}",
            outcome="handled",
        )

    assert errors[0].endswith(f"in step {STEP_NAME}")
    records = list_runs(home)
    assert [r.status for r in records] == ["interrupted", "interrupted"]
    assert [r.error for r in records] == errors[::-1]
    assert records[-1].failed_step == STEP_TASK and records[0].failed_step
    assert not list((home / "runs").glob("pending-*")), "a stopped run left its pending log"
    assert not list((home / "runs").glob("*.live")), "a stopped run left its live marker"
    assert LocalRegistry(home / "registry").versions() == [], "a stopped run registered"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    """Whether something listens on the port (a fresh socket per try: one whose connect
    failed is not reused)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_tied_server_ends_when_the_process_that_started_it_is_killed(reliability) -> None:
    """`serve` starts its model server tied to itself (`tied_command`): SIGKILL, which no
    handler sees, must not leave the server listening. (Stopping `serve` by SIGINT or
    SIGTERM is tests/test_serving.py's; the model server is a slow start, so a small HTTP
    server stands in for it here.)"""
    port = _free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from components.serving.tied import tied_command\n"
            "child = subprocess.Popen(tied_command('http.server', '--bind', '127.0.0.1', "
            f"'{port}'), stderr=subprocess.DEVNULL)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            assert time.monotonic() < deadline, "the tied server never listened"
            assert _running({server}), "the tied server ended before listening"
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _running({server}) and time.monotonic() < deadline:
            time.sleep(0.05)
        survived = bool(_running({server}))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)

    assert not survived, "the server outlived the process that started it"
    assert not _answers(port), "the port still answers"
    reliability.record("fault", "signals", "SIGKILL to the process serving", outcome="handled")


def _model_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "fitted"
    directory.mkdir()
    (directory / "model.joblib").write_bytes(b"a model")
    return directory


def _promote(registry: LocalRegistry, directory: Path):
    return registry.register_as_champion(
        directory,
        replacing=registry.champion().version if registry.champion() else None,
        best_model="logistic_regression",
        threshold=0.5,
        metrics={"roc_auc": 0.8},
        data_fingerprint="f",
        run_id="r",
        promotion_reason="better",
    )


def test_a_step_that_outlives_its_stopped_run_cannot_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability
) -> None:
    """The registration step of a run stopped (or killed outright) must not move the
    champion: its run's live marker is checked under the registry lock."""
    registry = LocalRegistry(tmp_path / "registry")
    directory = _model_directory(tmp_path)
    marker = tmp_path / "run.live"
    with live_run(marker):
        assert _promote(registry, directory).promoted  # the run is live: it may
        end_run()  # the runner is stopping it
        with pytest.raises(RegistryError, match=r"has stopped: refusing to change the registry"):
            _promote(registry, directory)
    # Its runner died outright: the marker is there, but no process holds its lock.
    marker.touch()
    monkeypatch.setenv(LIVE_RUN_VARIABLE, str(marker))
    with pytest.raises(RegistryError, match=r"has stopped: refusing to change the registry"):
        _promote(registry, directory)
    with pytest.raises(RegistryError, match=r"has stopped"):
        registry.promote(1)

    assert registry.versions() == [1]
    assert registry.champion().version == 1
    assert json.loads((registry.root / "aliases.json").read_text()) == {"champion": 1}
    for how in ("stopped", "killed outright"):
        reliability.record(
            "fault",
            "registry",
            f"registration step outliving its run ({how}) tries to promote",
            outcome="refused",
        )


def test_orphans_of_a_step_that_died_first_are_still_stopped(reliability) -> None:
    """A step that dies leaves its children (a worker pool) to whoever adopts them: the
    runner adopts them (a child subreaper), so stopping the run still finds them."""
    script = (
        "import subprocess, time\n"
        "from pipelines.process_tree import adopt_orphans, descendants, stop_tree\n"
        "adopt_orphans()\n"
        # A 'step' that starts two workers and dies at once, leaving them orphaned.
        "subprocess.run(['sh', '-c', 'sleep 30 & sleep 30 & exit 0'])\n"
        "orphans = descendants()\n"
        "stopped = stop_tree(grace=1.0)\n"
        "print(len(orphans), sorted(orphans) == sorted(stopped), descendants())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20
    )
    assert done.stdout.split() == ["2", "True", "set()"], done.stderr
    reliability.record(
        "fault", "signals", "run stopped after a step died, leaving workers", outcome="handled"
    )
