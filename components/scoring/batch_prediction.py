"""Scoring by a Vertex AI batch prediction job, for tables one machine should not score.

The scoring pipeline's batch branch runs Google's `ModelBatchPredictOp` on the champion
version (our serving image, BigQuery in and out, each row sent as a JSON object). Vertex
writes a dataset with two tables: `predictions` (the instance's columns plus `prediction`,
our predictor's answer: `churn_probability`, ... or the `error` that says why a customer
could not be scored) and `errors` (the instance's columns plus `errors`, a
`STRUCT<code, message>` for instances the service failed). `stage_batch_output` turns
both into the staged files chunked scoring writes, so publishing, the row accounting
(read == scored + rejected), the capacity tiers, the partition replace and the drift
report are the same steps whichever way the rows were scored. Every source row must come
back in one of the two tables: output with more or fewer rows than the source table stops
the run before anything is published, and keeps the job's dataset to look into. Once its
output is staged, the job's dataset is deleted (the staged files in the pipeline root keep
every row of it), so daily runs do not leave a dataset a day behind.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
from google_cloud_pipeline_components.types.artifact_types import BQTable
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.contract import TELCO_CHURN, DataContract
from components.errors import SourceError
from components.monitoring.drift import DriftTally, ReferenceProfile
from components.scoring.chunked import numbered, validate_serving
from components.scoring.reason_codes import from_responses, selected
from components.scoring.staged import ChunkResult, ScoringJob, prediction_batch, reject_batch
from components.scoring.staging import StagedRun, stage_chunks
from components.scoring.tiers import risk_tier
from components.stage import stage

PREDICTION_COLUMN = "prediction"
ERRORS_COLUMN = "errors"
# Vertex names the dataset it makes for a job's output `prediction_<model>_<time>`.
JOB_DATASET_PREFIX = "prediction_"


def bigquery_job_tables(source_uri: str, output_uri: str) -> tuple[str, str]:
    """The batch prediction job's BigQuery input table and output project, as the job
    takes them (`bq://PROJECT.DATASET.TABLE`, `bq://PROJECT`: Vertex makes a dataset of
    its own per job there, so a job never writes into our tables)."""
    from components.warehouse import parse_uri

    for role, uri in (("source", source_uri), ("output", output_uri)):
        if parse_uri(uri).kind != "bigquery":
            raise SourceError(
                f"batch prediction reads and writes BigQuery: the {role} {uri!r} is not "
                "bq://PROJECT.DATASET.TABLE"
            )
    source = parse_uri(source_uri).bigquery_table
    output_project = parse_uri(output_uri).bigquery_table.split(".")[0]
    return f"bq://{source}", f"bq://{output_project}"


def errors_table(predictions_table: str) -> str:
    """The errors table beside a batch prediction job's predictions table
    (`predictions` -> `errors`, `predictions_2026_...` -> `errors_2026_...`)."""
    project_dataset, _, table = predictions_table.rpartition(".")
    if not table.startswith("predictions"):
        raise SourceError(f"{predictions_table!r} is not a batch prediction output table")
    return f"{project_dataset}.errors{table.removeprefix('predictions')}"


def model_parameters(reasons_for: str, medium: float, *, capacity: bool = False) -> dict[str, str]:
    """The job's `model_parameters`, which Vertex sends as each request's `parameters`:
    reason codes (`components.serving.server`) for the instances this run gives them,
    `high_medium` asking for those scored at the `medium` cut-off or more, or, with a
    `capacity` (`ScoringJob.chunk_reasons_for`), for every instance. Text values:
    GCPC's component declares them so."""
    if reasons_for == "none":
        return {"reasons": "false"}
    every = reasons_for == "all" or (reasons_for == "high_medium" and capacity)
    return {"reasons": "true" if every else repr(float(medium))}


