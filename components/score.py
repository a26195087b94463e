"""Scoring: churn probability, the model's yes/no call and a risk tier per customer.

Batch scoring streams the customer table in Arrow record batches: each chunk is validated
for serving, scored and appended to staged Parquet files, so memory stays bounded whatever
the table's size. Publishing (`components.publish`) then replaces the as-of date's rows in
the warehouse from those files in one transaction: a run that dies before or during it
leaves the previous predictions as they were, and a rerun of the same date replaces its
rows instead of adding a second copy.

Every row read ends up either as a prediction or as a reject with its reason, so
`rows read == rows scored + rows rejected` holds for every chunk and for the run.
"""

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.contract import TELCO_CHURN, DataContract
from components.drift import DriftTally, ReferenceProfile
from components.errors import ChurnError, ContractError, SettingsError
from components.stage import stage
from components.warehouse import STAGED_ROW

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

RISK_TIERS = ("high", "medium", "low")

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
_STAGING: dict[str, Any] = {
    "compression": "snappy",  # the codec every Parquet reader (BigQuery too) accepts
    "write_statistics": False,
    "use_dictionary": ["risk_tier", "model_version", "as_of_date", "scored_at", "run_id", "reason"],
}


def risk_tier(probability: np.ndarray, *, high: float, medium: float) -> pd.Categorical:
    """`high` from the `high` cut-off up, `medium` from `medium` up, else `low`."""
    tier = np.select([probability >= high, probability >= medium], [0, 1], 2)
    return pd.Categorical.from_codes(tier, categories=RISK_TIERS)


def score_frame(
    model: "Pipeline",
    frame: pd.DataFrame,
    *,
    threshold: float,
    high: float,
    medium: float,
    contract: DataContract = TELCO_CHURN,
) -> pd.DataFrame:
    """Score validated rows: one output row per input row, in order, with `customer_id`,
    `churn_probability`, `churn_predicted` (at the model's threshold) and `risk_tier`;
    no rows give the same columns, empty (a chunk of only rejects)."""
    from components.predict import predict_probability

    # Estimators refuse zero rows.
    probability = predict_probability(model, frame, contract) if len(frame) else np.empty(0)
    return pd.DataFrame(
        {
            "customer_id": frame[contract.id_column].array,
            "churn_probability": probability,
            "churn_predicted": probability >= threshold,
            "risk_tier": risk_tier(probability, high=high, medium=medium),
        }
    )


def resolve_as_of(text: str, *, today: date | None = None, time_zone: str = "UTC") -> date:
    """The as-of date a run scores for: `text` as YYYY-MM-DD, or, when empty, today's date
    in `time_zone` at the moment this runs (so a compiled or scheduled pipeline never
    freezes one, and a schedule at 00:30 in Tokyo scores Tokyo's today, not UTC's)."""
    if not text.strip():
        return today or datetime.now(ZoneInfo(time_zone)).date()
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise SettingsError(f"as-of date must be YYYY-MM-DD, got {text!r}") from None


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
        )


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


def score_chunk(
    model: "Pipeline",
    batch: pa.RecordBatch,
    first_row: int,
    job: ScoringJob,
    profile: ReferenceProfile | None = None,
    contract: DataContract = TELCO_CHURN,
) -> ChunkResult:
    """Validate one chunk for serving and score the rows that pass; the rest become
    rejects with their reason. Rows are numbered from `first_row` across the input."""
    checked = _validate_serving(batch.to_pandas(), job.source, first_row)
    row_numbers = np.arange(first_row, first_row + checked.rows_read)
    rejected_rows = checked.rejects["row_number"].to_numpy(dtype=np.int64)
    kept_rows = np.delete(row_numbers, rejected_rows - first_row)
    tally = DriftTally.empty(profile) if profile else None
    scored = score_frame(
        model, checked.clean, threshold=job.threshold, high=job.high, medium=job.medium
    )
    if tally and len(scored):
        rng = np.random.default_rng([job.seed, first_row])
        tally.add(checked.clean, scored["churn_probability"].to_numpy(), rng)
    return ChunkResult(
        predictions=_prediction_batch(scored, kept_rows, job),
        rejects=_reject_batch(
            rejected_rows, checked.rejects[contract.id_column], checked.rejects["reason"], job
        ),
        rows_read=checked.rows_read,
        duplicates=checked.duplicates,
        missing_values=checked.missing_values,
        unseen_categories=checked.unseen_categories,
        tally=tally,
    )


