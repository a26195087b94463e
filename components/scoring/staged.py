"""What a scoring run stages for publishing: the Parquet files and their schemas, the job
every chunk of a run shares, and one scored chunk as the record batches staged.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components.dates import resolve_as_of
from components.monitoring.drift import DriftTally
from components.scoring.reason_codes import REASON_COLUMNS, REASON_FIELDS, reason_arrays
from components.warehouse import STAGED_ROW

PREDICTIONS_FILE = "predictions.parquet"
REJECTS_FILE = "rejects.parquet"
# Predictions of customers already scored at an earlier row, found once all are staged:
# publishing leaves them out (they are in the rejects as duplicates).
REPEATS_FILE = "repeats.parquet"
# Staged predictions keep their row number in the source, to find repeated customers
# across chunks and to name the first occurrence in the reject reason.
STAGED_PREDICTIONS = pa.schema(
    [
        (STAGED_ROW, pa.int64()),
        ("customer_id", pa.string()),
        ("churn_probability", pa.float64()),
        ("churn_predicted", pa.bool_()),
        ("risk_tier", pa.string()),
        ("model_version", pa.int64()),
        ("as_of_date", pa.date32()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        # Issue 20: "control" or "offer" in the `high` tier (components.monitoring.control).
        ("treatment_group", pa.string()),
        *REASON_FIELDS,  # issue 21: reason codes
    ]
)
STAGED_REJECTS = pa.schema(
    [
        (STAGED_ROW, pa.int64()),
        ("customer_id", pa.string()),
        ("reason", pa.string()),
        ("as_of_date", pa.date32()),
        ("run_id", pa.string()),
    ]
)
# What the warehouse tables hold: predictions without their bookkeeping row number.
PREDICTION_COLUMNS = tuple(name for name in STAGED_PREDICTIONS.names if name != STAGED_ROW)
REJECT_COLUMNS = tuple(STAGED_REJECTS.names)

# Staged files are written once and read whole by the publish step: dictionary-encode only
# the repetitive columns (trying it on unique ids is wasted work) and skip column
# statistics, which nothing reads. About twice as fast to write as Parquet's defaults.
STAGING_OPTIONS: dict[str, Any] = {
    "compression": "snappy",  # the codec every Parquet reader (BigQuery too) accepts
    "write_statistics": False,
    "use_dictionary": [
        "risk_tier",
        "model_version",
        "as_of_date",
        "scored_at",
        "run_id",
        "reason",
        "treatment_group",
    ]
    + [name for name in REASON_COLUMNS if name.endswith(("_1", "_2", "_3", "_phrase"))],
}


@dataclass(frozen=True)
class ScoringJob:
    """What every chunk of one run shares: where rows come from, how to call and tier them,
    and the values stamped on each prediction. With a capacity (`top_n` customers or
    `top_share` of them, at most one set), the `high` tier is the day's most likely
    churners instead of those over the `high` cut-off."""

    source: str
    threshold: float
    high: float
    medium: float
    model_version: int
    as_of: date
    scored_at: datetime
    run_id: str
    seed: int = 0
    top_n: int = 0
    top_share: float = 0.0
    control_share: float = 0.0
    control_salt: str = ""
    reasons_for: str = "high_medium"  # components.scoring.reason_codes.REASONS_FOR

    @classmethod
    def for_champion(
        cls,
        model_metadata: Mapping[str, Any],
        *,
        source: str,
        as_of: str,
        time_zone: str,
        run_id: str,
        high: float,
        medium: float,
        top_n: int,
        top_share: float,
        control_share: float = 0.0,
        control_salt: str = "",
        reasons_for: str = "high_medium",
    ) -> "ScoringJob":
        """A scoring step's job with the champion whose model artifact has `model_metadata`
        (threshold, version); the as-of date ("" = today in `time_zone`) is decided now."""
        return cls(
            source=source,
            threshold=float(model_metadata["threshold"]),
            high=high,
            medium=medium,
            model_version=int(model_metadata["version"]),
            as_of=resolve_as_of(as_of, time_zone=time_zone),
            scored_at=datetime.now(UTC),
            run_id=run_id,
            top_n=top_n,
            top_share=top_share,
            control_share=control_share,
            control_salt=control_salt,
            reasons_for=reasons_for,
        )

    @property
    def chunk_reasons_for(self) -> str:
        """Whose reasons each chunk makes. Capacity tiers are decided only once the whole
        day is staged, and can put a customer under the `medium` cut-off in `high`: so
        with a capacity, `high_medium` explains every row, and `apply_capacity_tiers`
        empties the reasons of those the day leaves `low`."""
        if self.reasons_for == "high_medium" and (self.top_n or self.top_share):
            return "all"
        return self.reasons_for


@dataclass
class ChunkResult:
    """One scored chunk: staged rows, counts and the drift tally of its scored rows."""

    predictions: pa.RecordBatch
    rejects: pa.RecordBatch
    rows_read: int
    duplicates: int
    missing_values: dict[str, int]
    unseen_categories: dict[str, int]
    tally: DriftTally | None


def _constant(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def prediction_batch(scored: pd.DataFrame, rows: np.ndarray, job: ScoringJob) -> pa.RecordBatch:
    n = len(scored)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(rows, pa.int64()),
            pa.array(scored["customer_id"], pa.string()),
            pa.array(scored["churn_probability"].to_numpy(dtype=np.float64), pa.float64()),
            pa.array(scored["churn_predicted"].to_numpy(dtype=bool), pa.bool_()),
            pa.array(scored["risk_tier"]).cast(pa.string()),
            _constant(job.model_version, pa.int64(), n),
            _constant(job.as_of, pa.date32(), n),
            _constant(job.scored_at, pa.timestamp("us", tz="UTC"), n),
            _constant(job.run_id, pa.string(), n),
            pa.array(
                treatment_column(scored["customer_id"], scored["risk_tier"], job), pa.string()
            ),
            *reason_arrays(scored),
        ],
        schema=STAGED_PREDICTIONS,
    )


def treatment_column(customer_ids: Iterable[Any], tiers: Iterable[Any], job: ScoringJob) -> Any:
    """The `treatment_group` of scored customers under the job's control group."""
    from components.monitoring.control import treatment_groups

    return treatment_groups(
        customer_ids, tiers, share=job.control_share, salt=job.control_salt
    ).tolist()


def reject_batch(
    rows: np.ndarray, ids: Iterable[Any], reasons: Iterable[str], job: ScoringJob
) -> pa.RecordBatch:
    # Rejected ids can be anything the source held (None, "", numbers): keep them as text.
    id_text = [None if pd.isna(v) else str(v) for v in ids]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(rows, pa.int64()),
            pa.array(id_text, pa.string()),
            pa.array(list(reasons), pa.string()),
            _constant(job.as_of, pa.date32(), len(id_text)),
            _constant(job.run_id, pa.string(), len(id_text)),
        ],
        schema=STAGED_REJECTS,
    )