def remove_job_dataset(predictions_table: str) -> None:
    """Delete the dataset a batch prediction job made for its output, tables and all;
    refuse any other dataset."""
    from components.warehouse import parse_uri
    from components.warehouse.bigquery import client

    project, dataset, _ = predictions_table.split(".")
    if not dataset.startswith(JOB_DATASET_PREFIX):
        raise SourceError(
            f"{project}.{dataset} is not a batch prediction job's dataset "
            f"({JOB_DATASET_PREFIX}...): not deleting it"
        )
    bq = client(parse_uri(f"bq://{predictions_table}"))
    bq.delete_dataset(f"{project}.{dataset}", delete_contents=True, not_found_ok=True)


def batch_output_chunk(
    batch: pa.RecordBatch,
    first_row: int,
    job: ScoringJob,
    profile: ReferenceProfile | None = None,
    contract: DataContract = TELCO_CHURN,
) -> ChunkResult:
    """One chunk of batch prediction output, staged as `score_chunk` stages a scored
    chunk: rows the serving validator refuses, and rows the job failed or our predictor
    answered with an error, become rejects with their reason; the rest are predictions,
    their yes/no call and risk tier derived from the probability with this run's
    threshold and cut-offs, exactly as chunked scoring derives them, and their reason
    codes, the model server's, kept for the rows this run's `reasons_for` selects."""
    frame = batch.to_pandas()
    outcomes = [
        _outcome(prediction, error)
        for prediction, error in zip(
            _column(frame, PREDICTION_COLUMN), _column(frame, ERRORS_COLUMN), strict=True
        )
    ]
    instances = frame.drop(columns=[PREDICTION_COLUMN, ERRORS_COLUMN], errors="ignore")
    checked = validate_serving(instances, job.source, first_row)
    row_numbers = np.arange(first_row, first_row + checked.rows_read)
    rejected_rows = checked.rejects["row_number"].to_numpy(dtype=np.int64)
    kept_rows = np.delete(row_numbers, rejected_rows - first_row)
    failures = [outcomes[row - first_row][1] for row in kept_rows]
    scored_mask = np.array([reason is None for reason in failures], dtype=bool)
    clean = checked.clean[scored_mask].reset_index(drop=True)
    probability = np.array(
        [outcomes[row - first_row][0] for row in kept_rows[scored_mask]], dtype=np.float64
    )
    tier = risk_tier(probability, high=job.high, medium=job.medium, threshold=job.threshold)
    scored = pd.DataFrame(
        {
            "customer_id": clean[contract.id_column].array,
            "churn_probability": probability,
            "churn_predicted": probability >= job.threshold,
            "risk_tier": tier,
        }
    )
    answers = [outcomes[row - first_row][2] for row in kept_rows[scored_mask]]
    reasons = from_responses(answers)
    reasons[~selected(tier, probability, job.chunk_reasons_for)] = None
    scored = pd.concat([scored, reasons], axis=1)
    tally = DriftTally.empty(profile) if profile else None
    if tally and len(clean):
        tally.add(clean, probability, np.random.default_rng([job.seed, first_row]))
    failed_ids = checked.clean[contract.id_column][~scored_mask]
    return ChunkResult(
        predictions=prediction_batch(scored, kept_rows[scored_mask], job),
        rejects=reject_batch(
            np.concatenate([rejected_rows, kept_rows[~scored_mask]]),
            [*checked.rejects[contract.id_column], *failed_ids],
            [*checked.rejects["reason"], *(r for r in failures if r is not None)],
            job,
        ),
        rows_read=checked.rows_read,
        duplicates=checked.duplicates,
        missing_values=checked.missing_values,
        unseen_categories=checked.unseen_categories,
        tally=tally,
    )


