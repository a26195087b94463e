"""Validation against the data contract.

Fatal problems (missing columns, a wrong column type, an empty table, a single-class label,
more invalid rows than tolerated) raise `ContractError` with one line naming the problem.
Everything else is row-level: each input row is either kept, typed and normalised, or set
aside with its reason, so that `rows read == rows kept + rows rejected` always holds.
"""

import functools
import re
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from kfp.dsl import Dataset, Input, Output

from components.contract import TELCO_CHURN, Column, DataContract, column_key
from components.errors import ContractError
from components.stage import stage

Mode = Literal["training", "serving"]

# A column where more than this share of non-blank values cannot be read is the wrong
# type altogether (a shifted export, a renamed column), not a column with a few bad rows.
# A few values are no evidence of a column's type: a one-row request with one bad value is
# a bad row, not a wrong-typed column.
WRONG_TYPE_SHARE = 0.5
WRONG_TYPE_MIN_VALUES = 20
_LABEL_WORDS = {"yes": 1, "no": 0, "1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}


@dataclass
class ValidationResult:
    """Typed rows that passed, rows set aside (`row_number`, id, `reason`) and counts.

    In `clean`, category columns are pandas `Categorical` (their categories: the values
    this input held, so two chunks' categories may differ and concatenate as objects),
    numbers are float64 and the id is text."""

    clean: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    duplicates: int
    missing_values: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, int] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejects)


# Row-level problems of one column: the rows' positions and their messages (one text for all,
# or one per row). Bad rows are few, so messages are only ever built for them.
_Problem = tuple[np.ndarray, str | np.ndarray]


@dataclass
class _Checked:
    """One column's typed values (a Series or an array in row order: the clean frame is
    built from them once), problems, blank mask and count of unseen categories."""

    values: pd.Series | pd.api.extensions.ExtensionArray | np.ndarray
    problems: list[_Problem]
    blank: np.ndarray
    unseen: int = 0


def validate(
    raw: pd.DataFrame,
    *,
    source: str,
    mode: Mode = "training",
    tolerance: float = 0.05,
    contract: DataContract = TELCO_CHURN,
    first_row_number: int = 1,
) -> ValidationResult:
    """Check `raw` (read from `source`, named in messages) against the contract.

    Training rejects unknown category values and rows missing a required number; serving
    keeps them (the model imputes and ignores unknowns) and counts them instead.
    `first_row_number` numbers rows across chunks of one streamed table.
    """
    if raw.empty:
        raise ContractError(f"{source} is empty: no rows to {_verb(mode)}")
    table = _canonical_columns(raw, source, mode, contract)
    row_numbers = np.arange(first_row_number, first_row_number + len(table))
    problems: list[_Problem] = []
    typed: dict[str, pd.Series | pd.api.extensions.ExtensionArray | np.ndarray] = {}
    missing: dict[str, int] = {}
    unseen: dict[str, int] = {}
    for column in contract.required(with_label=mode == "training"):
        checked = _check_column(table[column.name], column, mode, source)
        typed[column.name] = checked.values
        problems += checked.problems
        if column.kind in ("numeric", "categorical") and checked.blank.any():
            missing[column.name] = int(checked.blank.sum())
        if checked.unseen:
            unseen[column.name] = checked.unseen

    clean = pd.DataFrame(typed, index=table.index, copy=False)
    invalid = np.zeros(len(table), dtype=bool)
    for positions, _ in problems:
        invalid[positions] = True
    invalid_positions = np.flatnonzero(invalid)
    invalid_reasons = _join_reasons(invalid_positions, problems)
    n_invalid = len(invalid_positions)
    if n_invalid > tolerance * len(table):
        common = pd.Series(invalid_reasons).str.split("; ").explode().value_counts().index[0]
        raise ContractError(
            f"{source}: {n_invalid} of {len(table)} rows ({n_invalid / len(table):.1%}) are "
            f"invalid, over the {tolerance:.0%} tolerance; most common problem: {_shown(common)}"
        )

    id_column = contract.id_column
    valid_positions = np.flatnonzero(~invalid)
    # Valid ids are never blank, so codes in order of first appearance find each id's first
    # valid row without a groupby over the whole chunk.
    codes, _ = pd.factorize(clean[id_column].iloc[valid_positions])
    _, first_of_code = np.unique(codes, return_index=True)
    first_valid = first_of_code[codes]
    is_repeat = first_valid != np.arange(len(codes))
    duplicate_positions = valid_positions[is_repeat]
    repeat_reasons = duplicate_reasons(
        id_column,
        clean[id_column].iloc[duplicate_positions],
        row_numbers[valid_positions[first_valid[is_repeat]]],
    )
    kept = ~invalid
    kept[duplicate_positions] = False
    rejected_positions = np.flatnonzero(~kept)
    reasons = np.empty(len(rejected_positions), dtype=object)
    reasons[np.searchsorted(rejected_positions, invalid_positions)] = invalid_reasons
    reasons[np.searchsorted(rejected_positions, duplicate_positions)] = repeat_reasons
    rejects = pd.DataFrame(
        {
            "row_number": row_numbers[rejected_positions],
            id_column: table[id_column].iloc[rejected_positions].astype(object).to_numpy(),
            "reason": reasons,
        }
    )
    if not kept.all():  # a copy of the whole frame, only needed when rows go
        clean = clean[kept].reset_index(drop=True)
    if mode == "training":
        classes = clean[contract.label_column].unique()
        if len(classes) < 2:
            only = {1: contract.positive_label, 0: contract.negative_label}.get(
                classes[0] if len(classes) else None, "none"
            )
            raise ContractError(
                f"{source}: label `{contract.label_column}` has a single class ({only!r}) in "
                f"{len(clean)} valid rows; training needs both churners and stayers"
            )
    return ValidationResult(
        clean=clean,
        rejects=rejects,
        rows_read=len(table),
        duplicates=len(duplicate_positions),
        missing_values=missing,
        unseen_categories=unseen,
    )


