"""Validation against the data contract.

Fatal problems (missing columns, a wrong column type, an empty table, a single-class label,
more invalid rows than tolerated) raise `ContractError` with one line naming the problem.
Everything else is row-level: each input row is either kept, typed and normalised, or set
aside with its reason, so that `rows read == rows kept + rows rejected` always holds.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from kfp.dsl import Dataset, Input, Output

from components.contract import TELCO_CHURN, Column, DataContract
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
    """Typed rows that passed, rows set aside (`row_number`, id, `reason`) and counts."""

    clean: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    duplicates: int
    missing_values: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, int] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejects)


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
    reasons = pd.Series("", index=table.index, dtype=object)
    typed: dict[str, pd.Series] = {}
    missing: dict[str, int] = {}
    unseen: dict[str, int] = {}
    for column in contract.required(with_label=mode == "training"):
        values, problems, blank = _check_column(table[column.name], column, mode, source)
        typed[column.name] = values
        reasons = _add_reason(reasons, problems)
        if column.kind in ("numeric", "categorical") and blank.any():
            missing[column.name] = int(blank.sum())
        if column.kind == "categorical" and mode == "serving":
            unknown = values.notna() & ~values.isin(column.categories)
            if unknown.any():
                unseen[column.name] = int(unknown.sum())

    clean = pd.DataFrame(typed)
    invalid = reasons != ""
    n_invalid = int(invalid.sum())
    if n_invalid > tolerance * len(table):
        common = reasons[invalid].str.split("; ").explode().value_counts().index[0]
        raise ContractError(
            f"{source}: {n_invalid} of {len(table)} rows ({n_invalid / len(table):.1%}) are "
            f"invalid, over the {tolerance:.0%} tolerance; most common problem: {common}"
        )

    id_column = contract.id_column
    duplicated = ~invalid & clean[id_column].where(~invalid).duplicated(keep="first")
    duplicated &= ~invalid
    if duplicated.any():
        first_seen = (
            pd.Series(row_numbers, index=table.index)[~invalid]
            .groupby(clean.loc[~invalid, id_column])
            .transform("first")
        )
        reasons[duplicated] = (
            f"duplicate {id_column} "
            + clean.loc[duplicated, id_column].astype(str)
            + " (first at row "
            + first_seen[duplicated].astype(str)
            + ")"
        )
    kept = reasons == ""
    rejects = pd.DataFrame(
        {
            "row_number": row_numbers[~kept.to_numpy()],
            id_column: table.loc[~kept, id_column].astype(object).to_numpy(),
            "reason": reasons[~kept].to_numpy(),
        }
    )
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
        duplicates=int(duplicated.sum()),
        missing_values=missing,
        unseen_categories=unseen,
    )


def _verb(mode: Mode) -> str:
    return "train on" if mode == "training" else "score"


def _canonical_columns(
    raw: pd.DataFrame, source: str, mode: Mode, contract: DataContract
) -> pd.DataFrame:
    """Rename columns to the contract's spelling, matching names case-insensitively."""
    by_key: dict[str, str] = {}
    for name in raw.columns:
        key = str(name).strip().casefold()
        if key in by_key:
            raise ContractError(
                f"{source}: columns {by_key[key]!r} and {name!r} differ only in case; keep one"
            )
        by_key[key] = name
    required = contract.required(with_label=mode == "training")
    absent = [c.name for c in required if c.name.casefold() not in by_key]
    if absent:
        raise ContractError(
            f"column{'s' if len(absent) > 1 else ''} {', '.join(f'`{a}`' for a in absent)} "
            f"missing from {source}; found: {', '.join(map(str, raw.columns))}"
        )
    return raw.rename(columns={by_key[c.name.casefold()]: c.name for c in required}).reset_index(
        drop=True
    )


def _text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Values as stripped text (None where blank) and the blank mask."""
    text = values.astype("string").str.strip()
    blank = text.isna() | (text == "")
    return text.mask(blank), blank


def _distinct_text(values: pd.Series) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """(row codes, stripped text per distinct value with <NA> where blank, blank mask):
    a category column holds a handful of distinct values, so the string work is done once
    per value rather than once per row."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype("string").str.strip()
    text = text.mask(text == "")
    text = pd.concat([text, pd.Series([pd.NA], dtype="string")], ignore_index=True)  # code -1
    blank = text.isna().to_numpy()[codes]
    return codes, text, blank


