"""Chunked scoring (step 2 of the scoring pipeline) and its pool of worker processes.

Batch scoring streams the customer table in Arrow record batches: each chunk is validated
for serving, scored and appended to staged Parquet files, so memory stays bounded whatever
the table's size. Publishing (`components.scoring.publish`) then replaces the as-of date's rows in
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.contract import TELCO_CHURN, DataContract
from components.errors import ChurnError
from components.monitoring.drift import DriftTally, ReferenceProfile
from components.scoring.staged import ChunkResult, ScoringJob, prediction_batch, reject_batch
from components.scoring.staging import StagedRun, stage_chunks
from components.scoring.tiers import score_frame
from components.stage import stage

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


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
    checked = validate_serving(batch.to_pandas(), job.source, first_row)
    row_numbers = np.arange(first_row, first_row + checked.rows_read)
    rejected_rows = checked.rejects["row_number"].to_numpy(dtype=np.int64)
    kept_rows = np.delete(row_numbers, rejected_rows - first_row)
    tally = DriftTally.empty(profile) if profile else None
    scored = score_frame(
        model,
        checked.clean,
        threshold=job.threshold,
        high=job.high,
        medium=job.medium,
        reasons_for=job.chunk_reasons_for,
    )
    if tally and len(scored):
        rng = np.random.default_rng([job.seed, first_row])
        tally.add(checked.clean, scored["churn_probability"].to_numpy(), rng)
    return ChunkResult(
        predictions=prediction_batch(scored, kept_rows, job),
        rejects=reject_batch(
            rejected_rows, checked.rejects[contract.id_column], checked.rejects["reason"], job
        ),
        rows_read=checked.rows_read,
        duplicates=checked.duplicates,
        missing_values=checked.missing_values,
        unseen_categories=checked.unseen_categories,
        tally=tally,
    )


def validate_serving(frame: pd.DataFrame, source: str, first_row: int):
    from components.data.validate import validate

    # The share of invalid rows is judged over the whole run (`stage_scores`), not per
    # chunk, so a cluster of bad rows in one chunk doesn't stop a healthy run.
    return validate(frame, source=source, mode="serving", tolerance=1.0, first_row_number=first_row)


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
    chunks = _score_chunks(numbered(batches), model, job, profile, workers)
    return stage_chunks(chunks, job, directory, tolerance=tolerance, on_chunk=on_chunk)


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
    from components.model.predict import tree_kernel
    from components.model.reasons import prepare

    tree_kernel(model)  # compiled once here, inherited by every worker
    if job.reasons_for != "none":
        prepare(model)  # the explainer too
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


def numbered(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row number, batch) for each non-empty batch, rows numbered from 1."""
    next_row = 1
    for batch in batches:
        if batch.num_rows:
            yield next_row, batch
            next_row += batch.num_rows


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
    control_share: float = 0.0,
    control_salt: str = "",
    reasons_for: str = "high_medium",
) -> None:
    """Stream the customer table chunk by chunk: validate for serving, score, and stage
    predictions and rejects as Parquet; tally the inputs for the drift report. With a
    capacity (`high_risk_top_n` or `high_risk_top_share`), the staged day is tiered by rank.
    A model pickled by other library versions is refused unless `accept_library_mismatch`.
    `reasons_for` (`high_medium`, `all`, `none`): whose predictions carry reason codes."""
    import logging
    import time
    from pathlib import Path

    from components.monitoring.drift import load_profile
    from components.registry import load_model_directory
    from components.scoring.chunked import available_cpus, read_customers, stage_scores
    from components.scoring.staged import ScoringJob
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
        control_share=control_share,
        control_salt=control_salt,
        reasons_for=reasons_for,
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
