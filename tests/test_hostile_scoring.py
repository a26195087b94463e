"""Hostile input to batch scoring: every row of a hostile table is scored or rejected with a
reason, exactly once (read == scored + rejected, no customer twice), or the run is refused
with one line before anything is published."""

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import assert_one_clear_line, csv_records, hostile_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_score import _job, _staged_frame, model  # noqa: F401 (a module fixture)
from test_training_pipeline import _submit

from components.data.sample_data import generate_customers
from components.errors import ChurnError
from components.scoring.chunked import read_customers, stage_scores
from components.scoring.staged import PREDICTIONS_FILE, REJECTS_FILE


def _write(frame: pd.DataFrame, path: Path) -> int:
    """Write the table as a feed would deliver it; the rows a reader of the file counts."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
        return csv_records(path)
    try:  # Parquet keeps types; a column Arrow can't type (mixed, huge ints) goes as text
        frame.to_parquet(path, index=False)
    except (pa.ArrowException, OverflowError):
        text = {c: "string" for c in frame.columns if frame[c].dtype == object}
        frame.astype(text).to_parquet(path, index=False)
    return pq.read_metadata(path).num_rows


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    table=hostile_tables(max_rows=300),
    suffix=st.sampled_from([".csv", ".parquet"]),
    batch_rows=st.sampled_from([7, 64, 1_000]),
    tolerance=st.sampled_from([0.05, 1.0]),
)
def test_every_row_of_a_hostile_table_is_scored_or_rejected_once(
    model,  # noqa: F811 (the imported fixture)
    table: tuple[pd.DataFrame, list[str]],
    suffix: str,
    batch_rows: int,
    tolerance: float,
    tmp_path_factory,
    reliability,
):
    frame, damage = table
    directory = tmp_path_factory.mktemp("s")
    path = directory / f"customers{suffix}"
    rows = _write(frame, path)
    description = f"{rows} rows as {suffix} in chunks of {batch_rows}: {', '.join(damage)}"
    job = _job()
    try:
        run = stage_scores(
            read_customers(str(path), batch_rows), model, job, directory, tolerance=tolerance
        )
    except ChurnError as refused:
        assert_one_clear_line(refused, str(path), job.source)
        reliability.record("input", "scoring", f"{description}: {refused}", outcome="refused")
        return
    predictions = _staged_frame(directory, PREDICTIONS_FILE)  # as publishing writes them
    rejects = _staged_frame(directory, REJECTS_FILE)
    scored, rejected = set(predictions["source_row"]), set(rejects["source_row"])
    accounted = scored | rejected
    rows_lost = rows - len(accounted & set(range(1, rows + 1)))
    duplicates = int(predictions["customer_id"].duplicated().sum()) + len(scored & rejected)
    reliability.record(
        "input",
        "scoring",
        description,
        outcome="handled",
        rows_lost=rows_lost,
        duplicates=duplicates,
    )
    assert run.rows_read == rows == run.rows_scored + run.rows_rejected
    assert (len(predictions), len(rejects)) == (run.rows_scored, run.rows_rejected)
    assert rows_lost == 0 and duplicates == 0 and accounted == set(range(1, rows + 1))
    assert rejects["reason"].str.len().gt(0).all()
    assert predictions["churn_probability"].between(0, 1).all()


def _ragged(path: Path) -> None:
    lines = generate_customers(30, seed=6, messy=False).to_csv(index=False).splitlines()
    path.write_text("\n".join([*lines[:20], lines[20] + ",extra", *lines[21:]]) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        # Found by the checks before the pipeline starts:
        ("a 0-byte CSV", ["--source", "{tmp}/empty.csv"], r"the file is empty"),
        (
            "duckdb:// on a CSV file",
            ["--source", "duckdb://{tmp}/c.csv?table=customers"],
            r"c\.csv is not a DuckDB database file",
        ),
        (
            "an --output that cannot be written",
            ["--source", "{tmp}/c.csv", "--output", "duckdb:///proc/churn.duckdb?table=p"],
            r"cannot create /proc/churn\.duckdb",
        ),
        # Found by step 2, inside kfp.local, past the header:
        (
            "a ragged CSV",
            ["--source", "{tmp}/ragged.csv"],
            r"ragged\.csv: line 21 has 22 fields where the header has 21",
        ),
    ],
)
def test_submit_score_refuses_hostile_input_with_one_line(
    champion_home: Path,
    tmp_path: Path,
    reliability,
    case: str,
    args: list[str],
    message: str,
):
    (tmp_path / "empty.csv").write_bytes(b"")
    generate_customers(30, seed=6).to_csv(tmp_path / "c.csv", index=False)
    _ragged(tmp_path / "ragged.csv")
    arguments = [arg.format(tmp=tmp_path) for arg in args]

    result = _submit("score", *arguments, "--json", home=champion_home)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    if case == "a ragged CSV":
        assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "failed"
        assert not (champion_home / "predictions").exists()  # nothing was published
    else:
        assert "kfp.local" not in result.stderr  # refused before any step ran
    reliability.record("input", "scoring", f"submit.py score on {case}", outcome="refused")
