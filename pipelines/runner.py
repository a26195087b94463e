"""Run a pipeline on this machine under `kfp.local`, with per-step progress and a record.

KFP's local runner prints every step's logs to stdout. We capture them into the run's log
file instead, turn its "Executing task" / "finished with status" lines into progress
events, and pick out the project's own error line (`components.errors.XError: ...`) from a
failed step, so the CLI can show one clear line instead of a wall of logs.
"""

import contextlib
import io
import json
import re
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kfp import local

from components.local_files import write_whole
from components.registry.live_run import end_run, live_run
from pipelines.process_tree import adopt_orphans, stop_tree

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_PROGRESS = re.compile(r"progress: (?P<detail>.+)$")
_PROJECT_ERROR = re.compile(r"components\.errors\.(?P<kind>\w+): (?P<message>.+)$")
_ANY_ERROR = re.compile(r"^\s*(?P<kind>[A-Za-z_.]*(?:Error|Exception)): (?P<message>.+)$")

StepEvent = Callable[[str, str, float, str], None]
"""Called with (step name, "started" | "progress" | "succeeded" | "failed", seconds since the
step started, detail: a step's own `progress: ...` log text for "progress", else "")."""


@dataclass
class RunRecord:
    """What `submit.py runs` lists: one finished, failed or interrupted local run (an
    interrupted one's `failed_step` is the step it had got to)."""

    run_id: str
    pipeline: str
    status: str
    started_at: str
    seconds: float
    log: str
    summary: dict[str, Any] | None = None
    error: str | None = None
    failed_step: str | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    """What the run's publish steps changed (output, as-of date, rows, CSV files), recorded
    even when a later step failed."""