def duplicate_reasons(id_column: str, ids: Iterable[Any], first_rows: Iterable[int]) -> list[str]:
    """The reject reason of each repeated customer: its id and the row it first appeared at
    (batch scoring finds repeats across chunks with the same words)."""
    return [
        f"duplicate {id_column} {cid} (first at row {first})"
        for cid, first in zip(ids, first_rows, strict=True)
    ]


def _shown(text: str) -> str:
    """`text` for a one-line message: line breaks and other unprintable characters escaped
    (a value or column name may hold them; a message must stay one line)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _verb(mode: Mode) -> str:
    return "train on" if mode == "training" else "score"


def _canonical_columns(
    raw: pd.DataFrame, source: str, mode: Mode, contract: DataContract
) -> pd.DataFrame:
    """Rename columns to the contract's spelling, matching names by `column_key`."""
    by_key: dict[str, str] = {}
    for name in raw.columns:
        key = column_key(name)
        if key in by_key and by_key[key] == name:
            raise ContractError(f"{source}: column {name!r} appears twice; keep one")
        if key in by_key:
            raise ContractError(
                f"{source}: columns {by_key[key]!r} and {name!r} differ only in case; keep one"
            )
        by_key[key] = name
    required = contract.required(with_label=mode == "training")
    absent = [c.name for c in required if column_key(c.name) not in by_key]
    if absent:
        raise ContractError(
            f"column{'s' if len(absent) > 1 else ''} {', '.join(f'`{a}`' for a in absent)} "
            f"missing from {source}; found: {', '.join(_shown(str(c)) for c in raw.columns)}"
        )
    # Each of rename and reset_index copies the frame's structure (~0.1 ms even on one row):
    # done only when there is something to change.
    renames = {by_key[column_key(c.name)]: c.name for c in required}
    renames = {old: new for old, new in renames.items() if old != new}
    table = raw.rename(columns=renames) if renames else raw
    index = table.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return table
    return table.reset_index(drop=True)


def _join_reasons(positions: np.ndarray, problems: list[_Problem]) -> np.ndarray:
    """The '; '-separated problems of each row at `positions` (sorted), in column order.

    A column gives a row at most one problem, so appending column by column yields each
    row's problems in the order a row-by-row check would."""
    reasons = np.full(len(positions), "", dtype=object)
    for rows, messages in problems:
        at = np.searchsorted(positions, rows)
        earlier = reasons[at]
        reasons[at] = np.where(earlier == "", messages, earlier + "; " + messages)
    return reasons


# Up to this many rows (a serving request), a column's string work is done value by value in
# Python: pandas' and Arrow's string kernels cost ~0.1 ms per call whatever the size, which
# over twenty columns is most of a one-instance request. Both ways give the same values.
SMALL_ROWS = 64


def _text(values: pd.Series) -> tuple[pd.Series | pd.api.extensions.ExtensionArray, np.ndarray]:
    """Values as stripped text (<NA> where blank) and the blank mask."""
    if len(values) <= SMALL_ROWS:
        stripped = [None if _is_na(v) else str(v).strip() or None for v in values.tolist()]
        blank = np.array([v is None for v in stripped], dtype=bool)
        return pd.array(stripped, dtype="string"), blank
    text = values.astype("string").str.strip()
    blank = (text.isna() | (text == "")).to_numpy()
    return text.mask(blank), blank


