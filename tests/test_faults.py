"""Faults injected into real runs of `submit.py score`: SIGKILL at moments picked by phase
and delay, then the same date run again; a full or read-only file system under the
warehouse, the CSV exports, the pipeline root and the registry; two runs at once on one
home. Afterwards every prediction is in the table and its CSV file exactly once, both hold
the same run's rows, and a refused run said why in one line.

Each case is recorded for the reliability report (tests/reliability.py), with the rows lost
and duplicated measured by reading the table and the CSV files back.

Full disks are tmpfs mounts of a few MiB, filled up (ENOSPC), and read-only ones the same
mounts remounted read-only (EROFS): both need root with the right to mount, and are skipped
elsewhere. Unwritable folders (chmod 555, EACCES) are tried where permission bits apply:
not under root, which ignores them (and here may not run the project's Python as another
user: the interpreter lives under /root).
"""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import settings

from components.data.sample_data import generate_customers
from components.errors import RegistryError
from components.registry import LocalRegistry
from components.scoring.publish import export_stem

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-26"
TABLE = "churn_predictions"
# Rows the source breaks on purpose: no id, a charge that is no number.
BROKEN_ROWS = (5, 17)
UNSCORABLE = len(BROKEN_ROWS)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 customers as a CSV file, two of them unscorable."""
    frame = generate_customers(4_000, seed=31, messy=False).astype(object)
    frame.loc[BROKEN_ROWS[0], "customerID"] = ""
    frame.loc[BROKEN_ROWS[1], "MonthlyCharges"] = "twelve"
    path = tmp_path_factory.mktemp("source") / "customers.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def expected_ids(source: Path) -> set[str]:
    """The customers a run scores: all but the broken rows."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    return set(frame["customerID"].drop(index=list(BROKEN_ROWS)))


@dataclass(frozen=True)
class Published:
    """The as-of date's rows in the warehouse and in the CSV exports."""

    table_ids: list[str]
    csv_ids: list[str]
    table_rejects: int
    csv_rejects: int
    table_runs: set[str]
    csv_runs: set[str]

    def damage(self, expected_ids: set[str]) -> tuple[int, int]:
        """(rows lost, rows duplicated or not belonging) over the table and the CSV files."""
        lost = duplicates = 0
        places = [(self.table_ids, self.table_rejects), (self.csv_ids, self.csv_rejects)]
        for ids, rejects in places:
            lost += len(expected_ids - set(ids)) + max(0, UNSCORABLE - rejects)
            duplicates += len(ids) - len(set(ids)) + len(set(ids) - expected_ids)
            duplicates += max(0, rejects - UNSCORABLE)
        return lost, duplicates


def _stem(warehouse: Path, suffix: str = "") -> str:
    """The start of the CSV file names of the table `TABLE + suffix` in `warehouse`."""
    return export_stem(f"duckdb://{warehouse}?table={TABLE}{suffix}")


def _published(warehouse: Path, exports: Path) -> Published:
    """What is published for the as-of date; nothing where nothing was published yet."""
    tables = {}
    if warehouse.exists():
        with duckdb.connect(str(warehouse), read_only=True) as con:
            names = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
            for name in (TABLE, f"{TABLE}_rejects"):
                if name in names:
                    query = f"SELECT * FROM {name} WHERE as_of_date = ?"
                    tables[name] = con.execute(query, [AS_OF]).df()
    empty = pd.DataFrame({"customer_id": [], "run_id": []})
    table, rejects = (tables.get(name, empty) for name in (TABLE, f"{TABLE}_rejects"))
    csv, csv_rejects = (
        pd.read_csv(path, dtype=str) if path.exists() else empty
        for path in (
            exports / f"{_stem(warehouse)}_{AS_OF}.csv",
            exports / f"{_stem(warehouse, '_rejects')}_{AS_OF}.csv",
        )
    )
    return Published(
        table_ids=list(table["customer_id"]),
        csv_ids=list(csv["customer_id"]),
        table_rejects=len(rejects),
        csv_rejects=len(csv_rejects),
        table_runs=set(table["run_id"]) | set(rejects["run_id"]),
        csv_runs=set(csv["run_id"]) | set(csv_rejects["run_id"]),
    )