def stage_batch_output(
    batches: Iterable[pa.RecordBatch],
    job: ScoringJob,
    directory: Path,
    *,
    source_rows: int,
    tolerance: float,
    profile: ReferenceProfile | None = None,
) -> StagedRun:
    """Stage batch prediction output (the predictions table's batches, then the errors
    table's) into `directory` as `stage_scores` stages chunked scoring; stop with
    `ContractError` unless it holds exactly the `source_rows` rows of the job's input."""
    chunks = (
        batch_output_chunk(batch, first_row, job, profile) for first_row, batch in numbered(batches)
    )
    return stage_chunks(chunks, job, directory, tolerance=tolerance, source_rows=source_rows)


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    return frame[name].tolist() if name in frame.columns else [None] * len(frame)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _outcome(prediction: Any, error: Any) -> tuple[float | None, str | None, dict[str, Any]]:
    """(churn probability, None, the answer) for a scored instance, or (None, why it was
    not, {})."""
    if not _missing(error):
        status = json.loads(error) if isinstance(error, str) else dict(error)
        return (
            None,
            (
                f"batch prediction failed: {status.get('message') or 'no message'} "
                f"(code {status.get('code')})"
            ),
            {},
        )
    if _missing(prediction):
        return None, "batch prediction returned no prediction for this row", {}
    answer = json.loads(prediction) if isinstance(prediction, str) else prediction
    if not isinstance(answer, dict):
        return None, f"batch prediction returned {answer!r}, not a prediction", {}
    if answer.get("error"):
        return None, str(answer["error"]), {}
    probability = answer.get("churn_probability")
    if _missing(probability):
        return None, "batch prediction returned no churn_probability", {}
    return float(probability), None, answer


@stage
def batch_prediction_tables(
    source_uri: str,
    output_uri: str,
    reasons_for: str,
    medium_risk_cutoff: float,
    high_risk_top_n: int = 0,
    high_risk_top_share: float = 0.0,
) -> NamedTuple("BatchTables", [("source", str), ("destination", str), ("parameters", dict)]):
    """The batch prediction job's BigQuery input table and output project, and the model
    parameters its requests carry (reason codes for the run's `reasons_for`)."""
    from components.scoring.batch_prediction import bigquery_job_tables, model_parameters

    source, destination = bigquery_job_tables(source_uri, output_uri)
    capacity = bool(high_risk_top_n or high_risk_top_share)
    return source, destination, model_parameters(reasons_for, medium_risk_cutoff, capacity=capacity)


@stage
def stage_batch_predictions(
    predictions: Input[BQTable],
    model: Input[Model],
    source_uri: str,
    as_of: str,
    run_id: str,
    batch_rows: int,
    high_risk_cutoff: float,
    medium_risk_cutoff: float,
    invalid_row_tolerance: float,
    time_zone: str,
    high_risk_top_n: int,
    high_risk_top_share: float,
    staged: Output[Dataset],
    observed: Output[Artifact],
    control_share: float = 0.0,
    control_salt: str = "",
    reasons_for: str = "high_medium",
) -> None:
    """Read the batch prediction job's output tables in chunks and stage predictions and
    rejects as chunked scoring does (every source row accounted for, tiers by capacity
    when one is set); tally the inputs for the drift report; then delete the job's
    dataset."""
    import itertools
    import logging
    from pathlib import Path

    from components.monitoring.drift import load_profile
    from components.scoring.batch_prediction import (
        errors_table,
        remove_job_dataset,
        stage_batch_output,
    )
    from components.scoring.staged import ScoringJob
    from components.warehouse import iter_batches, parse_uri, table_exists
    from components.warehouse.bigquery import row_count

    table = ".".join(
        str(predictions.metadata[key]) for key in ("projectId", "datasetId", "tableId")
    )
    tables = [f"bq://{table}"]
    if table_exists(f"bq://{errors_table(table)}"):
        tables.append(f"bq://{errors_table(table)}")
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
    run = stage_batch_output(
        itertools.chain.from_iterable(iter_batches(uri, batch_rows) for uri in tables),
        job,
        Path(staged.path),
        source_rows=row_count(parse_uri(source_uri)),
        tolerance=invalid_row_tolerance,
        profile=load_profile(Path(model.path)),
    )
    staged.metadata.update(
        run.metadata()
        | {
            "source": source_uri,
            "as_of_date": job.as_of.isoformat(),
            "scored_at": job.scored_at.isoformat(),
            "run_id": run_id,
            "model_version": job.model_version,
            "batch_prediction_output": tables,
        }
    )
    Path(observed.path).write_text(
        run.tally.to_json() if run.tally else '{"counts": {}, "sample": {}}'
    )
    remove_job_dataset(table)
    logging.getLogger("batch_prediction").info("deleted the job's dataset of %s", table)
