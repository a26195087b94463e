"""Batch scoring's plain functions: nothing lost on messy input, one copy per customer and
date, and a failed publish leaves yesterday's predictions as they were."""

import csv
import os
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.errors import ChurnError, ContractError, SettingsError, SourceError
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.monitoring.drift import reference_profile
from components.scoring.capacity import capacity_count
from components.scoring.chunked import available_cpus, read_customers, stage_scores
from components.scoring.publish import ExportsPendingError, export_stem, publish_scores
from components.scoring.reason_codes import REASON_COLUMNS
from components.scoring.staged import (
    PREDICTION_COLUMNS,
    PREDICTIONS_FILE,
    REJECTS_FILE,
    REPEATS_FILE,
    ScoringJob,
    resolve_as_of,
)
from components.warehouse import related_table, require_output

AS_OF = date(2026, 11, 26)


@pytest.fixture(scope="module")
def model(customers: pd.DataFrame):
    """A real fitted gradient-boosting pipeline, the usual champion: its scores come from
    the compiled tree kernel, inherited by forked workers."""
    clean = validate(customers, source="fixture").clean
    best = CandidateResult("gradient_boosting", {"max_leaf_nodes": 15}, [], [], np.empty(0), 0.0)
    return fit_final(clean, best, seed=0)


def _job(run_id: str = "run-1", as_of: date = AS_OF) -> ScoringJob:
    return ScoringJob(
        source="test.csv",
        threshold=0.5,
        high=0.7,
        medium=0.4,
        model_version=3,
        as_of=as_of,
        scored_at=datetime(2026, 11, 26, 6, 0, tzinfo=UTC),
        run_id=run_id,
    )


def _batches(frame: pd.DataFrame, rows: int) -> list[pa.RecordBatch]:
    return pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=rows)


def _messy(rows: int = 1_200) -> pd.DataFrame:
    """Generated customers as a CSV export gives them (all text), with extra damage."""
    frame = generate_customers(rows, seed=5).astype(str).replace({"None": None})
    frame.loc[3, "customerID"] = None  # no id: cannot be scored
    frame.loc[7, "MonthlyCharges"] = "twelve"  # unparseable number
    frame.loc[11, "InternetService"] = "Satellite"  # unseen category: scored, counted
    frame.loc[13, "TotalCharges"] = ""  # missing feature: scored, counted
    frame.loc[900] = frame.loc[20]  # the same customer again, in a later chunk
    return frame


def _staged_frame(directory: Path, name: str) -> pd.DataFrame:
    """A staged file's rows; for predictions, those publishing writes (repeats left out)."""
    frame = pq.read_table(directory / name).to_pandas()
    if name == PREDICTIONS_FILE:
        repeats = pq.read_table(directory / REPEATS_FILE).column("source_row").to_pylist()
        frame = frame[~frame["source_row"].isin(repeats)]
    return frame


def test_as_of_defaults_to_today_when_the_step_runs():
    assert resolve_as_of("", today=date(2030, 1, 2)) == date(2030, 1, 2)
    assert resolve_as_of("  ") == datetime.now(UTC).date()
    assert resolve_as_of("2026-03-01") == date(2026, 3, 1)
    with pytest.raises(SettingsError, match="YYYY-MM-DD, got '01/03/2026'"):
        resolve_as_of("01/03/2026")


def test_every_row_read_is_scored_or_rejected_on_messy_input(model, tmp_path: Path):
    frame = _messy()
    per_chunk = []
    run = stage_scores(
        _batches(frame, 250),
        model,
        _job(),
        tmp_path,
        tolerance=0.05,
        on_chunk=lambda r: per_chunk.append(r.rows_read == r.rows_scored + r.rows_rejected),
    )
    assert per_chunk and all(per_chunk)
    assert run.rows_read == len(frame) == run.rows_scored + run.rows_rejected
    predictions = _staged_frame(tmp_path, PREDICTIONS_FILE)
    rejects = _staged_frame(tmp_path, REJECTS_FILE).set_index("source_row")
    assert len(predictions) == run.rows_scored and len(rejects) == run.rows_rejected
    assert sum(run.tiers.values()) == run.rows_scored
    # rows are numbered from 1 across chunks, as a spreadsheet of the source would show
    assert rejects.loc[4, "reason"] == "`customerID` is blank"
    assert rejects.loc[8, "reason"] == "`MonthlyCharges` value twelve is not a number"
    first_id = frame.loc[20, "customerID"]
    assert rejects.loc[901, "reason"] == f"duplicate customerID {first_id} (first at row 21)"
    assert predictions["customer_id"].is_unique
    assert set(predictions.columns) >= set(PREDICTION_COLUMNS)


