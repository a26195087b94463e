"""Publishing to hostile names and text, generated as the hostile data cases are: table ids
are checked against the warehouse's naming rules before any SQL is built from them; two
tables of one name never share CSV files; exported text cannot start a spreadsheet formula,
while the warehouse table keeps it as it is. No row is lost or duplicated."""

from __future__ import annotations

import csv
import re
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import submit
from components.errors import SourceError
from components.scoring.publish import publish_scores
from components.scoring.staged import (
    PREDICTION_COLUMNS,
    PREDICTIONS_FILE,
    REJECT_COLUMNS,
    REJECTS_FILE,
    STAGED_PREDICTIONS,
    STAGED_REJECTS,
)
from components.warehouse import parse_uri
from components.warehouse.bigquery import _sql_table
from components.warehouse.staged import FORMULA_START, StagedTable, write_csv

pytestmark = pytest.mark.hostile
AS_OF = date(2026, 11, 26)
INJECTION = "bq://p.d.t`; DROP SCHEMA d CASCADE; --"
# tmp_path is shared by the examples of a test; each example writes its own files.
SHARED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

ids_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=10,
)
formula_ids = st.builds(lambda start, rest: start + rest, st.sampled_from(FORMULA_START), ids_text)


def _stage(directory: Path, ids: list[str], rejected: list[str], run_id: str = "r") -> Path:
    """Staged predictions and rejects, as the scoring step writes them."""
    directory.mkdir(parents=True)
    scored_at = datetime(2026, 11, 26, 6, tzinfo=UTC)
    rows = len(ids)
    predictions = {
        "source_row": list(range(rows)),
        "customer_id": ids,
        "churn_probability": [0.5] * rows,
        "churn_predicted": [True] * rows,
        "risk_tier": ["-high"] * rows,  # text of our own that starts a formula too
        "model_version": [1] * rows,
        "as_of_date": [AS_OF] * rows,
        "scored_at": [scored_at] * rows,
        "run_id": [run_id] * rows,
    }
    # Columns added later (control group, reasons) are empty here.
    predictions |= {n: [None] * rows for n in STAGED_PREDICTIONS.names if n not in predictions}
    pq.write_table(pa.table(predictions, schema=STAGED_PREDICTIONS), directory / PREDICTIONS_FILE)
    rejects = {
        "source_row": list(range(rows, rows + len(rejected))),
        "customer_id": rejected,
        "reason": ["=cmd|' /C calc'!A0"] * len(rejected),
        "as_of_date": [AS_OF] * len(rejected),
        "run_id": [run_id] * len(rejected),
    }
    pq.write_table(pa.table(rejects, schema=STAGED_REJECTS), directory / REJECTS_FILE)
    return directory


