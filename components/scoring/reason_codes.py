"""Reason codes beside each score: the top reasons pushing a customer towards churn.

For the customers a run selects (`reasons_for`: the `high` and `medium` tiers, everyone or
no one), the predictions carry `baseline_probability` and, for k = 1..3, `reason_k` (the
original feature), `reason_k_value` (the customer's value, as text), `reason_k_effect`
(its contribution, in probability: 0.08 is 8 percentage points) and `reason_k_phrase`
(`components.phrases`), strongest first. Only contributions above zero are reasons: a
customer with fewer has the rest empty. `baseline_probability` plus every contribution
(`components.model.reasons`, which documents the method) is the published probability.

Batch scoring, the model server and Vertex batch prediction (which runs the model server)
all make them here, from the same validated rows and model, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components.contract import TELCO_CHURN, DataContract
from components.phrases import phrase, value_text

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

REASONS_FOR = ("high_medium", "all", "none")
REASON_COUNT = 3
_PARTS = (("", pa.string()), ("_value", pa.string()), ("_effect", pa.float64()))
_PARTS += (("_phrase", pa.string()),)
# The columns added at the end of the predictions table, in order.
REASON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("baseline_probability", pa.float64()),
    *(
        pa.field(f"reason_{k}{suffix}", type_)
        for k in range(1, REASON_COUNT + 1)
        for suffix, type_ in _PARTS
    ),
)
REASON_COLUMNS = tuple(field.name for field in REASON_FIELDS)


def selected(
    tier: pd.Categorical | np.ndarray, probability: np.ndarray, reasons_for: str | float
) -> np.ndarray:
    """Which rows get reasons: by tier for `high_medium`, all or none; a number (the model
    server's request parameter): those whose probability is at least that."""
    tier = np.asarray(tier, dtype=object)
    if not isinstance(reasons_for, str):
        return np.asarray(probability) >= reasons_for
    if reasons_for == "all":
        return np.ones(len(tier), dtype=bool)
    if reasons_for == "none":
        return np.zeros(len(tier), dtype=bool)
    if reasons_for == "high_medium":
        return np.isin(tier, ["high", "medium"])
    raise ValueError(f"reasons_for must be one of {', '.join(REASONS_FOR)}; got {reasons_for!r}")


def reason_frame(
    model: Pipeline,
    frame: pd.DataFrame,
    probability: np.ndarray,
    rows: np.ndarray,
    contract: DataContract = TELCO_CHURN,
    *,
    preprocessed: np.ndarray | None = None,
) -> pd.DataFrame:
    """The reason columns for every row of `frame` (validated rows with their published
    `probability` and, when the caller has them, their `predict.preprocess` form): filled
    where `rows` is true, empty elsewhere."""
    from components.model.reasons import explain

    n = len(frame)
    columns: dict[str, Any] = {"baseline_probability": np.full(n, np.nan)}
    for name in REASON_COLUMNS[1:]:
        columns[name] = (
            np.full(n, np.nan) if name.endswith("_effect") else np.full(n, None, dtype=object)
        )
    picked = np.flatnonzero(rows)
    if len(picked):
        chosen = frame if len(picked) == n else frame.iloc[picked]
        explained = explain(
            model,
            chosen,
            contract,
            probability=probability[picked],
            preprocessed=None if preprocessed is None else preprocessed[picked],
        )
        columns["baseline_probability"][picked] = explained.baseline
        order = np.argsort(-explained.effects, axis=1, kind="stable")[:, :REASON_COUNT]
        for k in range(REASON_COUNT):
            feature = order[:, k]
            effect = explained.effects[np.arange(len(picked)), feature]
            pushes = effect > 0
            name = np.full(len(picked), None, dtype=object)
            text = np.full(len(picked), None, dtype=object)
            said = np.full(len(picked), None, dtype=object)
            # The rows whose k-th reason is each feature, in runs of one feature each.
            rows_by_feature = np.flatnonzero(pushes)
            rows_by_feature = rows_by_feature[np.argsort(feature[rows_by_feature], kind="stable")]
            features, starts = np.unique(feature[rows_by_feature], return_index=True)
            runs = np.split(rows_by_feature, starts[1:]) if len(features) else []
            for j, hit in zip(features, runs, strict=True):
                column = explained.features[j]
                name[hit] = column
                text[hit], said[hit] = _written_out(column, _values(chosen[column], hit))
            prefix = f"reason_{k + 1}"
            columns[prefix][picked] = name
            columns[f"{prefix}_value"][picked] = text
            columns[f"{prefix}_effect"][picked] = np.where(pushes, effect, np.nan)
            columns[f"{prefix}_phrase"][picked] = said
    # Text columns stay object arrays: pandas would otherwise convert them to its string
    # type, only for `reason_arrays` to convert them back.
    return pd.DataFrame(
        {k: pd.Series(v, index=frame.index, dtype=v.dtype, copy=False) for k, v in columns.items()}
    )


def _values(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The values of a column at positions `rows`, as numbers (missing: NaN) or, for
    text, as objects (only those rows converted)."""
    values = column.array.take(rows)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return values.to_numpy(dtype=object)


def _written_out(feature: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`values` as text and as phrases, each distinct value written out once, not once
    per customer."""
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    texts = np.array([value_text(v) for v in distinct], dtype=object)
    phrases = np.array([phrase(feature, v) for v in distinct], dtype=object)
    return texts[codes], phrases[codes]


def reason_arrays(scored: pd.DataFrame) -> list[pa.Array]:
    """The reason columns of a scored frame as Arrow arrays (all empty when it has none)."""
    n = len(scored)
    arrays = []
    for field in REASON_FIELDS:
        if field.name in scored.columns:
            # pandas keeps a missing text as NaN: `from_pandas` makes it null.
            arrays.append(pa.array(scored[field.name].to_numpy(), field.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, field.type))
    return arrays


def as_response(row: Mapping[str, Any]) -> dict[str, Any]:
    """A scored row's reasons as the model server answers them: `baseline_probability`
    and `reasons`, a list of {feature, value, effect, phrase}, strongest first."""
    reasons = []
    for k in range(1, REASON_COUNT + 1):
        feature = _present(row.get(f"reason_{k}"))
        if feature is None:
            continue
        reasons.append(
            {
                "feature": str(feature),
                "value": _present(row[f"reason_{k}_value"]),
                "effect": float(row[f"reason_{k}_effect"]),
                "phrase": str(row[f"reason_{k}_phrase"]),
            }
        )
    baseline = _present(row.get("baseline_probability"))
    return {
        "baseline_probability": None if baseline is None else float(baseline),
        "reasons": reasons,
    }


def _present(value: Any) -> Any:
    """The value, or None for pandas' missing markers (NaN, None, NA)."""
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


def from_responses(answers: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The reason columns from model server answers (`as_response`'s form; an answer
    without reasons gives empty columns)."""
    rows = []
    for answer in answers:
        row: dict[str, Any] = {"baseline_probability": answer.get("baseline_probability")}
        for k, reason in enumerate(answer.get("reasons") or [], start=1):
            row |= {
                f"reason_{k}": reason.get("feature"),
                f"reason_{k}_value": reason.get("value"),
                f"reason_{k}_effect": reason.get("effect"),
                f"reason_{k}_phrase": reason.get("phrase"),
            }
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(REASON_COLUMNS))
    for name in REASON_COLUMNS:
        if name == "baseline_probability" or name.endswith("_effect"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame
