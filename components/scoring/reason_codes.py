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
    where `rows` is true, empty elsewhere. The text columns are categoricals (Arrow takes
    them as dictionary arrays): each distinct feature, value and phrase is written out once
    per frame, not once per customer."""
    from components.model.reasons import explain

    n = len(frame)
    baseline = np.full(n, np.nan)
    effects = np.full((REASON_COUNT, n), np.nan)
    # Per reason k and row: codes into `features`, `texts` and `phrases` (-1: empty).
    feature_codes = np.full((REASON_COUNT, n), -1, dtype=np.int32)
    value_codes = np.full((REASON_COUNT, n), -1, dtype=np.int32)
    phrase_codes = np.full((REASON_COUNT, n), -1, dtype=np.int32)
    features: list[str] = []
    texts, phrases = _Distinct(), _Distinct()
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
        features = explained.features
        baseline[picked] = explained.baseline
        order, effect = _strongest(explained.effects)
        pushes = effect > 0
        slots = np.where(pushes, order, -1)  # reason k of each picked row: its feature
        feature_codes[:, picked] = slots
        effects[:, picked] = np.where(pushes, effect, np.nan)
        # Each feature's values are written out once for the rows it is a reason of,
        # whichever reason it is.
        position = np.empty(len(picked), dtype=np.int64)
        for j in np.unique(slots[slots >= 0]):
            in_slot = slots == j
            hit = np.flatnonzero(in_slot.any(axis=0))
            column = features[j]
            codes, distinct = pd.factorize(_values(chosen[column], hit), use_na_sentinel=False)
            text = texts.codes([value_text(v) for v in distinct])
            said = phrases.codes([phrase(column, v) for v in distinct])
            position[hit] = codes
            for k in range(REASON_COUNT):
                at = np.flatnonzero(in_slot[k])
                value_codes[k, picked[at]] = text[position[at]]
                phrase_codes[k, picked[at]] = said[position[at]]
    # One dtype per kind, shared by the three reasons: making one costs far more than
    # the column does for the model server's one row.
    kinds = [
        (suffix, codes, pd.CategoricalDtype(categories))
        for suffix, codes, categories in (
            ("", feature_codes, features),
            ("_value", value_codes, texts.values),
            ("_phrase", phrase_codes, phrases.values),
        )
    ]
    columns: dict[str, Any] = {"baseline_probability": baseline}
    for k in range(REASON_COUNT):
        prefix = f"reason_{k + 1}"
        for suffix, codes, dtype in kinds:
            # The codes are made above, each within its categories.
            columns[prefix + suffix] = pd.Categorical.from_codes(
                codes[k], dtype=dtype, validate=False
            )
        columns[f"{prefix}_effect"] = effects[k]
    columns = {name: columns[name] for name in REASON_COLUMNS}
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _strongest(effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its `REASON_COUNT` largest effects and their columns (reason k in row k of
    each), ties to the first column, as a stable sort of all would give (a full sort
    costs several times as much)."""
    left = effects.copy()
    rows = np.arange(len(effects))
    order = np.empty((REASON_COUNT, len(effects)), dtype=np.int64)
    strongest = np.empty((REASON_COUNT, len(effects)))
    for k in range(min(REASON_COUNT, effects.shape[1])):
        order[k] = np.argmax(left, axis=1)  # the first of equal largest
        strongest[k] = effects[rows, order[k]]
        left[rows, order[k]] = -np.inf
    # Fewer features than reasons: the rest are no reasons.
    order[effects.shape[1] :] = 0
    strongest[effects.shape[1] :] = -np.inf
    return order, strongest


def _values(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The values of a column at positions `rows`, as numbers (missing: NaN) or, for
    text, as objects (only those rows converted)."""
    values = column.array.take(rows)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return values.to_numpy(dtype=object)


class _Distinct:
    """Texts numbered in the order first seen: a categorical's categories and codes."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._code: dict[str, int] = {}

    def codes(self, texts: Iterable[str | None]) -> np.ndarray:
        """The code of each text (-1 for None), numbering those not seen before."""
        out = []
        for text in texts:
            if text is None:
                out.append(-1)
                continue
            code = self._code.get(text)
            if code is None:
                code = self._code[text] = len(self.values)
                self.values.append(text)
            out.append(code)
        return np.array(out, dtype=np.int32)


def reason_arrays(scored: pd.DataFrame) -> list[pa.Array]:
    """The reason columns of a scored frame as Arrow arrays (all empty when it has none)."""
    n = len(scored)
    arrays = []
    for field in REASON_FIELDS:
        if field.name in scored.columns:
            column = scored[field.name]
            if isinstance(column.dtype, pd.CategoricalDtype):  # `reason_frame`'s text
                arrays.append(pa.array(column.array).cast(field.type))
                continue
            # pandas keeps a missing text as NaN: `from_pandas` makes it null.
            arrays.append(pa.array(column.to_numpy(), field.type, from_pandas=True))
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
