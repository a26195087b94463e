"""The local runner turns kfp.local's log stream into step events and one error line."""

import io
import json
from dataclasses import asdict
from pathlib import Path

from pipelines.runner import RunRecord, _LogTap, list_runs

ROOT = Path("/home/me/.churn/pipeline_root")

KFP_LOG = """\
12:00:00.001 - INFO - Executing task \x1b[96m'score-customers'\x1b[0m
    INFO:score:progress: 100000 rows read, 12 rejected (41000 rows/s)
    Traceback (most recent call last):
    ValueError: inner detail
    components.errors.ContractError: t.csv: column `tenure` has the wrong type
12:00:03.000 - ERROR - Task \x1b[96m'score-customers'\x1b[0m finished with status \
\x1b[91mFAILURE\x1b[0m
"""


def test_log_lines_become_step_events_and_the_project_error():
    events = []
    log = io.StringIO()
    tap = _LogTap(
        log, lambda step, event, seconds, detail: events.append((step, event, detail)), ROOT
    )
    for chunk in (KFP_LOG[:50], KFP_LOG[50:]):  # lines may arrive split across writes
        tap.write(chunk)
    assert events == [
        ("score-customers", "started", ""),
        ("score-customers", "progress", "100000 rows read, 12 rejected (41000 rows/s)"),
        ("score-customers", "failed", ""),
    ]
    assert tap.failed_step == "score-customers"
    assert tap.error_line() == "t.csv: column `tenure` has the wrong type"
    assert log.getvalue() == KFP_LOG  # the full log is kept for the user


def test_without_a_project_error_the_last_exception_is_reported():
    tap = _LogTap(io.StringIO(), lambda *event: None, ROOT)
    tap.write("Traceback (most recent call last):\nKeyError: 'Churn'\n")
    assert tap.error_line() == "KeyError: 'Churn'"


def test_a_run_learns_its_id_from_its_own_steps_output_paths():
    tap = _LogTap(io.StringIO(), lambda *event: None, ROOT)
    assert tap.run_id is None
    run = "churn-training-2026-12-02-00-50-15-932660"
    tap.write(f'  "outputFile": "{ROOT}/{run}/ingest/executor_output.json"\n')
    tap.write(f'  "uri": "{ROOT}/churn-training-2026-12-02-00-59-00-000000/split/train"\n')
    assert tap.run_id == run


def test_an_unreadable_run_record_is_listed_beside_the_others(tmp_path: Path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "broken.json").write_text("")
    good = RunRecord("good", "churn-training", "succeeded", "2026-12-01T08:00:00", 1.0, "log")
    (runs / "good.json").write_text(json.dumps(asdict(good)))

    records = {record.run_id: record for record in list_runs(tmp_path)}

    assert records["good"] == good
    assert records["broken"].status == "unreadable"
    assert "broken.json cannot be read" in records["broken"].error