def _check_column(
    values: pd.Series, column: Column, mode: Mode, source: str
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Typed values, a per-row problem text ("" when fine) and the blank mask."""
    name = column.name
    no_problem = pd.Series("", index=values.index, dtype=object)
    if column.kind == "id":
        text, blank = _text(values)
        return text.astype(object), no_problem.mask(blank, f"`{name}` is blank"), blank
    if column.kind == "numeric":
        return _check_numeric(values, column, mode, source)
    codes, distinct, blank_rows = _distinct_text(values)
    blank = pd.Series(blank_rows, index=values.index)

    def per_row(per_value: pd.Series) -> pd.Series:
        return pd.Series(per_value.to_numpy(dtype=object)[codes], index=values.index, dtype=object)

    def problem_texts(unknown: pd.Series, message: str) -> pd.Series:
        if not unknown.any():
            return no_problem
        text = per_row(distinct.astype(object)).astype(str)
        return no_problem.mask(unknown, f"`{name}` value " + text + message)

    if column.kind == "label":
        labels = per_row(distinct.str.casefold().map(_LABEL_WORDS))
        unknown = ~blank & labels.isna()
        _fail_if_wrong_type(unknown, blank, column, source, "yes/no values", per_row(distinct))
        problems = problem_texts(unknown, " is not yes/no")
        if blank.any():
            problems = problems.mask(blank, f"`{name}` is blank")
        return labels.astype("Float64").astype("Int8"), problems, blank
    canonical = {c.casefold(): c for c in column.categories}
    normalised_values = distinct.str.casefold().map(canonical).astype(object)
    unknown_values = distinct.notna() & normalised_values.isna()
    unknown = per_row(unknown_values).astype(bool)
    if mode == "serving":
        # Unseen values reach the model as they are: its encoder ignores them.
        kept = normalised_values.where(~unknown_values, distinct.astype(object))
        return per_row(kept).where(~blank, np.nan), no_problem, blank
    _fail_if_wrong_type(unknown, blank, column, source, "one of the categories", per_row(distinct))
    problems = problem_texts(unknown, f" is not one of {', '.join(column.categories)}")
    return per_row(normalised_values).where(~blank, np.nan), problems, blank


def _check_numeric(
    values: pd.Series, column: Column, mode: Mode, source: str
) -> tuple[pd.Series, pd.Series, pd.Series]:
    name = column.name
    problems = pd.Series("", index=values.index, dtype=object)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        blank = numbers.isna()
        unparseable = pd.Series(False, index=values.index)
        text = values
    else:
        text, blank = _text(values)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        unparseable = ~blank & numbers.isna()
        _fail_if_wrong_type(unparseable, blank, column, source, "numbers", text)
        if unparseable.any():
            problems = problems.mask(
                unparseable, f"`{name}` value " + text.astype(str) + " is not a number"
            )
    out_of_range = ~numbers.between(column.min_value, column.max_value) & numbers.notna()
    if out_of_range.any():
        problems = problems.mask(
            out_of_range,
            f"`{name}` value "
            + numbers.astype(str)
            + f" is outside {column.min_value:g}..{column.max_value:g}",
        )
    if mode == "training" and not column.nullable and blank.any():
        problems = problems.mask(blank, f"`{name}` is blank")
    return numbers.where(~out_of_range), problems, blank


def _fail_if_wrong_type(
    bad: pd.Series, blank: pd.Series, column: Column, source: str, expected: str, text: pd.Series
) -> None:
    present = int((~blank).sum())
    if present >= WRONG_TYPE_MIN_VALUES and bad.sum() > WRONG_TYPE_SHARE * present:
        examples = ", ".join(repr(v) for v in text[bad].drop_duplicates().head(3))
        raise ContractError(
            f"{source}: column `{column.name}` has the wrong type: {bad.sum() / present:.0%} of "
            f"its values are not {expected} (e.g. {examples})"
        )


def _add_reason(reasons: pd.Series, problems: pd.Series) -> pd.Series:
    """Append each row's new problem to its earlier ones, '; '-separated."""
    has_new = problems != ""
    if not has_new.any():  # the usual case: most columns of most chunks are clean
        return reasons
    joined = reasons.where(reasons == "", reasons + "; ") + problems
    return reasons.where(~has_new, joined)


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

    from components.validate import validate

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