def test_a_chunk_of_only_unscorable_rows_is_staged_as_rejects(model, tmp_path: Path):
    frame = _messy(400)
    last_chunk = len(frame) - 100
    frame.iloc[last_chunk:, frame.columns.get_loc("customerID")] = None  # every row, no id
    run = stage_scores(_batches(frame, 100), model, _job(), tmp_path, tolerance=0.3)

    assert run.rows_read == len(frame) == run.rows_scored + run.rows_rejected
    rejects = _staged_frame(tmp_path, REJECTS_FILE).set_index("source_row")
    blank = rejects.loc[last_chunk + 1 : len(frame), "reason"]
    assert len(blank) == 100 and (blank == "`customerID` is blank").all()
    assert len(_staged_frame(tmp_path, PREDICTIONS_FILE)) == run.rows_scored


@pytest.mark.parametrize(("top_n", "top_share", "expected"), [(50, 0.0, 50), (0, 0.05, 60)])
def test_capacity_tiers_put_exactly_the_days_top_customers_in_high(
    model, tmp_path: Path, top_n: int, top_share: float, expected: int
):
    """Decided over the whole staged day, whatever the chunking, with every row kept."""
    frame = _messy()
    plain = stage_scores(
        _batches(frame, 250), model, _job(), tmp_path / "plain", tolerance=0.05, workers=2
    )
    capacity = replace(_job(), top_n=top_n, top_share=top_share)
    directory = tmp_path / "capacity"
    run = stage_scores(_batches(frame, 250), model, capacity, directory, tolerance=0.05, workers=2)
    before = _staged_frame(tmp_path / "plain", PREDICTIONS_FILE)
    after = _staged_frame(directory, PREDICTIONS_FILE)
    assert run.metadata()["rows"] == plain.metadata()["rows"]
    assert len(after) == len(before) == run.rows_scored
    assert capacity_count(run.rows_scored, top_n=top_n, top_share=top_share) == expected
    assert run.tiers["high"] == expected == (after["risk_tier"] == "high").sum()
    assert plain.tiers["high"] != expected
    assert sum(run.tiers.values()) == run.rows_scored
    high = after[after["risk_tier"] == "high"]
    rest = after[after["risk_tier"] != "high"]
    assert high["churn_probability"].min() >= rest["churn_probability"].max()
    assert (rest["risk_tier"] == np.where(rest["churn_probability"] >= 0.4, "medium", "low")).all()
    pd.testing.assert_frame_equal(
        before.drop(columns="risk_tier").reset_index(drop=True),
        after.drop(columns="risk_tier").reset_index(drop=True),
    )
    # Repeated customers, left out by publishing, keep their staged rows.
    repeats = len(pq.read_table(directory / REPEATS_FILE))
    assert repeats and len(pq.read_table(directory / PREDICTIONS_FILE)) == run.rows_scored + repeats


def test_every_customer_the_capacity_puts_in_high_or_medium_has_reasons(model, tmp_path: Path):
    """Capacity tiers are decided after every chunk is explained: a customer they move into
    `high` from under the `medium` cut-off still has reasons (`high_medium`, the default),
    the same as a run explaining everyone gives, and no one left `low` has any."""
    frame = _messy()
    capacity = replace(_job(), top_share=0.5)
    stage_scores(_batches(frame, 250), model, capacity, tmp_path / "capacity", tolerance=0.05)
    everyone = replace(_job(), reasons_for="all")
    stage_scores(_batches(frame, 250), model, everyone, tmp_path / "all", tolerance=0.05)
    after = _staged_frame(tmp_path / "capacity", PREDICTIONS_FILE).set_index("source_row")
    explained = _staged_frame(tmp_path / "all", PREDICTIONS_FILE).set_index("source_row")
    reasons = list(REASON_COLUMNS)
    moved_up = (after["risk_tier"] == "high") & (after["churn_probability"] < 0.4)
    assert moved_up.any()
    tiered = after["risk_tier"] != "low"
    assert after.loc[tiered, "baseline_probability"].notna().all()
    assert after.loc[tiered, "reason_1"].notna().any() and (~tiered).any()
    pd.testing.assert_frame_equal(after.loc[tiered, reasons], explained.loc[tiered, reasons])
    assert after.loc[~tiered, reasons].isna().all().all()


def test_unseen_categories_and_missing_values_are_scored_and_counted(model, tmp_path: Path):
    frame = _messy()
    run = stage_scores(_batches(frame, 250), model, _job(), tmp_path, tolerance=0.05)
    scored = set(_staged_frame(tmp_path, PREDICTIONS_FILE)["customer_id"])
    assert {frame.loc[11, "customerID"], frame.loc[13, "customerID"]} <= scored
    assert run.unseen_categories["InternetService"] == 1
    assert run.missing_values["TotalCharges"] >= 1


def test_results_do_not_depend_on_the_chunk_size(model, tmp_path: Path):
    frame = _messy()
    small = stage_scores(_batches(frame, 100), model, _job(), tmp_path / "a", tolerance=0.05)
    whole = stage_scores(_batches(frame, 10_000), model, _job(), tmp_path / "b", tolerance=0.05)
    assert small.metadata()["rows"] == whole.metadata()["rows"]
    assert small.tiers == whole.tiers
    a = _staged_frame(tmp_path / "a", PREDICTIONS_FILE).sort_values("source_row")
    b = _staged_frame(tmp_path / "b", PREDICTIONS_FILE).sort_values("source_row")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


@pytest.mark.parametrize("family", ["gradient_boosting", "logistic_regression"])
def test_worker_processes_stage_what_one_process_stages(
    family: str, model, customers, tmp_path: Path
):
    frame = _messy()
    clean = validate(customers, source="fixture").clean
    if family != "gradient_boosting":  # scored by its own predict_proba, not the tree kernel
        best = CandidateResult(family, {}, [], [], np.empty(0), 0.0)
        model = fit_final(clean, best, seed=0)
    profile = reference_profile(clean, model.predict_proba(clean[TELCO_CHURN.feature_names])[:, 1])
    runs = {
        kind: stage_scores(
            _batches(frame, 150),
            model,
            _job(),
            tmp_path / kind,
            tolerance=0.05,
            profile=profile,
            workers=workers,
        )
        for kind, workers in (("one", 1), ("pool", 2))
    }
    one, pool = runs["one"], runs["pool"]
    assert pool.metadata() == one.metadata()
    assert {k: v.tolist() for k, v in pool.tally.counts.items()} == {
        k: v.tolist() for k, v in one.tally.counts.items()
    }
    pd.testing.assert_frame_equal(pool.tally.sample, one.tally.sample)
    for name in (PREDICTIONS_FILE, REJECTS_FILE):
        staged = [
            _staged_frame(tmp_path / kind, name).sort_values("source_row", ignore_index=True)
            for kind in ("pool", "one")
        ]
        pd.testing.assert_frame_equal(*staged)


def test_a_worker_s_error_stops_the_run_with_its_message(model, tmp_path: Path):
    frame = generate_customers(400, seed=6).astype(str)
    frame["tenure"] = "unknown"
    with pytest.raises(ContractError, match="column `tenure` has the wrong type"):
        stage_scores(_batches(frame, 100), model, _job(), tmp_path, tolerance=0.05, workers=2)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), (None, None)],
)
def test_available_cpus_respects_the_container_quota(tmp_path: Path, cpu_max, expected):
    cgroup = tmp_path / "cpu.max"
    if cpu_max is not None:
        cgroup.write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(cgroup) == min(affinity, expected or affinity)


class _DiesOnChunk(BaseEstimator, ClassifierMixin):
    """A model whose process dies as a worker killed for memory would."""

    def fit(self, features, label):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, features):
        os._exit(9)


def test_a_worker_that_dies_stops_the_run_naming_the_rows_in_flight(tmp_path: Path):
    frame = generate_customers(300, seed=7)
    dies = Pipeline([("model", _DiesOnChunk())]).fit(frame, frame[TELCO_CHURN.label_column])
    with pytest.raises(ChurnError, match="worker process died during the chunks from row 1 on "):
        stage_scores(_batches(frame, 100), dies, _job(), tmp_path, tolerance=0.05, workers=2)


