"""The registry against hostile files, faults and concurrent runs: a damaged record or alias
file is refused with one line naming it, nothing outside the registry is loaded, the model
bytes are checked wherever they are unpickled, a failed write leaves the registry as it was,
and of two runs that evaluated at once only one promotes (a real lock, real processes)."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from google_cloud_pipeline_components.types.artifact_types import VertexModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kfp.dsl import Artifact, Dataset, Model
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.data.validate import validate
from components.errors import RegistryError
from components.model.evaluate import load_model_dir
from components.model.features import build_preprocessor
from components.model.register import register_and_promote
from components.registry import LocalRegistry, load_model_directory, save_model
from components.registry.local import LOCK_FILE
from components.registry.model_files import MODEL_FILE, RECORD_FILE, file_sha256
from components.scoring.champion import fetch_model, load_champion
from components.scoring.chunked import score_customers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(customers, tmp_path_factory) -> Path:
    clean = validate(customers, source="t").clean
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LogisticRegression())])
    model.fit(clean.drop(columns=["customerID", "Churn"]), clean["Churn"])
    return save_model(model, tmp_path_factory.mktemp("artifact"))


def _evaluation(roc_auc: float, champion_version: int | None) -> dict:
    """An evaluation as the evaluate step writes it, against `champion_version`."""
    compared = champion_version is not None
    return {
        "metrics": {"roc_auc": roc_auc},
        "champion_version": champion_version,
        "champion_metrics": {"roc_auc": 0.80} if compared else None,
        "comparison": {"champion": 0.80, "candidate": roc_auc} if compared else None,
    }


def _register(
    registry_uri: str, model_file: Path, champion_version: int | None, run_id: str = "run-1"
):
    return register_and_promote(
        registry_uri=registry_uri,
        model_file=model_file,
        model_info={"best_model": "logistic_regression", "threshold": 0.4},
        evaluation=_evaluation(0.85, champion_version),
        data_fingerprint="abc",
        run_id=run_id,
        metric="roc_auc",
        margin=0.01,
        floor=0.7,
    )


@pytest.fixture
def registry(model_file, tmp_path) -> LocalRegistry:
    """A registry whose champion is version 1."""
    registry = LocalRegistry(tmp_path / "registry")
    assert _register(str(registry.root), model_file, None).promoted
    return registry


# --- promotion is a compare-and-set under the registry lock ------------------------------

_REGISTER_ON_SIGNAL = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from components.model.register import register_and_promote

    registry, model_file, run_id, ready, go = sys.argv[1:]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    entry = register_and_promote(
        registry_uri=registry, model_file=Path(model_file),
        model_info={"best_model": "logistic_regression", "threshold": 0.4},
        evaluation={"metrics": {"roc_auc": 0.85}, "champion_version": None},
        data_fingerprint="abc", run_id=run_id, metric="roc_auc", margin=0.01, floor=0.7,
    )
    print(json.dumps({"version": entry.version, "promoted": entry.promoted}))
    """
)


@pytest.mark.faults
def test_two_runs_that_evaluated_at_once_promote_exactly_one(model_file, tmp_path, reliability):
    """Both evaluated with no champion; both register at the same moment from their own
    process. The gate is never skipped: the second sees the first's promotion."""
    root, go = tmp_path / "registry", tmp_path / "go"
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _REGISTER_ON_SIGNAL,
                str(root),
                str(model_file),
                f"run-{n}",
                str(tmp_path / f"ready-{n}"),
                str(go),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{n}").exists() for n in (1, 2)):
        assert time.monotonic() < deadline and all(r.poll() is None for r in runs)
        time.sleep(0.01)
    go.touch()
    results = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        results.append(json.loads(out))

    registry = LocalRegistry(root)
    assert sorted(r["version"] for r in results) == registry.versions() == [1, 2]
    assert [r["promoted"] for r in results].count(True) == 1
    winner = next(r["version"] for r in results if r["promoted"])
    loser = registry.get(3 - winner)
    assert registry.champion().version == winner and not loser.promoted
    assert loser.promotion_reason.startswith(
        f"not promoted: the champion changed to v{winner} while this run evaluated against "
        "no champion (no champion yet;"
    )
    assert loser.promotion_reason.endswith(
        f"not compared with v{winner}: re-run training to compare"
    )
    reliability.record(
        "fault",
        "training",
        "two trainings register at once, both evaluated with no champion",
        outcome="handled",
    )