def _check_published(warehouse: Path, exports: Path, expected_ids: set[str]) -> tuple[int, int]:
    """Measure the damage, then require none: one run's rows, in both, once each."""
    state = _published(warehouse, exports)
    lost, duplicates = state.damage(expected_ids)
    assert (lost, duplicates) == (0, 0)
    assert state.table_runs == state.csv_runs and len(state.table_runs) == 1
    return lost, duplicates


def _command(home: Path, source: Path, config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "submit.py"), "score", "--home", str(home), "--local",
        "--config", str(config), "--source", str(source), "--as-of", AS_OF,
        "--batch-rows", "500", *extra,
    ]  # fmt: skip


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    """A run in a process group of its own, so a SIGKILL takes its steps down with it, as a
    machine's OOM killer or a preempted VM would."""
    return subprocess.Popen(
        command, cwd=cwd, start_new_session=True, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _score(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr


def _refused_in_one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """The run failed with a non-zero exit and an `error:` line naming the problem, and no
    traceback; returns that line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# --- SIGKILL at a moment picked by phase ------------------------------------------------


def _phases(home: Path) -> dict[str, Callable[[Path], bool]]:
    """Per phase, whether a run (its folder under the pipeline root) has reached it."""
    exports = home / "predictions"
    stem = _stem(home / "warehouse.duckdb")
    partial = exports / f"{stem}_{AS_OF}.csv.partial"
    journal = exports / f".{stem}_{AS_OF}.publish.json"
    return {
        "reading": lambda run: (run / "score-customers").exists(),
        "staging": lambda run: any((run / "score-customers" / "staged").glob("*.parquet")),
        "exporting": lambda run: partial.exists(),
        "publishing": lambda run: journal.exists(),
        "summarizing": lambda run: any(run.glob("summarize-scoring*")),
    }


def _started_until(command: list[str], home: Path, phase: str, delay: float) -> subprocess.Popen:
    """Start a run and return `delay` seconds after it reaches `phase` (or finishes)."""
    reached = _phases(home)[phase]
    root = home / "pipeline_root"
    before = set(root.glob("churn-scoring-*"))
    run = _start(command, home.parent)
    folder = None
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        folder = folder or next(iter(set(root.glob("churn-scoring-*")) - before), None)
        if folder is not None and reached(folder):
            break
        time.sleep(0.001 if phase in ("exporting", "publishing") else 0.02)
    time.sleep(delay)
    return run


def _kill_during(command: list[str], home: Path, phase: str, delay: float) -> str:
    """SIGKILL a run `delay` seconds after it reaches `phase`; returns what it left in the
    export folder (the moment the kill landed in), or that it finished first."""
    run = _started_until(command, home, phase, delay)
    if run.poll() is not None:
        return "finished before the kill"
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    exports = home / "predictions"
    if list(exports.glob(".*.publish.json")):
        return "a publish journal left"
    if list(exports.glob("*.partial")):
        return "half-written CSV files left"
    return "no publish in progress"


def _descendants(pid: int) -> list[int]:
    """The processes under `pid`, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces; the fields after its ")" do not.
            fields = stat.read_text().rpartition(")")[2].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _killed_and_rerun(
    champion_home: Path,
    source: Path,
    no_config: Path,
    expected_ids: set[str],
    reliability,
    cases: list[tuple[str, float]],
) -> None:
    command = _command(champion_home, source, no_config)
    warehouse, exports = champion_home / "warehouse.duckdb", champion_home / "predictions"
    # The first kill lands on a home with nothing published yet, each later one on the
    # outputs of the re-run before it.
    for phase, delay in cases:
        left = _kill_during(command, champion_home, phase, delay)
        if left != "a publish journal left":
            # Nothing half done: the table and the CSV files agree right after the kill.
            state = _published(warehouse, exports)
            assert state.table_runs == state.csv_runs, left
        _succeeded(_score(command, champion_home.parent))
        lost, duplicates = _check_published(warehouse, exports, expected_ids)
        assert not list(exports.glob(".*.publish.json")) and not list(exports.glob("*.partial"))
        reliability.record(
            "fault",
            "scoring",
            f"SIGKILL while {phase} (+{delay * 1000:.0f} ms; {left}), then the date run again",
            outcome="handled",
            rows_lost=lost,
            duplicates=duplicates,
        )


def test_runs_killed_while_staging_or_publishing_or_at_random_are_made_whole_by_reruns(
    champion_home: Path, source: Path, no_config: Path, expected_ids: set[str], reliability
):
    """Killed while staging (reading and staging are one step) and inside the publish; then
    at random phases and delays: none under the `ci` profile, 19 under `thorough`
    (HYPOTHESIS_PROFILE), CHURN_FAULT_SEED picking another sequence."""
    rng = random.Random(int(os.environ.get("CHURN_FAULT_SEED", "20261126")))
    phases = list(_phases(champion_home))
    extra = settings.default.max_examples // 25 - 1
    cases = [("staging", 0.0), ("publishing", 0.0)]
    cases += [(rng.choice(phases), rng.uniform(0, 0.5)) for _ in range(extra)]
    _killed_and_rerun(champion_home, source, no_config, expected_ids, reliability, cases)


def test_a_run_whose_step_is_killed_after_publishing_records_what_it_published(
    champion_home: Path, source: Path, no_config: Path, expected_ids: set[str], reliability
):
    """The summary step's processes SIGKILLed, as the OOM killer picks a process: the run
    fails, but it had published, and says so in its error line and its run record."""
    command = _command(champion_home, source, no_config)
    run = _started_until(command, champion_home, "summarizing", 0.0)
    for pid in _descendants(run.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    line = _refused_in_one_line(subprocess.CompletedProcess(command, run.returncode, "", stderr))
    assert f"(after publishing duckdb://{champion_home / 'warehouse.duckdb'}" in line
    record = json.loads(max((champion_home / "runs").glob("*.json")).read_text())
    assert record["status"] == "failed"
    assert [(p["as_of_date"], p["rows"]["scored"]) for p in record["published"]] == [
        (AS_OF, len(expected_ids))
    ]
    listed = subprocess.run(
        [sys.executable, str(ROOT / "submit.py"), "runs", "--home", str(champion_home), "--json"],
        capture_output=True, text=True, check=True, cwd=champion_home.parent,
    )  # fmt: skip
    assert "after publishing" in json.loads(listed.stdout.splitlines()[-1])[0]["headline"]
    lost, duplicates = _check_published(
        champion_home / "warehouse.duckdb", champion_home / "predictions", expected_ids
    )
    reliability.record(
        "fault",
        "scoring",
        "the summary step SIGKILLed after publishing: the run record says what was published",
        outcome="refused",
        rows_lost=lost,
        duplicates=duplicates,
    )


# --- Full, read-only and unwritable file systems -----------------------------------------


def _can_mount() -> bool:
    """Whether this process may mount a tmpfs (root, with the right to mount)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as probe:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", probe], capture_output=True)
        return mounted.returncode == 0 and not subprocess.run(["umount", probe]).returncode


CAN_MOUNT = _can_mount()
needs_mounts = pytest.mark.skipif(
    not CAN_MOUNT, reason="full and read-only disks are tmpfs mounts: root may mount them"
)


class Disk:
    """A folder on a tmpfs of its own where mounts are possible (else a plain folder), which
    can be filled up, made read-only or made unwritable by its owner."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = CAN_MOUNT
        if self.mounted:
            mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path]
            subprocess.run(mount, check=True)

    @contextlib.contextmanager
    def full(self) -> Iterator[None]:
        filler = self.path / ".filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        try:
            yield
        finally:
            filler.unlink()

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        subprocess.run(["mount", "-o", "remount,ro", self.path], check=True)
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", self.path], check=True)

    @contextlib.contextmanager
    def unwritable(self) -> Iterator[None]:
        self.path.chmod(0o555)
        try:
            yield
        finally:
            self.path.chmod(0o755)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", self.path], check=True)


@pytest.fixture
def disks() -> Iterator[Callable[..., Disk]]:
    made: list[Disk] = []

    def disk(path: Path, size: str) -> Disk:
        made.append(Disk(path, size))
        return made[-1]

    yield disk
    for each in reversed(made):
        each.unmount()


def _snapshot(warehouse: Path, exports: Path) -> tuple:
    """The published outputs as bytes and rows, to compare after a refused run."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = tuple(
            sorted(con.execute(f"SELECT * FROM {name}").fetchall())
            for name in (TABLE, f"{TABLE}_rejects")
        )
    files = {p.name: p.read_bytes() for p in sorted(exports.iterdir()) if p.name != ".filler"}
    return rows, files


def _write_faults() -> dict[str, str]:
    """The faults a folder can be given here, with the words the refusal must name: full
    (ENOSPC) and read-only (EROFS) where tmpfs mounts are possible; unwritable (EACCES, a
    chmod 555) where permission bits apply, which they don't to root."""
    faults = {"full": "No space left", "read_only": "Read-only file system"} if CAN_MOUNT else {}
    if os.geteuid() != 0:
        faults["unwritable"] = "Permission denied"
    return faults


@pytest.mark.skipif(not _write_faults(), reason="as root, without the right to mount tmpfs")
def test_a_full_or_unwritable_folder_refuses_the_run_and_leaves_the_outputs_as_they_were(
    champion_home: Path,
    source: Path,
    no_config: Path,
    expected_ids: set[str],
    reliability,
    disks,
):
    warehouse = champion_home / "warehouse" / "warehouse.duckdb"
    exports = champion_home / "predictions"
    places = {
        "staging (the pipeline root)": disks(champion_home / "pipeline_root", "64m"),
        "publishing (the warehouse)": disks(warehouse.parent, "16m"),
        "exporting (the CSV folder)": disks(exports, "4m"),
    }
    output = f"duckdb://{warehouse}?table={TABLE}"
    command = _command(champion_home, source, no_config, "--output", output)
    _succeeded(_score(command, champion_home.parent))
    before = _snapshot(warehouse, exports)
    for where, disk in places.items():
        for fault, words in _write_faults().items():
            with getattr(disk, fault)():
                result = _score(command, champion_home.parent)
            print(_refused_in_one_line(result, words))
            assert _snapshot(warehouse, exports) == before, f"{fault} {where}"
            lost, duplicates = _published(warehouse, exports).damage(expected_ids)
            reliability.record(
                "fault",
                "publishing" if "CSV" in where or "warehouse" in where else "scoring",
                f"{fault.replace('_', '-')} {'folder' if fault == 'unwritable' else 'disk'} "
                f"while {where}",
                outcome="refused",
                rows_lost=lost,
                duplicates=duplicates,
            )
            assert (lost, duplicates) == (0, 0)


def _registry_files(registry: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) in a registry, but the disk's filler."""
    return {
        str(path.relative_to(registry)): path.read_bytes() if path.is_file() else None
        for path in sorted(registry.rglob("*"))
        if path.name != ".filler"
    }


@needs_mounts
@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_registering_on_a_full_or_read_only_disk_leaves_the_registry_as_it_was(
    champion_home: Path, fault: str, reliability, disks
):
    disk = disks(champion_home / "faulty-registry", "2m")
    registry = LocalRegistry(disk.path)
    record = {
        "best_model": "logistic_regression",
        "threshold": 0.35,
        "metrics": {"roc_auc": 0.84},
        "data_fingerprint": "fixture",
        "run_id": "fixture",
    }
    registry.promote(registry.register(champion_home / "fitted", **record).version)
    before = _registry_files(disk.path)
    with getattr(disk, fault)(), pytest.raises(RegistryError):
        registry.register(champion_home / "fitted", **record)
    after = _registry_files(disk.path)
    reliability.record(
        "fault", "registry", f"{fault.replace('_', '-')} disk while registering", outcome="refused"
    )
    assert registry.champion().version == 1 and registry.get(1).sha256
    assert after == before


# --- Two runs at once -------------------------------------------------------------------


def test_two_runs_of_one_date_at_once_leave_exactly_one_copy(
    champion_home: Path, source: Path, no_config: Path, expected_ids: set[str], reliability
):
    command = _command(champion_home, source, no_config)
    runs = [_start(command, champion_home.parent) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stderr
    warehouse, exports = champion_home / "warehouse.duckdb", champion_home / "predictions"
    lost, duplicates = _check_published(warehouse, exports, expected_ids)
    reliability.record(
        "fault",
        "scoring",
        "two scoring runs of one date at once on one home",
        outcome="handled",
        rows_lost=lost,
        duplicates=duplicates,
    )