class _LogTap(io.TextIOBase):
    """A stdout stand-in that writes to the log file and reports step events."""

    def __init__(self, log_file: io.TextIOBase, on_step: StepEvent, pipeline_root: Path) -> None:
        self._log = log_file
        self._on_step = on_step
        # Every step's executor input names its output files under <root>/<run id>/: the
        # first one tells this run its id (the newest folder may be another run's).
        self._run_dir = re.compile(re.escape(f'"{pipeline_root}/') + r'(?P<run>[^/"]+)/')
        self.run_id: str | None = None
        self._partial = ""
        self._step_started: dict[str, float] = {}
        self._current: str | None = None
        self.step_seconds: dict[str, float] = {}
        self.error_lines: list[tuple[str, str, bool]] = []
        self.failed_step: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._scan(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()

    def _scan(self, line: str) -> None:
        if self.run_id is None and (run_dir := self._run_dir.search(line)):
            self.run_id = run_dir["run"]
        if started := _STARTED.search(line):
            task = self._current = started["task"]
            self._step_started[task] = time.perf_counter()
            self._on_step(task, "started", 0.0, "")
        elif finished := _FINISHED.search(line):
            task = finished["task"]
            seconds = time.perf_counter() - self._step_started.get(task, time.perf_counter())
            self.step_seconds[task] = round(seconds, 2)
            succeeded = finished["status"] == "SUCCESS"
            if not succeeded:
                self.failed_step = task
            self._on_step(task, "succeeded" if succeeded else "failed", seconds, "")
        elif (progress := _PROGRESS.search(line)) and self._current:
            seconds = time.perf_counter() - self._step_started[self._current]
            self._on_step(self._current, "progress", seconds, progress["detail"].strip())
        elif project := _PROJECT_ERROR.search(line):
            self.error_lines.append((project["kind"], project["message"].strip(), True))
        elif other := _ANY_ERROR.match(line):
            self.error_lines.append((other["kind"], other["message"].strip(), False))

    @property
    def last_step(self) -> str | None:
        """The step started last: where a run that was stopped had got to."""
        return self._current

    def error_line(self) -> str | None:
        """The project's own error if a step raised one, else the last exception seen."""
        project = [e for e in self.error_lines if e[2]]
        if project:
            return project[-1][1]
        if self.error_lines:
            kind, message, _ = self.error_lines[-1]
            return f"{kind}: {message}"
        return None


def run_locally(
    pipeline_func: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    home: Path,
    on_step: StepEvent,
) -> RunRecord:
    """Run `pipeline_func` under kfp.local's subprocess runner in this environment.

    Artifacts go under `<home>/pipeline_root/<run id>/`, the log and the run record under
    `<home>/runs/`. Returns the record; a failed run has `status == "failed"` and `error`.

    Interrupted (KeyboardInterrupt, or a stop signal raised as one: `interrupt`), it stops
    every process the run started, records the run as `interrupted` with the step it had
    got to, and raises the interrupt again.
    """
    pipeline_root = home / "pipeline_root"
    runs_dir = home / "runs"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root.resolve()),
        raise_on_error=True,
    )
    # Both warnings are expected here: display names and images only matter on Vertex.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image")
    # Tasks inside dsl.If branches live in their branch's DAG, not the root's.
    spec = pipeline_func.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    display_names = {name: task.task_info.name for dag in dags for name, task in dag.tasks.items()}

    def on_task(task: str, event: str, seconds: float, detail: str) -> None:
        on_step(display_names.get(task, task), event, seconds, detail)

    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    log_path = runs_dir / f"pending-{started_at:%Y%m%d-%H%M%S-%f}.log"
    interrupted: KeyboardInterrupt | None = None
    adopt_orphans()
    with (
        open(log_path, "w", encoding="utf-8") as log_file,
        live_run(log_path.with_suffix(".live")),
    ):
        tap = _LogTap(log_file, on_task, pipeline_root.resolve())
        with contextlib.redirect_stdout(tap):
            try:
                task = pipeline_func(**arguments)
                outcome, error = "succeeded", None
            except RuntimeError as exc:
                task, outcome = None, "failed"
                error = tap.error_line() or str(exc)
            except KeyboardInterrupt as exc:  # Ctrl-C, or a stop signal (`interrupt`)
                # No step may promote from here on, then none may run on.
                end_run()
                stop_tree()
                task, outcome, interrupted = None, "interrupted", exc
                signum = getattr(exc, "signum", signal.SIGINT)
                error = f"interrupted by {signal.Signals(signum).name}"
                if tap.last_step:
                    error += f" in step {display_names.get(tap.last_step, tap.last_step)}"
        tap.flush()
    run_id = tap.run_id or log_path.stem.removeprefix("pending-")
    final_log = log_path.rename(runs_dir / f"{run_id}.log")
    summary = None
    if task is not None:
        summary = json.loads(Path(task.output.path).read_text())
    published = _published(pipeline_root / run_id)
    if error is not None and published:
        changed = "; ".join(f"{p['output']} for {p['as_of_date']}" for p in published)
        error = f"{error} (after publishing {changed})"
    record = RunRecord(
        run_id=run_id,
        pipeline=getattr(pipeline_func, "name", str(pipeline_func)),
        status=outcome,
        started_at=started_at.isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - clock, 2),
        log=str(final_log),
        summary=summary,
        error=error,
        failed_step=tap.last_step if interrupted else tap.failed_step,
        step_seconds=tap.step_seconds,
        published=published,
    )
    write_whole(runs_dir / f"{run_id}.json", json.dumps(asdict(record), indent=2))
    if interrupted is not None:
        interrupted.detail = f"run {run_id} {error}; listed by `python submit.py runs`"  # type: ignore[attr-defined]
        raise interrupted
    return record


def _published(run_root: Path) -> list[dict[str, Any]]:
    """The results of the run's publish steps that finished (kfp.local writes each task's
    outputs under `<run root>/<task>/`; a branch's copy of a step has a numbered name)."""
    return [
        json.loads(path.read_text())
        for path in sorted(run_root.glob("publish-predictions*/published"))
        if path.is_file()
    ]


def list_runs(home: Path) -> list[RunRecord]:
    """Local run records, newest first. A record that cannot be read (a run killed while
    writing it, a file edited by hand) is listed as `unreadable` rather than hiding the
    others."""
    records = []
    for path in (home / "runs").glob("*.json"):
        if path.is_file():
            try:
                records.append(RunRecord(**json.loads(path.read_text(encoding="utf-8"))))
            except (ValueError, TypeError) as exc:
                records.append(_unreadable(path, exc))
    return sorted(records, key=lambda r: r.started_at, reverse=True)


def _unreadable(path: Path, exc: Exception) -> RunRecord:
    started = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return RunRecord(
        run_id=path.stem,
        pipeline="",
        status="unreadable",
        started_at=started,
        seconds=0.0,
        log=str(path.with_suffix(".log")),
        error=f"run record {path} cannot be read: {exc}",
    )