@pytest.mark.slow
@pytest.mark.faults
def test_two_trainings_at_once_on_one_home_promote_exactly_one(customers, tmp_path, reliability):
    """Two `submit.py train` at once on small data (about 50 s here, side by side). They
    usually both evaluate before either registers; then the gate must not be skipped."""
    source = tmp_path / "customers.csv"
    customers.head(1_500).to_csv(source, index=False)
    command = [
        sys.executable,
        "submit.py",
        "train",
        "--source",
        str(source),
        "--json",
        "--cv-folds",
        "3",
        "--candidates-per-family",
        "1",
        "--home",
        str(tmp_path / "home"),
        "--local",
    ]
    runs = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    summaries = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        summaries.append(json.loads(out.strip().splitlines()[-1]))

    assert sorted(s["model_version"] for s in summaries) == [1, 2]
    assert [s["promoted"] for s in summaries].count(True) == 1
    registry = LocalRegistry(tmp_path / "home" / "registry")
    assert registry.versions() == [1, 2] and registry.champion().version == 1
    second = registry.get(2)
    raced = second.promotion_reason.startswith("not promoted: the champion changed to v1")
    # Else it evaluated against v1 (same data and seed: no better by the margin).
    assert raced or "does not beat the champion's" in second.promotion_reason
    # Each run knows its own id: both are listed, each with the version it registered.
    listed = subprocess.run(
        [sys.executable, "submit.py", "runs", "--json", "--home", str(tmp_path / "home")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(listed.stdout)
    assert sorted(r["model_version"] for r in rows) == [1, 2]
    assert len({r["run_id"] for r in rows}) == 2
    reliability.record(
        "fault",
        "training",
        f"two trainings at once on one home ({'raced' if raced else 'serialized'})",
        outcome="handled",
    )


def test_a_gate_passed_against_an_old_champion_does_not_promote(registry, model_file):
    newer = _register(str(registry.root), model_file, 1)  # beats v1: champion now v2
    assert newer.promoted and registry.champion().version == 2
    stale = _register(str(registry.root), model_file, 1, run_id="run-3")
    assert (stale.version, stale.promoted) == (3, False)
    assert registry.get(3) == stale and registry.champion().version == 2
    assert "changed to v2 while this run evaluated against v1" in stale.promotion_reason


@pytest.mark.faults
def test_a_run_waits_for_the_lock_and_gives_up_with_one_line(
    registry, model_file, caplog, reliability
):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import fcntl, os, sys, time
            handle = os.open({str(registry.root / LOCK_FILE)!r}, os.O_RDWR)
            fcntl.flock(handle, fcntl.LOCK_EX)
            os.ftruncate(handle, 0)  # as the registry does: a shorter pid leaves no tail
            os.pwrite(handle, f"another run (pid {{os.getpid()}})".encode(), 0)
            print("locked", flush=True)
            time.sleep(float(sys.argv[1]))
        """),
            "1.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    impatient = LocalRegistry(registry.root, lock_timeout=0.2)
    with pytest.raises(RegistryError) as failure:
        impatient.register(model_file.parent, **_record())
    assert str(failure.value) == (
        f"registry {registry.root} is still locked by another run (pid {holder.pid}) after "
        "0.2s: nothing was changed; re-run when that run has finished"
    )
    assert registry.versions() == [1]

    patient = LocalRegistry(registry.root, lock_timeout=60)
    assert patient.register(model_file.parent, **_record()).version == 2
    assert holder.wait(timeout=10) == 0
    assert f"is locked by another run (pid {holder.pid}), which is registering" in caplog.text
    reliability.record(
        "fault",
        "registry",
        "registry locked by another run: wait, then give up",
        outcome="refused",
    )
    reliability.record(
        "fault",
        "registry",
        "registry locked by another run: wait until it finishes",
        outcome="handled",
    )


def _record(**changes) -> dict:
    return {
        "best_model": "logistic_regression",
        "threshold": 0.4,
        "metrics": {"roc_auc": 0.8},
        "data_fingerprint": "abc",
        "run_id": "run-x",
    } | changes


# --- damaged registry files: one line naming the file ------------------------------------


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ('{"champion": 1', "aliases.json is not valid JSON (line 1, column 15)"),
        ("\xff\xfe", "aliases.json is not valid JSON ("),
        ("[1]", 'aliases.json is not an alias file (expected {"champion": N}, found list)'),
        ('{"champion": "../../etc"}', "alias 'champion' is '../../etc', not a version number"),
        ('{"champion": -1}', "alias 'champion' is -1, not a version number"),
        ('{"champion": 0}', "alias 'champion' is 0, not a version number"),
        ('{"champion": "1"}', "alias 'champion' is '1', not a version number"),
        ('{"champion": 1.5}', "alias 'champion' is 1.5, not a version number"),
        ('{"champion": true}', "alias 'champion' is True, not a version number"),
        ('{"champion": null}', "alias 'champion' is None, not a version number"),
        (
            '{"champion": 7}',
            "alias 'champion' in {root}/aliases.json names model version 7, which is not",
        ),
    ],
)
def test_a_damaged_alias_file_is_refused_with_one_line(registry, aliases, message, reliability):
    (registry.root / "aliases.json").write_bytes(aliases.encode("latin-1"))
    for read in (
        registry.champion,
        lambda: registry.get("champion"),
        lambda: registry.fetch("champion", registry.root.parent / "copy"),
    ):
        with pytest.raises(RegistryError) as failure:
            read()
        assert message.replace("{root}", str(registry.root)) in str(failure.value)
        assert str(registry.root / "aliases.json") in str(failure.value)
        assert len(str(failure.value).splitlines()) == 1
    assert not (registry.root.parent / "copy").exists()
    reliability.record("input", "registry", f"aliases.json {aliases!r}", outcome="refused")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "version.json is not valid JSON ("),
        (lambda text: "", "version.json is not valid JSON ("),
        (lambda text: "[]", "version.json is not a model version record (no SHA-256"),
        (
            lambda text: json.dumps(json.loads(text) | {"sha256": "../../etc"}),
            "version.json is not a model version record (no SHA-256",
        ),
        (
            lambda text: json.dumps(json.loads(text) | {"path": "/etc/passwd"}),
            "version.json is not a model version record (unknown fields: ['path']",
        ),
        (
            lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "run_id"}),
            "missing: ['run_id']",
        ),
        (
            lambda text: json.dumps(json.loads(text) | {"version": "1"}),
            "version '1'): it is damaged",
        ),
        (
            lambda text: json.dumps(json.loads(text) | {"version": 2}),
            "version.json records version 2, not 1: refusing a record that belongs elsewhere",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "a list",
        "bad sha",
        "unknown field",
        "missing field",
        "version text",
        "another version",
    ],
)
def test_a_damaged_version_record_is_refused_with_one_line(
    registry, damage, message, reliability, request
):
    record = registry.root / "v0001" / RECORD_FILE
    record.write_text(damage(record.read_text()))
    for read in (registry.champion, lambda: registry.load_model(1)):
        with pytest.raises(RegistryError) as failure:
            read()
        assert message in str(failure.value) and str(record) in str(failure.value)
        assert len(str(failure.value).splitlines()) == 1
    assert registry.versions() == [1]
    reliability.record(
        "input", "registry", f"version.json {request.node.callspec.id}", outcome="refused"
    )


@pytest.mark.hostile
@given(content=st.binary(max_size=300))
# The fixtures hold no state between examples; the profile's own suppression kept.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_random_bytes_as_registry_files_are_refused_with_one_line(
    content, registry_files, reliability
):
    root, record = registry_files
    for path in (root / "aliases.json", record):
        kept = path.read_bytes()
        path.write_bytes(content)
        try:
            LocalRegistry(root).champion()
        except RegistryError as exc:
            assert str(path) in str(exc) and len(str(exc).splitlines()) == 1
        finally:
            path.write_bytes(kept)
    reliability.record("input", "registry", "random bytes as registry files", outcome="refused")


@pytest.fixture(scope="module")
def registry_files(model_file, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hostile") / "registry"
    _register(str(root), model_file, None)
    return root, root / "v0001" / RECORD_FILE


def test_links_out_of_the_registry_are_refused(registry, model_file, tmp_path, reliability):
    """A version directory or model file that is a link elsewhere (a registry record
    whose files point outside the registry) is never loaded, even with matching bytes."""
    elsewhere = tmp_path / "elsewhere"
    (registry.root / "v0001").rename(elsewhere)
    (registry.root / "v0001").symlink_to(elsewhere)
    with pytest.raises(RegistryError, match=r"v0001 links to .*elsewhere, outside the registry"):
        registry.load_model("champion")

    (registry.root / "v0001").unlink()
    elsewhere.rename(registry.root / "v0001")
    model = registry.model_path(1)
    model.rename(elsewhere)
    model.symlink_to(elsewhere)
    with pytest.raises(RegistryError, match=r"model.joblib links to .*, outside the registry"):
        registry.fetch("champion", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    reliability.record("input", "registry", "version directory linked outside", outcome="refused")
    reliability.record("input", "registry", "model file linked outside", outcome="refused")


@pytest.mark.parametrize("command", ["train", "score", "serve"])
def test_the_cli_prints_a_damaged_registry_as_one_line(registry, command, reliability):
    (registry.root / "aliases.json").write_text('{"champion": "../../etc"}')
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "submit.py"),
            command,
            "--home",
            str(registry.root.parent),
            "--local",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "400"},
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {registry.root}/aliases.json: alias 'champion' is '../../etc', not a version "
        "number: the alias file is damaged (registered versions: [1])"
    ]
    assert not (registry.root.parent / "pipeline_root").exists()
    reliability.record(
        "input", "registry", f"`{command}` with an alias outside the registry", outcome="refused"
    )


# --- the bytes unpickled are the bytes checked -------------------------------------------


def _tamper(directory: Path, *, with_record: bool) -> None:
    """Change the model file; `with_record`: also rewrite the record beside it to match, as
    someone who can write the copy could."""
    model = directory / MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")
    if with_record:
        record = json.loads((directory / RECORD_FILE).read_text())
        record["sha256"] = file_sha256(model)
        (directory / RECORD_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize("with_record", [False, True], ids=["model", "model and record"])
def test_scoring_refuses_a_model_changed_after_load_champion(
    registry, customers, tmp_path, with_record, reliability
):
    """Steps 1 and 2 of the scoring pipeline as they run: load champion copies the model
    out, then the copy changes before the scoring step unpickles it."""
    model = Model(name="model", uri=str(tmp_path / "model"))
    load_champion.python_func(
        registry_uri=str(registry.root),
        model_ref="champion",
        model=model,
        vertex_model=VertexModel(name="vm", uri=str(tmp_path / "vm")),
    )
    _tamper(Path(model.path), with_record=with_record)
    source = tmp_path / "customers.csv"
    customers.drop(columns=["Churn"]).head(50).to_csv(source, index=False)
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        score_customers.python_func(
            source_uri=str(source),
            output_uri=f"duckdb://{tmp_path}/w.duckdb?table=p",
            model=model,
            as_of="2026-12-01",
            run_id="r",
            batch_rows=1000,
            workers=1,
            high_risk_cutoff=0.7,
            medium_risk_cutoff=0.4,
            invalid_row_tolerance=0.1,
            time_zone="UTC",
            high_risk_top_n=0,
            high_risk_top_share=0.0,
            staged=Dataset(name="s", uri=str(tmp_path / "staged")),
            observed=Artifact(name="o", uri=str(tmp_path / "observed")),
        )
    assert not (tmp_path / "staged").exists()
    reliability.record(
        "input",
        "scoring",
        f"{'model and record' if with_record else 'model'} changed "
        "between load champion and scoring",
        outcome="refused",
    )


def test_serving_and_evaluation_refuse_a_model_changed_after_fetching(
    registry, tmp_path, reliability
):
    """`serve` and evaluation's champion comparison fetch a copy, then load it."""
    from components.serving.server import ChurnPredictor

    entry, _ = fetch_model(str(registry.root), "champion", tmp_path / "served")
    _tamper(tmp_path / "served", with_record=False)
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        ChurnPredictor().load(str(tmp_path / "served"))

    fetched = registry.fetch(entry.version, tmp_path / "champion")
    _tamper(tmp_path / "champion", with_record=True)
    with pytest.raises(RegistryError, match="its run fetched"):
        load_model_directory(tmp_path / "champion", sha256=fetched.sha256)
    reliability.record(
        "input", "serving", "model changed after serve fetched it", outcome="refused"
    )
    reliability.record(
        "input", "training", "champion changed between fetch and comparison", outcome="refused"
    )


def test_evaluation_and_registration_refuse_a_candidate_changed_after_training(
    model_file, tmp_path, reliability
):
    """The training step's model artifact, changed before evaluate or register reads it."""
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / MODEL_FILE).write_bytes(model_file.read_bytes())
    trained = file_sha256(candidate / MODEL_FILE)
    assert hasattr(load_model_dir(str(candidate), trained), "predict_proba")
    _tamper(candidate, with_record=False)

    with pytest.raises(RegistryError, match="refusing to load a model file that changed after"):
        load_model_dir(str(candidate), trained)
    registry = LocalRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="refusing to register a model file that changed"):
        register_and_promote(
            registry_uri=str(registry.root),
            model_file=candidate / MODEL_FILE,
            model_info={"best_model": "logistic_regression", "threshold": 0.4, "sha256": trained},
            evaluation=_evaluation(0.85, None),
            data_fingerprint="abc",
            run_id="run-1",
            metric="roc_auc",
            margin=0.01,
            floor=0.7,
        )
    assert registry.versions() == []
    reliability.record(
        "input", "training", "candidate changed between training and evaluation", outcome="refused"
    )
    reliability.record(
        "input",
        "training",
        "candidate changed between evaluation and registration",
        outcome="refused",
    )