def test_a_broken_feed_stops_before_anything_is_published(model, tmp_path: Path):
    frame = generate_customers(400, seed=6).astype(str)
    frame.loc[::7, "tenure"] = "unknown"  # 58 rows, spread so each chunk looks numeric
    with pytest.raises(ContractError, match=r"58 of 400 rows \(14.5%\) cannot be scored"):
        stage_scores(_batches(frame, 100), model, _job(), tmp_path, tolerance=0.05)
    with pytest.raises(ContractError, match="is empty: no rows to score"):
        stage_scores([], model, _job(), tmp_path / "empty", tolerance=0.05)


def _stage(model, directory: Path, seed: int, run_id: str, as_of: date = AS_OF) -> None:
    frame = generate_customers(600, seed=seed)
    stage_scores(_batches(frame, 200), model, _job(run_id, as_of), directory, tolerance=0.05)


def _table(uri: str) -> pd.DataFrame:
    location = require_output(uri)
    with duckdb.connect(str(location.path), read_only=True) as con:
        return con.execute(f'SELECT * FROM "{location.table}"').df()


def test_rerunning_a_date_replaces_its_rows_and_other_dates_stay(model, tmp_path: Path):
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    _stage(model, tmp_path / "first", seed=1, run_id="first")
    publish_scores(tmp_path / "first", output_uri=output, as_of=AS_OF)
    once = _table(output)
    _stage(model, tmp_path / "again", seed=1, run_id="again")
    result = publish_scores(tmp_path / "again", output_uri=output, as_of=AS_OF)
    twice = _table(output)
    assert len(twice) == len(once) == result["rows"]["scored"]
    assert set(twice["run_id"]) == {"again"}
    assert twice["customer_id"].is_unique
    assert len(_table(related_table(output, "_rejects"))) == result["rows"]["rejected"]

    yesterday = date(2026, 11, 25)
    _stage(model, tmp_path / "yesterday", seed=2, run_id="yesterday", as_of=yesterday)
    publish_scores(tmp_path / "yesterday", output_uri=output, as_of=yesterday)
    both = _table(output)
    assert set(both["as_of_date"].astype(str)) == {"2026-11-25", "2026-11-26"}
    assert (both["as_of_date"].astype(str) == "2026-11-26").sum() == len(once)


def test_a_failure_between_staging_and_swap_leaves_old_predictions_intact(model, tmp_path: Path):
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    rejects_uri = related_table(output, "_rejects")
    _stage(model, tmp_path / "old", seed=1, run_id="old")
    publish_scores(tmp_path / "old", output_uri=output, as_of=AS_OF)
    before, rejects_before = _table(output), _table(rejects_uri)

    # A run that dies after staging never touches the warehouse.
    _stage(model, tmp_path / "new", seed=2, run_id="new")
    pd.testing.assert_frame_equal(_table(output), before)

    # A swap that fails midway (the predictions are replaced, then the staged rejects turn
    # out to lack a column) is rolled back as a whole.
    damaged = tmp_path / "new" / REJECTS_FILE
    pq.write_table(pq.read_table(damaged).drop_columns(["reason"]), damaged)
    with pytest.raises(SourceError, match="rolled back, the previous rows are intact"):
        publish_scores(tmp_path / "new", output_uri=output, as_of=AS_OF)
    pd.testing.assert_frame_equal(_table(output), before)
    pd.testing.assert_frame_equal(_table(rejects_uri), rejects_before)


def test_csv_exports_hold_the_published_rows(model, tmp_path: Path):
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    _stage(model, tmp_path / "staged", seed=3, run_id="r")
    result = publish_scores(
        tmp_path / "staged", output_uri=output, as_of=AS_OF, export_dir=tmp_path / "exports"
    )
    path = Path(result["exports"]["predictions"])
    assert path.name == f"{export_stem(output)}_2026-11-26.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    assert {r["customer_id"] for r in rows} == set(_table(output)["customer_id"])
    assert not list(path.parent.glob("*.partial"))
    rejects = Path(result["exports"]["rejects"])
    assert rejects.name == f"{export_stem(output + '_rejects')}_2026-11-26.csv"


