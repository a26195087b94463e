"""Capacity tiers: the `high` tier as exactly the day's N (or share of) most likely
churners, decided over the whole staged run.
"""

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.scoring.reason_codes import REASON_FIELDS
from components.scoring.staged import (
    PREDICTIONS_FILE,
    REPEATS_FILE,
    STAGED_PREDICTIONS,
    STAGING_OPTIONS,
    ScoringJob,
    treatment_column,
)
from components.scoring.tiers import RISK_TIERS, risk_tier
from components.warehouse import STAGED_ROW


def capacity_count(rows_scored: int, *, top_n: int, top_share: float) -> int:
    """How many of the day's scored customers the `high` tier holds under a capacity: `top_n`
    (at most all of them) or `top_share` of them rounded up; 0 when neither is set."""
    if top_n:
        return min(top_n, rows_scored)
    return math.ceil(top_share * rows_scored - 1e-9)  # 0.05 * 1000 is 50, not 51


def apply_capacity_tiers(
    directory: Path, rows_scored: int, job: ScoringJob
) -> dict[str, int] | None:
    """Second pass over a staged run with a capacity: put exactly the day's
    `capacity_count` most likely churners in the `high` tier (ties broken by source row, so
    the count is exact), every other customer in `medium` or `low` as `risk_tier` says (a
    flagged customer is never `low`); return the count per tier. Without a capacity,
    nothing changes (`None`).

    Tiers by capacity need the whole day's ranking, which no chunk (or worker) knows: so
    they are decided once everything is staged, from the staged probabilities. DuckDB finds
    the cut-off row out of core, then the predictions file is rewritten batch by batch, so
    memory stays bounded. Rows and their order are unchanged: only `risk_tier` (and with a
    control group, `treatment_group`, which follows the tier, and with `high_medium`
    reasons, the reason columns, emptied for the rows left `low`) is; repeated
    customers, which publishing leaves out, are not ranked and keep their staged tier.
    """
    if not (job.top_n or job.top_share):
        return None
    import pyarrow.parquet as pq

    from components.warehouse import local_duckdb, sql_literal

    path = directory / PREDICTIONS_FILE
    repeats = pq.read_table(directory / REPEATS_FILE, columns=["source_row"]).column(0)
    count = capacity_count(rows_scored, top_n=job.top_n, top_share=job.top_share)
    cutoff = None  # (probability, source_row) of the last customer in `high`
    if count:
        with local_duckdb(directory) as con:
            (cutoff,) = con.sql(
                f"""
                SELECT churn_probability, {STAGED_ROW} FROM read_parquet({sql_literal(path)})
                WHERE {STAGED_ROW} NOT IN (SELECT source_row
                    FROM read_parquet({sql_literal(directory / REPEATS_FILE)}))
                ORDER BY churn_probability DESC, {STAGED_ROW} ASC
                LIMIT 1 OFFSET {count - 1}
                """
            ).fetchall()
    tiers = dict.fromkeys(RISK_TIERS, 0)
    rewritten = directory / f"{PREDICTIONS_FILE}.tiered"
    with pq.ParquetWriter(rewritten, STAGED_PREDICTIONS, **STAGING_OPTIONS) as out:
        for batch in pq.ParquetFile(path).iter_batches():
            probability = batch.column("churn_probability").to_numpy()
            row = batch.column(STAGED_ROW).to_numpy()
            repeated = np.isin(row, repeats.to_numpy())
            high = np.zeros(len(row), dtype=bool)
            if cutoff is not None:
                high = (probability > cutoff[0]) | ((probability == cutoff[0]) & (row <= cutoff[1]))
            tier = np.asarray(
                risk_tier(
                    probability,
                    high=job.high,
                    medium=job.medium,
                    threshold=job.threshold,
                    top=high,
                ),
                dtype=object,
            )
            tier = np.where(
                repeated, batch.column("risk_tier").to_numpy(zero_copy_only=False), tier
            )
            for name, n in zip(*np.unique(tier[~repeated], return_counts=True), strict=True):
                tiers[str(name)] += int(n)
            index = batch.schema.get_field_index("risk_tier")
            batch = batch.set_column(index, "risk_tier", pa.array(tier, pa.string()))
            groups = treatment_column(batch.column("customer_id").to_pylist(), tier, job)
            index = batch.schema.get_field_index("treatment_group")
            batch = batch.set_column(index, "treatment_group", pa.array(groups, pa.string()))
            if job.reasons_for == "high_medium":  # every row was explained: see chunk_reasons_for
                batch = _without_reasons(batch, tier == "low")
            out.write_batch(batch)
    os.replace(rewritten, path)
    if sum(tiers.values()) != rows_scored:
        raise AssertionError("capacity tiering lost rows")
    return tiers


def _without_reasons(batch: pa.RecordBatch, rows: np.ndarray) -> pa.RecordBatch:
    """`batch` with the reason columns of `rows` emptied."""
    if not rows.any():
        return batch
    mask = pa.array(rows)
    for field in REASON_FIELDS:
        index = batch.schema.get_field_index(field.name)
        emptied = pc.if_else(mask, pa.scalar(None, field.type), batch.column(index))
        batch = batch.set_column(index, field, emptied)
    return batch
