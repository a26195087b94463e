"""Hostile input to training: malformed files and tables are refused with one line naming
the file, column or line, or trained on with every row kept or set aside with a reason;
never a library's own error, never a row lost."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import assert_one_clear_line, csv_records, hostile_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_training_pipeline import FAST, _submit

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.split import cv_folds, split_train_test
from components.data.validate import validate
from components.errors import ChurnError, ContractError, SourceError
from components.model.search import FAMILIES, require_enough_rows, search_candidates
from components.warehouse import iter_batches, read_table

ID, LABEL = TELCO_CHURN.id_column, TELCO_CHURN.label_column


def _clean_csv(path: Path, rows: int = 8) -> str:
    generate_customers(rows, seed=3, messy=False).to_csv(path, index=False)
    return path.read_text()


def _write(kind: str, path: Path) -> None:
    """One malformed file of each kind the readers must refuse."""
    lines = _clean_csv(path).splitlines()
    if kind == "not UTF-8":
        path.write_bytes("\n".join(lines).replace("Male", "Mäle", 1).encode("latin-1"))
    elif kind == "random bytes":
        path.write_bytes(os.urandom(2_000).replace(b"\n", b"\xff"))
    elif kind == "0 bytes":
        path.write_bytes(b"")
    elif kind == "a row with a field too many":
        path.write_text("\n".join([*lines[:5], lines[5] + ",extra", *lines[6:]]) + "\n")
    elif kind == "a row with fields missing":
        path.write_text("\n".join([*lines[:5], lines[5].rsplit(",", 2)[0], *lines[6:]]) + "\n")
    elif kind == "a stray quote":  # would swallow every later row into one value
        path.write_text("\n".join([*lines[:5], lines[5].replace(",", ',"', 1), *lines[6:]]))
    elif kind == "a column named twice":
        path.write_text("\n".join([lines[0].replace("MonthlyCharges", "tenure"), *lines[1:]]))
    elif kind == "a column of lists":
        pq.write_table(pa.table({ID: ["a", "b"], "tenure": [[1, 2], []]}), path)
    elif kind == "a column named twice in Parquet":
        pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], ["tenure"] * 2), path)
    elif kind == "a column of bytes that are not UTF-8":
        pq.write_table(pa.table({ID: pa.array([b"\xff\xfe", b"A"], pa.binary())}), path)
    elif kind == "a folder":
        path.unlink()
        path.mkdir()
    elif kind == "truncated Parquet":
        generate_customers(50, seed=3, messy=False).to_parquet(path)
        path.write_bytes(path.read_bytes()[:-100])


MALFORMED_FILES = [
    ("c.csv", "not UTF-8", r"line 2 is not UTF-8 text \(byte 0xe4"),
    ("c.csv", "random bytes", r"line 1 is not UTF-8 text"),
    ("c.csv", "0 bytes", r"the file is empty: no header, no rows"),
    ("c.csv", "a row with a field too many", r"line 6 has 22 fields where the header has 21"),
    ("c.csv", "a row with fields missing", r"line 6 has 19 fields where the header has 21"),
    ("c.csv", "a stray quote", r"line 6 has a quoted value that spans lines"),
    ("c.csv", "a column named twice", r"column 'tenure' appears twice; keep one"),
    ("c.csv", "a folder", r"c\.csv is a folder, not a file"),
    ("c.parquet", "random bytes", r"not a readable Parquet file"),
    ("c.parquet", "a column of lists", r"column 'tenure' holds list<.*> values"),
    ("c.parquet", "a column named twice in Parquet", r"column 'tenure' appears twice"),
    ("c.parquet", "truncated Parquet", r"not a readable Parquet file"),
    ("c.parquet", "a column of bytes that are not UTF-8", r"'customerID' holds bytes that are not"),
]


@pytest.mark.parametrize(("name", "kind", "message"), MALFORMED_FILES)
def test_a_malformed_file_is_refused_with_one_line_naming_it(
    tmp_path: Path, reliability, name: str, kind: str, message: str
):
    path = tmp_path / name
    _write(kind, path)
    # Training reads the table whole, scoring streams it: both refuse it alike.
    for area, read in (
        ("training", lambda: read_table(str(path))),
        ("scoring", lambda: list(iter_batches(str(path), 3))),
    ):
        with pytest.raises(SourceError, match=message) as refused:
            read()
        assert_one_clear_line(refused.value, str(path))
        reliability.record("input", area, f"{name}: {kind}", outcome="refused")


def test_a_spreadsheet_s_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path, reliability):
    frame = generate_customers(30, seed=4, messy=False)
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode())

    for area, table in (
        ("training", read_table(str(path))),
        ("scoring", pa.Table.from_batches(list(iter_batches(str(path), 7))).to_pandas()),
    ):
        reliability.record(
            "input", area, "CSV with a byte-order mark", outcome="handled",
            rows_lost=len(frame) - len(table),
        )  # fmt: skip
        assert list(table.columns) == list(frame.columns)
        assert len(validate(table, source=str(path)).clean) == len(frame)


def test_a_parquet_column_of_bytes_is_read_as_text(tmp_path: Path, reliability):
    frame = generate_customers(10, seed=4, messy=False)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ids = pa.array([i.encode() for i in frame[ID]], pa.binary())
    path = tmp_path / "c.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index(ID), ID, ids), path)

    whole = read_table(str(path))[ID].tolist()
    streamed = pa.Table.from_batches(list(iter_batches(str(path), 4))).column(ID).to_pylist()
    assert whole == streamed == frame[ID].tolist()  # not "b'7590-VHVEG'"
    for area in ("training", "scoring"):
        reliability.record("input", area, "Parquet ids stored as bytes", outcome="handled")


@pytest.mark.parametrize("column", [ID, "gender", LABEL])
def test_a_warehouse_column_of_lists_is_refused_naming_it(tmp_path: Path, reliability, column: str):
    import duckdb

    uri = f"duckdb://{tmp_path}/w.duckdb?table=customers"
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.register("generated", generate_customers(30, seed=4, messy=False))
        con.execute(
            f"CREATE TABLE customers AS SELECT * REPLACE (['x'] AS {column}) FROM generated"
        )

    scoring = [] if column == LABEL else [("serving", "scoring")]  # scoring reads no label
    for mode, area in [("training", "training"), *scoring]:
        with pytest.raises(ContractError, match=f"column `{column}` holds lists or other"):
            validate(read_table(uri), source=uri, mode=mode)
        reliability.record("input", area, f"a DuckDB LIST column {column}", outcome="refused")


@pytest.mark.parametrize(
    ("rows", "churners", "problem"),
    [
        (10, None, r"has 2 churners and 6 stayers .*5-fold cross-validation needs at least 5"),
        (
            40,
            None,
            r"smallest fold trains on 25 rows, and k_nearest_neighbors tries 100 "
            r"neighbours: give at least 125 training rows",
        ),
        (300, 8, r"smallest fold trains on 4 of one class, and SMOTE needs 6: give at least 8"),
    ],
)
def test_too_few_rows_to_train_are_refused_before_anything_is_fitted(
    reliability, rows: int, churners: int | None, problem: str
):
    clean = validate(generate_customers(rows, seed=3, messy=False), source="s").clean
    if churners is not None:
        clean = clean.drop(clean.index[clean[LABEL] == 1][churners:]).reset_index(drop=True)
    train, _ = split_train_test(clean, test_size=0.2, seed=1)

    with pytest.raises(ContractError, match=problem) as refused:
        search_candidates(train, n_folds=5, seed=1, candidates_per_family=1, budget_seconds=1)
    assert_one_clear_line(refused.value, "training split")
    reliability.record("input", "training", f"{len(clean)} training rows", outcome="refused")


# Blanks, non-numbers that parse, out-of-range and huge numbers, disguised categories, junk.
EVERY_KIND = [None, "", "  ", "nan", "inf", "-inf", "1e309", -1, -0.5, 10**30, float("nan")]
EVERY_KIND += ["\uff11\uff12", "🙂", " yes ", "no internet SERVICE", "\x00", True, "0x1F"]


@pytest.mark.parametrize("column", [c.name for c in TELCO_CHURN.columns])
def test_each_contract_column_takes_each_kind_of_hostile_value(column: str, reliability):
    """One row of 40 holds the value: training keeps it (normalised) or sets it aside with
    a reason naming the column; scoring (`serving` mode) also keeps unknown categories."""
    base = generate_customers(40, seed=9, messy=False).astype(object)
    for value in EVERY_KIND:
        frame = base.copy()
        frame.at[20, column] = value
        for mode, area in (("training", "training"), ("serving", "scoring")):
            if mode == "serving" and column == LABEL:
                continue
            result = validate(frame, source="t.csv", mode=mode, tolerance=0.05)
            rejected = dict(
                zip(result.rejects["row_number"], result.rejects["reason"], strict=True)
            )
            rows_lost = len(frame) - len(result.clean) - result.rows_rejected
            description = f"`{column}` = {value!r} in 1 of 40 rows"
            reliability.record("input", area, description, outcome="handled", rows_lost=rows_lost)
            assert rows_lost == 0 and set(rejected) <= {21}
            assert all(f"`{column}`" in reason for reason in rejected.values())
            if mode == "training":
                _assert_typed(result.clean)


def _read(frame: pd.DataFrame, via: str, path: Path) -> tuple[pd.DataFrame, int]:
    """The table as training reads it, from the frame or from a file at `path` written from
    it, and how many rows a reader of that file would count."""
    if via == "frame":
        return frame, len(frame)
    if via == "csv":
        frame.to_csv(path, index=False)
        return read_table(str(path)), csv_records(path)
    try:  # Parquet keeps types; a column Arrow can't type (mixed, huge ints) goes as text
        frame.to_parquet(path, index=False)
    except (pa.ArrowException, OverflowError):
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(
            path, index=False
        )
    return read_table(str(path)), pq.read_metadata(path).num_rows


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    table=hostile_tables(max_rows=300),
    via=st.sampled_from(["frame", "csv", "parquet"]),
    tolerance=st.sampled_from([0.05, 0.5, 1.0]),
)
def test_hostile_tables_are_trained_on_or_refused_with_one_line(
    table: tuple[pd.DataFrame, list[str]], via: str, tolerance: float, tmp_path_factory, reliability
):
    frame, damage = table
    description = f"{len(frame)} rows via {via}: {', '.join(damage) or 'clean'}"
    source = str(tmp_path_factory.mktemp("t") / f"customers.{via}")
    try:
        raw, expected_rows = _read(frame, via, Path(source))
        result = validate(raw, source=source, tolerance=tolerance)
        kept = result.clean
        rows_lost = expected_rows - len(kept) - result.rows_rejected
        duplicates = int(kept[ID].duplicated().sum())
        assert rows_lost == 0 and duplicates == 0, description
        _assert_typed(kept)
        train, test = split_train_test(kept, test_size=0.2, seed=0)
        assert len(train) + len(test) == len(kept)
        assert not set(train[ID]) & set(test[ID])
        require_enough_rows(train, cv_folds(train, n_folds=3, seed=0), FAMILIES)
    except ChurnError as refused:
        assert_one_clear_line(refused, source, "training split", "churners")
        reliability.record("input", "training", f"{description}: {refused}", outcome="refused")
        return
    reliability.record(
        "input",
        "training",
        description,
        outcome="handled",
        rows_lost=rows_lost,
        duplicates=duplicates,
    )


def _assert_typed(kept: pd.DataFrame) -> None:
    """Rows kept for training hold only values the contract allows."""
    for column in TELCO_CHURN.numeric:
        values = kept[column.name].dropna()
        assert values.between(column.min_value, column.max_value).all(), column.name
        assert column.nullable or kept[column.name].notna().all(), column.name
    for column in TELCO_CHURN.categorical:
        assert set(kept[column.name].dropna()) <= set(column.categories), column.name
    assert kept[LABEL].isin([0, 1]).all() and kept[ID].str.strip().ne("").all()


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=3_000),
        st.text(max_size=500).map(str.encode),
        st.builds(lambda cut, junk: (cut, junk), st.integers(0, 2_000), st.binary(max_size=8)),
    ),
    suffix=st.sampled_from([".csv", ".parquet"]),
)
def test_any_bytes_as_a_file_are_read_or_refused_with_one_line(
    data: bytes | tuple[int, bytes], suffix: str, tmp_path_factory, reliability
):
    path = tmp_path_factory.mktemp("b") / f"customers{suffix}"
    if isinstance(data, tuple):  # a real file of customers, damaged at one place
        cut, junk = data
        generate_customers(40, seed=5).pipe(
            lambda f: f.to_csv(path, index=False) if suffix == ".csv" else f.to_parquet(path)
        )
        whole = path.read_bytes()
        path.write_bytes(whole[:cut] + junk + whole[cut + len(junk) :])
        description = f"{suffix} with {len(junk)} bytes replaced at {cut}"
    else:
        path.write_bytes(data)
        description = f"{len(data)} random bytes as {suffix}"
    for area in ("training", "scoring"):
        try:
            if area == "training":
                raw = read_table(str(path))
                rows = len(raw)
                result = validate(raw, source=str(path), tolerance=1.0)
                assert len(result.clean) + result.rows_rejected == result.rows_read == rows
            else:
                rows = sum(batch.num_rows for batch in iter_batches(str(path), 16))
        except ChurnError as refused:
            assert_one_clear_line(refused, str(path))
            reliability.record("input", area, description, outcome="refused")
            continue
        expected = csv_records(path) if suffix == ".csv" else pq.read_metadata(path).num_rows
        reliability.record("input", area, description, outcome="handled", rows_lost=expected - rows)
        assert rows == expected, description


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        # Refused before the pipeline starts:
        ("--seed -1", ["--seed", "-1"], r"seed = -1 from flag --seed is not allowed: must be a "),
        ("--source ''", ["--source", ""], r"--source is empty: give a value or leave it out"),
        (
            "a --config that does not exist",
            ["--config", "{tmp}/churn.toml"],
            r"config file .*churn\.toml does not exist",
        ),
        ("not UTF-8", ["--source", "{tmp}/not UTF-8.csv"], r"line 2 is not UTF-8 text"),
        (
            "a column of lists",
            ["--source", "{tmp}/a column of lists.parquet"],
            r"column 'tenure' holds list<.*> values",
        ),
        # Refused by step 1 and step 4, inside kfp.local:
        (
            "a ragged row",
            ["--source", "{tmp}/a row with a field too many.csv"],
            r"line 6 has 22 fields where the header has 21",
        ),
        (
            "40 rows",
            ["--source", "{tmp}/40 rows.csv"],
            r"k_nearest_neighbors tries 100 neighbours: give at least 150 training rows",
        ),
    ],
)
def test_submit_train_refuses_hostile_input_with_one_line(
    tmp_path: Path, reliability, case: str, args: list[str], message: str
):
    generate_customers(40, seed=3, messy=False).to_csv(tmp_path / "40 rows.csv", index=False)
    for kind in ("not UTF-8", "a row with a field too many"):
        _write(kind, tmp_path / f"{kind}.csv")
    _write("a column of lists", tmp_path / "a column of lists.parquet")
    arguments = [arg.format(tmp=tmp_path) for arg in args]

    result = _submit("train", *arguments, "--json", *FAST, home=tmp_path / "h")

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    if case in ("a ragged row", "40 rows"):
        assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "failed"
    else:
        assert "kfp.local" not in result.stderr  # refused before any step ran
    reliability.record("input", "training", f"submit.py train with {case}", outcome="refused")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--home", ""], "error: --home is empty: give a value or leave it out"),
        (["score", "--drift-threshold", "nan"], "error: drift_threshold = nan from flag --drift"),
        (["score", "--drift-threshold", "-1"], "error: drift_threshold = -1.0 from flag --drift"),
    ],
)
def test_empty_or_meaningless_settings_are_refused_before_anything_runs(
    args: list[str], message: str, no_config: Path, capsys, reliability
):
    import submit

    assert submit.main([*args, "--config", str(no_config), "--local"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(message), errors
    area = "training" if args[0] == "train" else "scoring"
    reliability.record("input", area, f"submit.py {' '.join(args)!r}", outcome="refused")