# --- a failed write leaves the registry as it was ----------------------------------------

_WRITE_WITH_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from components.registry import LocalRegistry

    root, model_dir, limit, action = sys.argv[1:]
    registry = LocalRegistry(root)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    if action == "register":
        registry.register(Path(model_dir), best_model="lr", threshold=0.4, metrics={},
                          data_fingerprint="f", run_id="full-disk")
    else:
        registry.promote(2)
    """
)


@pytest.mark.faults
@pytest.mark.parametrize("action", ["register", "promote"])
def test_a_write_that_fails_halfway_leaves_the_registry_intact(
    registry, model_file, action, reliability
):
    """A real failed write (EFBIG past RLIMIT_FSIZE: a full disk as a write sees it)."""
    if action == "promote":
        registry.register(model_file.parent, **_record())  # v2, to promote
    limit = model_file.stat().st_size // 2 if action == "register" else 4
    before = {
        p.relative_to(registry.root): p.read_bytes()
        for p in registry.root.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _WRITE_WITH_FILE_SIZE_LIMIT,
            str(registry.root),
            str(model_file.parent),
            str(limit),
            action,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 1
    doing = "register a model in" if action == "register" else "move the champion alias in"
    assert done.stderr.splitlines()[-1].startswith(
        f"components.errors.RegistryError: could not {doing} {registry.root}: File too large ("
    )
    assert done.stderr.splitlines()[-1].endswith("); the registry is unchanged")
    after = {
        p.relative_to(registry.root): p.read_bytes()
        for p in registry.root.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }
    assert after == before
    versions = [1] if action == "register" else [1, 2]
    assert sorted(p.name for p in registry.root.iterdir()) == [LOCK_FILE, "aliases.json"] + [
        f"v{v:04d}" for v in versions
    ]
    assert registry.versions() == versions and registry.champion().version == 1
    assert registry.register(model_file.parent, **_record()).version == versions[-1] + 1
    reliability.record(
        "fault", "registry", f"file too large while {doing} the registry", outcome="refused"
    )


def test_readers_ignore_a_version_directory_without_a_record(registry, model_file):
    """What a write killed before its clean-up leaves: not a version, and not in the way."""
    (registry.root / "v0002").mkdir()
    (registry.root / "v0002" / MODEL_FILE).write_bytes(b"half")
    assert registry.versions() == [1]
    assert registry.register(model_file.parent, **_record()).version == 3
    assert registry.versions() == [1, 3]