def _csv_column(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def _table_column(uri: str, column: str) -> list[str]:
    location = parse_uri(uri)
    with duckdb.connect(str(location.path), read_only=True) as con:
        return [r[0] for r in con.execute(f'SELECT "{column}" FROM "{location.table}"').fetchall()]


def _neutralised(text: str) -> str:
    """OWASP's rule, written out independently of the code under test."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@given(
    ids=st.lists(st.one_of(formula_ids, ids_text), min_size=1, max_size=12, unique=True),
    rejected=st.lists(st.one_of(formula_ids, ids_text), max_size=4),
)
@SHARED
def test_exported_text_cannot_start_a_formula(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str], rejected: list[str], reliability
) -> None:
    """The CSV writer publishing uses, on generated text (publishing itself, and the table
    keeping the text as it is, are the next test's)."""
    tmp = tmp_path_factory.mktemp("formulas")
    staged = _stage(tmp / "staged", ids, rejected)
    written = {}
    for name, columns in ((PREDICTIONS_FILE, PREDICTION_COLUMNS), (REJECTS_FILE, REJECT_COLUMNS)):
        destination = tmp / f"{name}.csv"
        write_csv(StagedTable("duckdb://w?table=t", staged / name, columns), destination)
        written[name] = destination
    exported = _csv_column(written[PREDICTIONS_FILE], "customer_id")
    assert sorted(exported) == sorted(_neutralised(i) for i in ids)
    assert set(_csv_column(written[PREDICTIONS_FILE], "risk_tier")) == {"'-high"}
    assert sorted(_csv_column(written[REJECTS_FILE], "customer_id")) == sorted(
        map(_neutralised, rejected)
    )
    assert set(_csv_column(written[REJECTS_FILE], "reason")) <= {"'=cmd|' /C calc'!A0"}
    lost = len({_neutralised(i) for i in ids} - set(exported))
    duplicates = len(exported) - len(set(exported))
    formulas = sum(i[:1] in FORMULA_START for i in [*ids, *rejected])
    reliability.record(
        "input",
        "publishing",
        f"CSV export of {len(ids)} ids, {len(rejected)} rejects, {formulas} starting a formula",
        outcome="handled",
        rows_lost=lost,
        duplicates=duplicates,
    )


def test_two_tables_of_one_name_never_share_export_files(tmp_path: Path, reliability) -> None:
    exports = tmp_path / "exports"
    outputs = [
        f"duckdb://{tmp_path / 'a' / 'warehouse.duckdb'}?table=churn_predictions",
        f"duckdb://{tmp_path / 'b' / 'warehouse.duckdb'}?table=churn_predictions",
        # This table's name is the first one's rejects table's name, in another warehouse.
        f"duckdb://{tmp_path / 'c.duckdb'}?table=churn_predictions_rejects",
    ]
    files = []
    for n, output in enumerate(outputs):
        ids = [f"{n}-{i}" for i in range(4)] + [f"=HYPERLINK({n})"]
        staged = _stage(tmp_path / f"staged{n}", ids, [f"{n}-bad"], run_id=f"run{n}")
        result = publish_scores(staged, output_uri=output, as_of=AS_OF, export_dir=exports)
        files += result["exports"].values()
    for n in range(len(outputs)):  # each table's CSV files hold its rows only
        predictions, rejects = files[2 * n], files[2 * n + 1]
        assert sorted(_csv_column(Path(predictions), "customer_id")) == sorted(
            [*(f"{n}-{i}" for i in range(4)), f"'=HYPERLINK({n})"]  # neutralised in the CSV,
        )
        assert _csv_column(Path(rejects), "customer_id") == [f"{n}-bad"]
        assert f"=HYPERLINK({n})" in _table_column(outputs[n], "customer_id")  # not the table

    assert len(set(files)) == len(files) == 6
    assert sorted(p.name for p in exports.glob("*.csv")) == sorted(Path(f).name for f in files)
    reliability.record(
        "input",
        "publishing",
        "three tables named alike in three warehouses, one export folder",
        outcome="handled",
    )


def _documented_bigquery_id(project: str, dataset: str, table: str) -> bool:
    """BigQuery's naming rules as its documentation states them, written out here
    independently of the code under test (stricter where the code says it is: no spaces in
    a table name, no 6-character minimum on a project id)."""
    return bool(
        re.fullmatch(r"[a-z]([a-z0-9-]{0,28}[a-z0-9])?", project)
        and re.fullmatch(r"[A-Za-z0-9_]{1,1024}", dataset)
        and table
        and all(
            unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) in ("Pc", "Pd")
            for c in table
        )
        and len(table.encode()) <= 990
    )


names = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
    st.sampled_from(["churn", "t`", "t x", "d;", "DROP", "p.q", "", "`", "\\", "t--", "ü_1"]),
)


@given(project=names, dataset=names, table=names)
@SHARED
def test_table_ids_are_refused_unless_they_follow_the_naming_rules(
    project: str, dataset: str, table: str, reliability
) -> None:
    uri = f"bq://{project}.{dataset}.{table}"
    try:
        parsed = parse_uri(uri)
    except SourceError as exc:
        message = str(exc)
        assert "\n" not in message and repr(uri) in message
        outcome = "refused"
    else:
        assert _documented_bigquery_id(project, dataset, table), f"{uri!r} was accepted"
        assert parsed.bigquery_table == f"{project}.{dataset}.{table}"
        assert _sql_table(parsed.bigquery_table) == f"`{parsed.bigquery_table}`"
        outcome = "handled"
    reliability.record("input", "publishing", f"table id {uri[:40]!r}", outcome=outcome)


def test_well_formed_table_ids_are_accepted() -> None:
    # The property above also holds for a parser that refuses everything.
    for uri in ("bq://acme-corp.churn.churn_predictions", "bq://p.d_1.t-2", "bq://p.ds.ü_1"):
        assert parse_uri(uri).bigquery_table == uri.removeprefix("bq://")


def test_sql_in_a_table_id_is_refused_in_one_line_before_any_sql(
    tmp_path: Path, no_config: Path, capsys: pytest.CaptureFixture[str], reliability
) -> None:
    with pytest.raises(SourceError, match=r"table name 't`; DROP SCHEMA d CASCADE; --' must"):
        publish_scores(_stage(tmp_path / "staged", ["a"], []), output_uri=INJECTION, as_of=AS_OF)
    with pytest.raises(SourceError, match=r"cannot be written in SQL"):
        _sql_table("p.d.t`x")  # the last guard, should a name get past the parser
    code = submit.main(
        ["score", "--local", "--home", str(tmp_path / "home"), "--config", str(no_config),
         "--output", INJECTION]
    )  # fmt: skip
    printed = capsys.readouterr().err.strip()
    assert code == 1
    assert printed.startswith("error: ") and "\n" not in printed, printed
    assert "must be letters, digits, _ and - only" in printed
    assert not (tmp_path / "home" / "pipeline_root").exists(), "a run started"
    reliability.record("input", "publishing", f"--output {INJECTION!r}", outcome="refused")