def _distinct_text(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """(row codes, stripped text per distinct value, None where blank): a category column
    holds a handful of distinct values, so the string work is done once per value rather
    than once per row. Code -1 (a missing value) indexes the trailing None."""
    if len(values) <= SMALL_ROWS:
        # pd.factorize's hash table, as a dict: equal values share a code, missing ones -1.
        first: dict[object, int] = {}
        codes = np.array(
            [-1 if _is_na(v) else first.setdefault(v, len(first)) for v in values.tolist()],
            dtype=np.intp,
        )
        uniques: list[object] = list(first)
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = [None if pd.isna(value) else str(value).strip() or None for value in uniques]
    return codes, [*distinct, None]


def _is_na(value: object) -> bool:
    """What pandas counts as missing in an object column (None, NaN, NA, NaT)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


@functools.lru_cache(maxsize=4096)
def _category_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """Checking a category list costs ~0.1 ms per column; a request's lists recur."""
    return pd.CategoricalDtype(list(categories))


def _check_column(values: pd.Series, column: Column, mode: Mode, source: str) -> _Checked:
    """Typed values, the rows' problems and the blank mask."""
    name = column.name
    if column.kind == "id":
        # Text of a list is no id ("['x']"); pandas tells mixed values apart in one C pass.
        mixed = values.dtype == object and pd.api.types.infer_dtype(values) == "mixed"
        if mixed and not all(map(pd.api.types.is_scalar, values.tolist())):
            raise _collections(values, name, source)
        text, blank = _text(values)
        return _Checked(text, [(np.flatnonzero(blank), f"`{name}` is blank")], blank)
    if column.kind == "numeric":
        return _check_numeric(values, column, mode, source)
    try:
        codes, distinct = _distinct_text(values)
    except TypeError:  # unhashable values: a DuckDB LIST or a BigQuery REPEATED column
        raise _collections(values, name, source) from None
    blank_values = np.array([value is None for value in distinct])
    blank = blank_values[codes]

    def problem(unknown_values: np.ndarray, message: str) -> list[_Problem]:
        rows = np.flatnonzero(unknown_values[codes])
        if not len(rows):
            return []
        texts = np.array([f"`{name}` value {value}{message}" for value in distinct], dtype=object)
        return [(rows, texts[codes[rows]])]

    def per_row(per_value: list) -> pd.Categorical:
        # A categorical column: rows hold small integer codes, which the model's encoder
        # and the drift tally map once per category rather than once per row.
        categories = list(dict.fromkeys(v for v in per_value if v is not None))
        position = {category: i for i, category in enumerate(categories)}
        value_codes = np.array([-1 if v is None else position[v] for v in per_value])
        return pd.Categorical.from_codes(
            value_codes[codes], dtype=_category_dtype(tuple(categories))
        )

    def examples() -> pd.Series:
        return pd.Series(np.array(distinct, dtype=object)[codes], index=values.index)

    if column.kind == "label":
        labels = [None if v is None else _LABEL_WORDS.get(v.casefold()) for v in distinct]
        unknown_values = np.array(
            [v is not None and label is None for v, label in zip(distinct, labels, strict=True)]
        )
        _fail_if_wrong_type(unknown_values[codes], blank, column, source, "yes/no values", examples)
        problems = problem(unknown_values, " is not yes/no")
        if blank.any():
            problems.append((np.flatnonzero(blank), f"`{name}` is blank"))
        typed = pd.array(np.array(labels, dtype=object)[codes], dtype="Int8")
        return _Checked(typed, problems, blank)
    canonical = {c.casefold(): c for c in column.categories}
    normalised = [None if v is None else canonical.get(v.casefold()) for v in distinct]
    unknown_values = np.array(
        [v is not None and n is None for v, n in zip(distinct, normalised, strict=True)]
    )
    if mode == "serving":
        # Unseen values reach the model as they are: its encoder ignores them.
        kept = [v if n is None else n for v, n in zip(distinct, normalised, strict=True)]
        unseen_rows = int(unknown_values[codes].sum())
        return _Checked(per_row(kept), [], blank, unseen_rows)
    unknown = unknown_values[codes]
    _fail_if_wrong_type(unknown, blank, column, source, "one of the categories", examples)
    problems = problem(unknown_values, f" is not one of {', '.join(column.categories)}")
    return _Checked(per_row(normalised), problems, blank)


def _collections(values: pd.Series, name: str, source: str) -> ContractError:
    """The error for a column holding lists or mappings, with the first as an example."""
    example = next((v for v in values.tolist() if not pd.api.types.is_scalar(v)), None)
    return ContractError(
        f"{source}: column `{name}` holds lists or other collections (e.g. "
        f"{_shown(reprlib.repr(example))}), not one value per customer"
    )


# A number as text, once stripped: digits with an optional sign, decimal point and exponent
# ("inf" and "nan" are not numbers a customer record can hold).
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _parse_numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(numbers, blank mask, unparseable mask) of a text column, parsed by Arrow in C++."""
    if len(values) <= SMALL_ROWS:
        parsed = _parse_few_numbers(values)
        if parsed is not None:
            return parsed
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(pa.array(values.astype("string")))
    blank = pc.fill_null(pc.equal(text, ""), True)
    looks_numeric = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    parsed = pc.cast(pc.if_else(looks_numeric, text, pa.scalar(None, pa.string())), pa.float64())
    blank_rows = blank.to_numpy(zero_copy_only=False)
    unparseable = ~blank_rows & ~looks_numeric.to_numpy(zero_copy_only=False)
    numbers = pd.Series(parsed.to_numpy(zero_copy_only=False), index=values.index)
    return numbers, blank_rows, unparseable


_NUMBER_ASCII = re.compile(_NUMBER, re.ASCII)


def _parse_few_numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray] | None:
    """`_parse_numbers` value by value, for a few ASCII values (None otherwise). On ASCII
    text `str.strip` removes what Arrow's trim does (tab to CR, \\x1c to \\x1f, space);
    beyond it their ideas of whitespace may differ. Both parse to the nearest float64."""
    raw = [None if _is_na(v) else str(v) for v in values.tolist()]
    if not all(t is None or t.isascii() for t in raw):
        return None
    texts = [None if t is None else t.strip() for t in raw]
    blank = np.array([not t for t in texts], dtype=bool)
    looks_numeric = [t is not None and _NUMBER_ASCII.match(t) is not None for t in texts]
    numbers = [float(t) if ok else np.nan for t, ok in zip(texts, looks_numeric, strict=True)]
    unparseable = ~blank & ~np.array(looks_numeric, dtype=bool)
    return pd.Series(numbers, index=values.index, dtype="float64"), blank, unparseable


def _check_numeric(values: pd.Series, column: Column, mode: Mode, source: str) -> _Checked:
    name = column.name
    problems: list[_Problem] = []
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        blank = numbers.isna().to_numpy()
    else:
        numbers, blank, unparseable = _parse_numbers(values)

        def text() -> pd.Series:
            return values.astype("string").str.strip()

        _fail_if_wrong_type(unparseable, blank, column, source, "numbers", text)
        if unparseable.any():
            rows = np.flatnonzero(unparseable)
            quoted = values.iloc[rows].astype("string").str.strip().astype(str)
            texts = f"`{name}` value " + quoted + " is not a number"
            problems.append((rows, texts.to_numpy(dtype=object)))
    # In numpy rather than pandas' `between`/`notna`: the same comparisons, without ~0.1 ms
    # of pandas per call (most of a one-row request's numeric column).
    x = numbers.to_numpy()
    out_of_range = ~((x >= column.min_value) & (x <= column.max_value)) & ~np.isnan(x)
    if out_of_range.any():
        rows = np.flatnonzero(out_of_range)
        texts = (
            f"`{name}` value "
            + numbers.iloc[rows].astype(str)
            + f" is outside {column.min_value:g}..{column.max_value:g}"
        )
        problems.append((rows, texts.to_numpy(dtype=object)))
        numbers = pd.Series(np.where(out_of_range, np.nan, x), index=numbers.index)
    if mode == "training" and not column.nullable and blank.any():
        problems.append((np.flatnonzero(blank), f"`{name}` is blank"))
    return _Checked(numbers, problems, blank)


def _fail_if_wrong_type(
    bad: np.ndarray,
    blank: np.ndarray,
    column: Column,
    source: str,
    expected: str,
    text: Callable[[], pd.Series],
) -> None:
    """Raise when most present values are `bad`. `text` gives the per-row values to quote and
    is only called then: building it for every column would cost more than the check."""
    present = int((~blank).sum())
    if present >= WRONG_TYPE_MIN_VALUES and bad.sum() > WRONG_TYPE_SHARE * present:
        examples = ", ".join(repr(v) for v in text()[bad].drop_duplicates().head(3))
        raise ContractError(
            f"{source}: column `{column.name}` has the wrong type: {bad.sum() / present:.0%} of "
            f"its values are not {expected} (e.g. {examples})"
        )


@stage
def validate_training_data(
    raw: Input[Dataset],
    source_uri: str,
    invalid_row_tolerance: float,
    clean: Output[Dataset],
    rejects: Output[Dataset],
) -> None:
    """Keep valid, de-duplicated rows; set the rest aside with their reasons."""
    import pandas as pd

    from components.data.validate import validate

    result = validate(pd.read_parquet(raw.path), source=source_uri, tolerance=invalid_row_tolerance)
    result.clean.to_parquet(clean.path, index=False)
    result.rejects.to_parquet(rejects.path, index=False)
    clean.metadata.update({"rows": len(result.clean)})
    rejects.metadata.update(
        {
            "rows": result.rows_rejected,
            "duplicates": result.duplicates,
            "rows_read": result.rows_read,
        }
    )
