"""Hostile customer tables for the `hostile` tests: the values a careless export, a broken
feed or a hostile user puts in them, as hypothesis strategies, and the checks every outcome
must pass (one clear line when refused, every row accounted for when handled)."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import pandas as pd
from hypothesis import strategies as st

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.errors import ChurnError

CONTRACT_COLUMNS = [column.name for column in TELCO_CHURN.columns]

# Text that looks like a value and isn't, or is one in disguise (" yes ", fullwidth digits).
TRICKY_TEXT = [
    "",
    " ",
    "\t",
    "\u00a0",
    "\ufeff",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "None",
    "null",
    "NA",
    "#VALUE!",
    "1e309",
    "-1",
    "-0",
    "1,5",
    "0x1F",
    "\uff11\uff12",  # fullwidth digits
    "٣",
    " yes ",
    "YES",
    "no\n",
    "Fiber Optic",
    "\x00",
    "🙂",
    "Ω≈ç√",
    "'; DROP TABLE customers; --",
    'a "quoted", value',
    "line\nbreak",
]
hostile_values = st.one_of(
    st.none(),
    st.sampled_from(TRICKY_TEXT),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    # What a DuckDB LIST, a BigQuery REPEATED or RECORD column, or a JSON client sends.
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)


@functools.cache
def _pool() -> pd.DataFrame:
    """Clean and messy generated customers to take tables from (generated once)."""
    clean = generate_customers(300, seed=31, messy=False)
    messy = generate_customers(300, seed=32)
    return pd.concat([clean, messy], ignore_index=True).astype(object)


@st.composite
def hostile_tables(draw: st.DrawFn, *, max_rows: int = 120) -> tuple[pd.DataFrame, list[str]]:
    """A customer table of up to `max_rows` rows (all columns as objects, as a CSV reads),
    with some cells of some columns hostile, and maybe a structural change: a column
    dropped, renamed in another case, repeated in another case, an extra column, or
    customers repeated. Returns the table and what was done to it."""
    pool = _pool()
    start = draw(st.integers(0, len(pool) - max_rows))
    # Tables of a few rows, and tables big enough to train on (150 rows and more).
    rows = draw(st.one_of(st.integers(1, 20), st.integers(min(150, max_rows), max_rows)))
    frame = pool.iloc[start : start + rows].reset_index(drop=True).copy()
    done = []
    for column in draw(st.lists(st.sampled_from(CONTRACT_COLUMNS), max_size=3, unique=True)):
        # A few bad cells (under the tolerance), or any number of them.
        most = draw(st.sampled_from([3, len(frame)]))
        positions = draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=most))
        for position in positions:
            frame.at[position, column] = draw(hostile_values)
        done.append(f"{len(set(positions))} hostile `{column}` values")
    change = draw(
        st.sampled_from(["none", "drop", "case", "repeat in another case", "extra", "copies"])
    )
    column = draw(st.sampled_from(CONTRACT_COLUMNS))
    if change == "drop":
        frame = frame.drop(columns=column)
    elif change == "case":
        frame = frame.rename(columns={column: f" {column.upper()} "})
    elif change == "repeat in another case":
        frame[column.swapcase()] = frame[column]
    elif change == "extra":
        value = draw(hostile_values)
        frame[draw(st.text(min_size=1, max_size=8).filter(_not_a_contract_name))] = [value] * len(
            frame
        )
    elif change == "copies":
        frame = pd.concat([frame, frame.sample(frac=0.3, random_state=rows)], ignore_index=True)
    if change != "none":
        done.append(f"{change} `{column}`" if change != "copies" else "repeated customers")
    return frame, done


def _not_a_contract_name(name: str) -> bool:
    return name.strip().casefold() not in {c.casefold() for c in CONTRACT_COLUMNS}


def assert_one_clear_line(error: ChurnError, *where: str) -> str:
    """A refusal's message: one line, naming where the problem is (any of `where`)."""
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert any(w in message for w in where), f"{message!r} names none of {where}"
    return message


def csv_records(path: Path) -> int:
    """Rows of a CSV file as Python's own CSV reader counts them (blank lines skipped,
    header excluded): an independent count to check a reader against."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return max(sum(1 for record in csv.reader(handle) if record) - 1, 0)