@pytest.mark.faults
def test_csv_files_not_put_in_place_after_the_commit_are_completed_by_the_next_publish(
    model, tmp_path: Path, reliability
):
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    exports = tmp_path / "exports"
    _stage(model, tmp_path / "old", seed=1, run_id="old")
    publish_scores(tmp_path / "old", output_uri=output, as_of=AS_OF, export_dir=exports)
    # A folder where the rejects CSV goes: its rename fails after the table commit.
    blocked = exports / f"{export_stem(output + '_rejects')}_2026-11-26.csv"
    blocked.unlink()
    blocked.mkdir()
    _stage(model, tmp_path / "new", seed=2, run_id="new")
    with pytest.raises(ExportsPendingError, match=r"holds the new rows .* completes them") as e:
        publish_scores(tmp_path / "new", output_uri=output, as_of=AS_OF, export_dir=exports)
    assert set(_table(output)["run_id"]) == {"new"}
    assert e.value.published["rows"]["scored"] == len(_table(output))

    blocked.rmdir()
    later = date(2026, 11, 27)
    _stage(model, tmp_path / "later", seed=3, run_id="later", as_of=later)
    result = publish_scores(tmp_path / "later", output_uri=output, as_of=later, export_dir=exports)
    assert result["completed"] == [str(exports / f".{export_stem(output)}_2026-11-26.publish.json")]
    table = _table(output)
    exported = pd.read_csv(exports / f"{export_stem(output)}_2026-11-26.csv")
    rejects = pd.read_csv(blocked)
    assert set(exported["run_id"]) == set(rejects["run_id"]) == {"new"}
    today = table[table["as_of_date"].astype(str) == "2026-11-26"]
    lost = len(set(today["customer_id"]) ^ set(exported["customer_id"]))
    duplicates = len(exported) - exported["customer_id"].nunique()
    assert (lost, duplicates) == (0, 0)
    assert not list(exports.glob(".*.publish.json")) and not list(exports.glob("*.partial"))
    reliability.record(
        "fault",
        "publishing",
        "a CSV file that cannot be renamed into place after the table commit",
        outcome="refused",
        rows_lost=lost,
        duplicates=duplicates,
    )


def test_predictions_go_to_a_warehouse_table_not_a_file():
    with pytest.raises(SourceError, match=r"cannot write predictions to 'out.csv'"):
        require_output("out.csv")
    assert related_table("bq://p.d.churn", "_rejects") == "bq://p.d.churn_rejects"
    assert (
        related_table("duckdb://w.duckdb?table=t", "_rejects")
        == "duckdb://w.duckdb?table=t_rejects"
    )


def test_a_customer_repeated_in_a_later_chunk_is_published_once(model, tmp_path: Path):
    output = f"duckdb://{tmp_path / 'warehouse.duckdb'}?table=churn_predictions"
    frame = _messy()
    run = stage_scores(_batches(frame, 250), model, _job(), tmp_path / "staged", tolerance=0.05)
    assert pq.read_table(tmp_path / "staged" / REPEATS_FILE).num_rows >= 1  # across chunks
    result = publish_scores(
        tmp_path / "staged", output_uri=output, as_of=AS_OF, export_dir=tmp_path / "exports"
    )
    published = _table(output)
    assert published["customer_id"].is_unique
    assert len(published) == run.rows_scored == result["rows"]["scored"]
    exported = pd.read_csv(result["exports"]["predictions"])
    assert sorted(exported["customer_id"]) == sorted(published["customer_id"])


def test_customers_are_read_with_only_the_columns_scoring_uses(model, tmp_path: Path):
    frame = _messy().rename(columns={"Contract": "CONTRACT"}).assign(notes="free text")
    path = tmp_path / "customers.parquet"
    frame.to_parquet(path)
    batches = list(read_customers(str(path), 400))
    names = batches[0].schema.names
    assert "notes" not in names and TELCO_CHURN.label_column not in names
    assert "CONTRACT" in names and batches[0].column("CONTRACT").type.index_type == pa.int8()
    as_read = stage_scores(batches, model, _job(), tmp_path / "read", tolerance=0.05)
    whole = stage_scores(_batches(_messy(), 400), model, _job(), tmp_path / "whole", tolerance=0.05)
    assert as_read.metadata() == whole.metadata()
    pd.testing.assert_frame_equal(
        _staged_frame(tmp_path / "read", PREDICTIONS_FILE),
        _staged_frame(tmp_path / "whole", PREDICTIONS_FILE),
    )


def test_an_empty_as_of_is_today_in_the_schedules_time_zone():
    from zoneinfo import ZoneInfo

    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11
        assert resolve_as_of("", time_zone=zone) == datetime.now(ZoneInfo(zone)).date()