def _validate_serving(frame: pd.DataFrame, source: str, first_row: int):
    from components.validate import validate

    # The share of invalid rows is judged over the whole run (`stage_scores`), not per
    # chunk, so a cluster of bad rows in one chunk doesn't stop a healthy run.
    return validate(frame, source=source, mode="serving", tolerance=1.0, first_row_number=first_row)


def _constant(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def _prediction_batch(scored: pd.DataFrame, rows: np.ndarray, job: ScoringJob) -> pa.RecordBatch:
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
        ],
        schema=STAGED_PREDICTIONS,
    )


def _reject_batch(
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


@dataclass
class StagedRun:
    """Totals of a staged run; `rows_read == rows_scored + rows_rejected` once complete."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    duplicates: int = 0
    churned: int = 0
    tiers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RISK_TIERS, 0))
    missing_values: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, int] = field(default_factory=dict)
    tally: DriftTally | None = None

    def add(self, chunk: ChunkResult) -> None:
        if chunk.rows_read != chunk.predictions.num_rows + chunk.rejects.num_rows:
            raise AssertionError("a chunk lost rows between validation and staging")
        self.rows_read += chunk.rows_read
        self.rows_scored += chunk.predictions.num_rows
        self.rows_rejected += chunk.rejects.num_rows
        self.duplicates += chunk.duplicates
        self._count(chunk.predictions, +1)
        for totals, counts in (
            (self.missing_values, chunk.missing_values),
            (self.unseen_categories, chunk.unseen_categories),
        ):
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + count
        if chunk.tally is not None:
            if self.tally is None:
                self.tally = chunk.tally
            else:
                self.tally.merge(chunk.tally)

    @property
    def invalid(self) -> int:
        """Rows rejected for what they hold, not for repeating an earlier customer."""
        return self.rows_rejected - self.duplicates

    def drop_duplicates(self, duplicates: pa.Table) -> None:
        """Count predictions of repeated customers (found after staging) as rejects:
        publishing leaves them out."""
        self.duplicates += duplicates.num_rows
        self.rows_scored -= duplicates.num_rows
        self.rows_rejected += duplicates.num_rows
        self._count(duplicates, -1)

    def _count(self, rows: pa.Table | pa.RecordBatch, sign: int) -> None:
        import pyarrow.compute as pc

        for item in pc.value_counts(rows.column("risk_tier")).to_pylist():
            self.tiers[item["values"]] += sign * item["counts"]
        self.churned += sign * (pc.sum(rows.column("churn_predicted")).as_py() or 0)

    def metadata(self) -> dict[str, Any]:
        return {
            "rows": {
                "read": self.rows_read,
                "scored": self.rows_scored,
                "rejected": self.rows_rejected,
                "duplicates": self.duplicates,
            },
            "churned": self.churned,
            "tiers": self.tiers,
            "missing_values": self.missing_values,
            "unseen_categories": self.unseen_categories,
        }


def stage_scores(
    batches: Iterable[pa.RecordBatch],
    model: "Pipeline",
    job: ScoringJob,
    directory: Path,
    *,
    tolerance: float,
    profile: ReferenceProfile | None = None,
    on_chunk: Callable[[StagedRun], None] | None = None,
    workers: int = 1,
) -> StagedRun:
    """Score `batches` into `directory`/predictions.parquet and rejects.parquet (and
    repeats.parquet, the predictions publishing leaves out).

    Chunks are scored on `workers` processes (see `_score_chunks`) and written in input
    order as they come back, so at most two chunks per worker are in memory. Stops with
    `ContractError` when the input is empty or more than `tolerance` of its rows are
    invalid: a feed that broken should not replace yesterday's predictions. A customer id
    seen in an earlier chunk is added to the rejects as a duplicate, as validation does
    within a chunk, and its staged prediction listed in `REPEATS_FILE` for publishing to
    leave out.
    """
    chunks = _score_chunks(_numbered(batches), model, job, profile, workers)
    return stage_chunks(chunks, job, directory, tolerance=tolerance, on_chunk=on_chunk)


def stage_chunks(
    chunks: Iterable[ChunkResult],
    job: ScoringJob,
    directory: Path,
    *,
    tolerance: float,
    on_chunk: Callable[[StagedRun], None] | None = None,
    source_rows: int | None = None,
) -> StagedRun:
    """Write scored chunks, in order, as the staged files publishing reads (see
    `stage_scores`): the checks on the whole run, the repeated customers and the capacity
    tiers are the same whichever way the chunks were scored. When the chunks were scored
    elsewhere, `source_rows` is how many rows the source holds: chunks covering fewer or
    more stop the run, as a row lost or made up on the way."""
    import pyarrow.parquet as pq

    from components.validate import duplicate_reasons

    directory.mkdir(parents=True, exist_ok=True)
    predictions_path = directory / PREDICTIONS_FILE
    run = StagedRun()
    with pq.ParquetWriter(directory / REJECTS_FILE, STAGED_REJECTS, **_STAGING) as rejects:
        with pq.ParquetWriter(predictions_path, STAGED_PREDICTIONS, **_STAGING) as predictions:
            for chunk in chunks:
                predictions.write_batch(chunk.predictions)
                rejects.write_batch(chunk.rejects)
                run.add(chunk)
                if on_chunk:
                    on_chunk(run)
        if source_rows is not None and run.rows_read != source_rows:
            raise ContractError(
                f"{job.source}: {run.rows_read} rows came back scored or rejected for the "
                f"{source_rows} rows of the table, so nothing is published"
            )
        if run.rows_read == 0:
            raise ContractError(f"{job.source} is empty: no rows to score")
        if run.invalid > tolerance * run.rows_read:
            raise ContractError(
                f"{job.source}: {run.invalid} of {run.rows_read} rows "
                f"({run.invalid / run.rows_read:.1%}) cannot be scored, over the "
                f"{tolerance:.0%} tolerance; see the rejects in {directory / REJECTS_FILE}"
            )
        duplicates = _repeated_customers(predictions_path, directory)
        pq.write_table(duplicates, directory / REPEATS_FILE, **_STAGING)
        if duplicates.num_rows:
            reasons = duplicate_reasons(
                TELCO_CHURN.id_column,
                duplicates.column("customer_id").to_pylist(),
                duplicates.column("first_row").to_pylist(),
            )
            rejects.write_batch(
                _reject_batch(
                    duplicates.column("source_row").to_numpy(),
                    duplicates.column("customer_id").to_pylist(),
                    reasons,
                    job,
                )
            )
            run.drop_duplicates(duplicates)
    apply_capacity_tiers(directory, run, job)
    return run


def capacity_count(rows_scored: int, *, top_n: int, top_share: float) -> int:
    """How many of the day's scored customers the `high` tier holds under a capacity: `top_n`
    (at most all of them) or `top_share` of them rounded up; 0 when neither is set."""
    if top_n:
        return min(top_n, rows_scored)
    return math.ceil(top_share * rows_scored - 1e-9)  # 0.05 * 1000 is 50, not 51


def apply_capacity_tiers(directory: Path, run: StagedRun, job: ScoringJob) -> None:
    """Second pass over a staged run with a capacity: put exactly the day's
    `capacity_count` most likely churners in the `high` tier (ties broken by source row, so
    the count is exact), every other customer in `medium` from the job's `medium` cut-off,
    else `low`; update `run.tiers`. Without a capacity, nothing changes.

    Tiers by capacity need the whole day's ranking, which no chunk (or worker) knows: so
    they are decided once everything is staged, from the staged probabilities. DuckDB finds
    the cut-off row out of core, then the predictions file is rewritten batch by batch, so
    memory stays bounded. Rows and their order are unchanged: only `risk_tier` is; repeated
    customers, which publishing leaves out, are not ranked and keep their staged tier.
    """
    if not (job.top_n or job.top_share):
        return
    import pyarrow.parquet as pq

    from components.warehouse import local_duckdb, sql_literal

    path = directory / PREDICTIONS_FILE
    repeats = pq.read_table(directory / REPEATS_FILE, columns=["source_row"]).column(0)
    count = capacity_count(run.rows_scored, top_n=job.top_n, top_share=job.top_share)
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
    with pq.ParquetWriter(rewritten, STAGED_PREDICTIONS, **_STAGING) as out:
        for batch in pq.ParquetFile(path).iter_batches():
            probability = batch.column("churn_probability").to_numpy()
            row = batch.column(STAGED_ROW).to_numpy()
            repeated = np.isin(row, repeats.to_numpy())
            high = np.zeros(len(row), dtype=bool)
            if cutoff is not None:
                high = (probability > cutoff[0]) | ((probability == cutoff[0]) & (row <= cutoff[1]))
            tier = np.where(high, "high", np.where(probability >= job.medium, "medium", "low"))
            tier = np.where(
                repeated, batch.column("risk_tier").to_numpy(zero_copy_only=False), tier
            )
            for name, n in zip(*np.unique(tier[~repeated], return_counts=True), strict=True):
                tiers[str(name)] += int(n)
            index = batch.schema.get_field_index("risk_tier")
            out.write_batch(batch.set_column(index, "risk_tier", pa.array(tier, pa.string())))
    os.replace(rewritten, path)
    if sum(tiers.values()) != run.rows_scored:
        raise AssertionError("capacity tiering lost rows")
    run.tiers = tiers


def read_customers(
    uri: str, batch_rows: int, contract: DataContract = TELCO_CHURN
) -> Iterator[pa.RecordBatch]:
    """The table to score, in batches of `batch_rows`, with only the columns scoring
    reads (matched as validation matches them) and category columns dictionary-encoded
    where the source format allows it, with one-byte codes. Each batch is pickled through
    a pipe to a worker process; that makes it 7 MB per 100k customers instead of 13. A
    table that lacks a column keeps all of its own, for validation to name them."""
    from components.contract import column_key
    from components.warehouse import iter_batches

    used = {column_key(c.name) for c in contract.required(with_label=False)}
    batches = iter_batches(uri, batch_rows, repetitive={c.name for c in contract.categorical})
    for batch in batches:
        names = [name for name in batch.schema.names if column_key(name) in used]
        if len(names) < len(used):
            names = batch.schema.names
        yield pa.RecordBatch.from_arrays([_narrow(batch.column(n)) for n in names], names=names)


def _narrow(column: pa.Array) -> pa.Array:
    """A dictionary column with one-byte codes when it has few enough distinct values."""
    if not pa.types.is_dictionary(column.type) or len(column.dictionary) > 127:
        return column
    codes = column.indices.cast(pa.int8(), safe=False)  # they fit: checked just above
    return pa.DictionaryArray.from_arrays(codes, column.dictionary)


def _score_chunks(
    numbered: Iterable[tuple[int, pa.RecordBatch]],
    model: "Pipeline",
    job: ScoringJob,
    profile: ReferenceProfile | None,
    workers: int,
) -> Iterator[ChunkResult]:
    """`score_chunk` of each (first row, batch), in input order.

    With more than one worker, chunks go to a pool of single-threaded processes, at most
    two per worker in flight: the reading process keeps every core busy while memory stays
    bounded. Processes, because validation holds the GIL; forked, so that they start at
    once with the model already loaded, and forked before the first read, while this
    process has no reader threads whose locks a child could inherit.
    """
    if workers <= 1:
        for first_row, batch in numbered:
            yield score_chunk(model, batch, first_row, job, profile)
        return
    from components.predict import tree_kernel

    tree_kernel(model)  # compiled once here, inherited by every worker
    context = multiprocessing.get_context("fork")
    in_flight: deque[tuple[int, Future[ChunkResult]]] = deque()
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(model, job, profile)
        ) as pool:
            pool.submit(os.getpid).result()  # the first task starts every worker
            for first_row, batch in numbered:
                in_flight.append((first_row, pool.submit(_score_in_worker, batch, first_row)))
                if len(in_flight) >= 2 * workers:
                    yield in_flight[0][1].result()
                    in_flight.popleft()
            while in_flight:
                yield in_flight[0][1].result()
                in_flight.popleft()
    except BrokenProcessPool:
        where = f"the chunks from row {in_flight[0][0]:,} on" if in_flight else "its start"
        raise ChurnError(
            f"a scoring worker process died during {where} (killed for memory? lower "
            "score_batch_rows or score_workers); nothing was published"
        ) from None


_WORKER: dict[str, Any] = {}


def _start_worker(model: "Pipeline", job: ScoringJob, profile: ReferenceProfile | None) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # one process per core: no nested OpenMP/BLAS threads
    _WORKER.update(model=model, job=job, profile=profile)


def _score_in_worker(batch: pa.RecordBatch, first_row: int) -> ChunkResult:
    return score_chunk(_WORKER["model"], batch, first_row, _WORKER["job"], _WORKER["profile"])


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """How many CPUs this process may keep busy: those it may run on (its affinity, as
    `taskset` or a cpuset sets it), capped by the container's CPU quota (cgroup v2
    `cpu.max`, as `docker --cpus` or a Kubernetes CPU limit sets it). One where processes
    can't be forked (macOS, Windows)."""
    if not hasattr(os, "sched_getaffinity"):
        return 1
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def _numbered(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row number, batch) for each non-empty batch, rows numbered from 1."""
    next_row = 1
    for batch in batches:
        if batch.num_rows:
            yield next_row, batch
            next_row += batch.num_rows


def _repeated_customers(predictions: Path, scratch: Path) -> pa.Table:
    """Every prediction of a customer id already scored at an earlier row: `source_row`,
    `customer_id`, `first_row`, `risk_tier`, `churn_predicted`. DuckDB finds them out of
    core, so memory stays bounded: first the ids whose 64-bit hash repeats (grouping
    integers, not text: 1.3 s instead of 2 s at 10M rows), then among those the ids that
    really do."""
    from components.warehouse import local_duckdb, sql_literal

    source = f"read_parquet({sql_literal(predictions)})"
    with local_duckdb(scratch) as con:
        return con.sql(
            f"""
            WITH repeated_hashes AS (
                SELECT hash(customer_id) AS h FROM {source} GROUP BY h HAVING count(*) > 1
            ),
            candidates AS (
                SELECT source_row, customer_id, risk_tier, churn_predicted FROM {source}
                WHERE hash(customer_id) IN (SELECT h FROM repeated_hashes)
            ),
            firsts AS (
                SELECT customer_id, min(source_row) AS first_row FROM candidates
                GROUP BY customer_id HAVING count(*) > 1
            )
            SELECT c.source_row, c.customer_id, f.first_row, c.risk_tier, c.churn_predicted
            FROM candidates AS c JOIN firsts AS f USING (customer_id)
            WHERE c.source_row <> f.first_row
            ORDER BY c.source_row
            """
        ).to_arrow_table()


def scoring_summary(
    *, staged: dict[str, Any], published: dict[str, Any], drift: dict[str, Any] | None
) -> dict[str, Any]:
    """The run's outcome in the shape `submit.py score --json` prints. Row counts are those
    now in the warehouse for the as-of date, checked against what was read."""
    rows = {
        "read": int(staged["rows"]["read"]),
        "scored": int(published["rows"]["scored"]),
        "rejected": int(published["rows"]["rejected"]),
    }
    if rows["read"] != rows["scored"] + rows["rejected"]:
        raise ContractError(
            f"{rows['read']} rows read but {rows['scored']} scored + {rows['rejected']} "
            f"rejected are in {published['output']} for {published['as_of_date']}: rows "
            "were lost or another run wrote the same date"
        )
    scored = max(rows["scored"], 1)
    return {
        "run_id": staged["run_id"],
        "status": "succeeded",
        "model_version": int(staged["model_version"]),
        "as_of_date": published["as_of_date"],
        "output": published["output"],
        "rejects_output": published["rejects_output"],
        "exports": published["exports"],
        "rows": rows | {"duplicates": int(staged["rows"]["duplicates"])},
        "churn_rate": round(float(staged["churned"]) / scored, 4),
        "tiers": {tier: int(staged["tiers"][tier]) for tier in RISK_TIERS},
        "missing_values": {k: int(v) for k, v in staged["missing_values"].items()},
        "unseen_categories": {k: int(v) for k, v in staged["unseen_categories"].items()},
        "drift": drift,
    }


@stage
def score_customers(
    source_uri: str,
    output_uri: str,
    model: Input[Model],
    as_of: str,
    run_id: str,
    batch_rows: int,
    workers: int,
    high_risk_cutoff: float,
    medium_risk_cutoff: float,
    invalid_row_tolerance: float,
    time_zone: str,
    high_risk_top_n: int,
    high_risk_top_share: float,
    staged: Output[Dataset],
    observed: Output[Artifact],
    accept_library_mismatch: bool = False,
) -> None:
    """Stream the customer table chunk by chunk: validate for serving, score, and stage
    predictions and rejects as Parquet; tally the inputs for the drift report. With a
    capacity (`high_risk_top_n` or `high_risk_top_share`), the staged day is tiered by rank.
    A model pickled by other library versions is refused unless `accept_library_mismatch`."""
    import logging
    import time
    from pathlib import Path

    from components.drift import load_profile
    from components.registry import load_model_directory
    from components.score import (
        ScoringJob,
        available_cpus,
        read_customers,
        stage_scores,
    )
    from components.warehouse import require_output

    logging.basicConfig(level=logging.INFO)
    log = logging.getLogger("score")
    require_output(output_uri)  # fail before scoring, not after
    job = ScoringJob.for_champion(
        model.metadata,
        source=source_uri,
        as_of=as_of,
        time_zone=time_zone,
        run_id=run_id,
        high=high_risk_cutoff,
        medium=medium_risk_cutoff,
        top_n=high_risk_top_n,
        top_share=high_risk_top_share,
    )
    started = time.perf_counter()

    def progress(run) -> None:
        rate = run.rows_read / max(time.perf_counter() - started, 1e-9)
        log.info("progress: %d rows read, %d rejected (%.0f rows/s)", run.rows_read,
                 run.rows_rejected, rate)  # fmt: skip

    profile = load_profile(Path(model.path))
    run = stage_scores(
        read_customers(source_uri, batch_rows),
        # The registry's hash, passed on by load_champion: the record copied beside the
        # file could have been changed with it.
        load_model_directory(
            Path(model.path),
            sha256=model.metadata["sha256"],
            accept_library_mismatch=accept_library_mismatch,
        )[0],
        job,
        Path(staged.path),
        tolerance=invalid_row_tolerance,
        profile=profile,
        on_chunk=progress,
        workers=workers or available_cpus(),
    )
    staged.metadata.update(
        run.metadata()
        | {
            "source": source_uri,
            "as_of_date": job.as_of.isoformat(),
            "scored_at": job.scored_at.isoformat(),
            "run_id": run_id,
            "model_version": job.model_version,
        }
    )
    Path(observed.path).write_text(
        run.tally.to_json() if run.tally else '{"counts": {}, "sample": {}}'
    )
    log.info(
        "staged %d predictions and %d rejects of %d rows in %.1fs",
        run.rows_scored, run.rows_rejected, run.rows_read, time.perf_counter() - started,
    )  # fmt: skip
