"""The scoring pipeline's Vertex batch prediction branch: the job request the compiled
pipeline makes, and its BigQuery output staged with chunked scoring's row accounting."""

import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from google_cloud_pipeline_components.types.artifact_types import BQTable, VertexModel
from kfp import compiler
from kfp.dsl import Artifact, Dataset, Model
from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineSpec

from components.data.sample_data import generate_customers
from components.errors import ContractError, SourceError
from components.scoring.batch_prediction import (
    bigquery_job_tables,
    errors_table,
    model_parameters,
    remove_job_dataset,
    stage_batch_output,
    stage_batch_predictions,
)
from components.scoring.champion import load_champion
from components.scoring.staged import PREDICTIONS_FILE, REJECTS_FILE, REPEATS_FILE, ScoringJob
from components.settings import Settings
from components.warehouse import bigquery, parse_uri, write_table
from pipelines.compiling import build_pipeline

scoring_pipeline = build_pipeline("scoring", Settings())

SOURCE = "bq://p.churn.customers?billing_project=jobs&location=EU"
OUTPUT = "bq://p.churn.churn_predictions"
CHAMPION = "projects/p/locations/us-central1/models/churn@3"


def _batch_predict_task(spec: dict[str, Any]) -> tuple[dict, dict]:
    """The batch prediction task and the task of the dsl.If branch that holds it."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for name, component in spec["components"].items():
        for task in component.get("dag", {}).get("tasks", {}).values():
            if task["componentRef"]["name"] == "comp-model-batch-predict":
                (branch,) = [
                    t for dag in dags for t in dag["tasks"].values()
                    if t["componentRef"]["name"] == name
                ]  # fmt: skip
                return task, branch
    raise AssertionError("no batch prediction task in the compiled pipeline")


def _resolve(template: Any, values: dict[str, Any]) -> str:
    """A GCPC payload template (Concat / IfPresent / placeholders) with input values."""
    if isinstance(template, dict) and "Concat" in template:
        return "".join(_resolve(part, values) for part in template["Concat"])
    if isinstance(template, dict) and "IfPresent" in template:
        present = template["IfPresent"]["InputName"] in values
        return _resolve(template["IfPresent"]["Then"], values) if present else ""

    def value(match: re.Match[str]) -> str:
        found = values[match["name"]]
        return found if isinstance(found, str) else json.dumps(found)

    return re.sub(
        r"\{\{\$\.inputs\.(?:parameters|artifacts)\['(?P<name>\w+)'\](?:\.metadata\['resourceName'\])?\}\}",
        value,
        template,
    )


def test_compiled_scoring_pipeline_requests_a_bigquery_batch_prediction_job(
    tmp_path: Path, google_cloud
):
    path = tmp_path / "scoring.yaml"
    compiler.Compiler().compile(scoring_pipeline, str(path))
    spec = yaml.safe_load(path.read_text())
    json_format.ParseDict(spec, PipelineSpec())  # it validates
    task, branch = _batch_predict_task(spec)
    condition = branch["triggerPolicy"]["condition"]
    assert "pipelinechannel--batch_prediction" in condition and "true" in condition
    defaults = Settings()
    pipeline_parameters = {
        "project": "p",
        "location": "us-central1",
        "batch_machine_type": defaults.batch_machine_type,
        "batch_starting_replicas": defaults.batch_starting_replicas,
        "batch_max_replicas": defaults.batch_max_replicas,
    }
    source, destination = bigquery_job_tables(SOURCE, OUTPUT)
    component = spec["components"]["comp-model-batch-predict"]["inputDefinitions"]
    values: dict[str, Any] = {
        name: definition["defaultValue"]
        for name, definition in component["parameters"].items()
        if "defaultValue" in definition
    }
    for name, wiring in task["inputs"]["parameters"].items():
        if "runtimeValue" in wiring:
            values[name] = wiring["runtimeValue"]["constant"]
        elif "componentInputParameter" in wiring:
            key = wiring["componentInputParameter"].removeprefix("pipelinechannel--")
            values[name] = pipeline_parameters[key]
        else:
            values[name] = {
                "source": source,
                "destination": destination,
                "parameters": model_parameters(defaults.reasons_for, defaults.medium_risk_cutoff),
            }[wiring["taskOutputParameter"]["outputParameterKey"]]
    # The model is the champion version the load-champion step names.
    artifact = task["inputs"]["artifacts"]["model"]["componentInputArtifact"]
    assert artifact == "pipelinechannel--load-champion-vertex_model"
    values["model"] = CHAMPION
    executor = spec["deploymentSpec"]["executors"]["exec-model-batch-predict"]["container"]
    payload = executor["args"][executor["args"].index("--payload") + 1]

    # Google's own launcher turns the payload into the request, as on Vertex.
    from google_cloud_pipeline_components.container.v1.batch_prediction_job import remote_runner
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util

    parent = "projects/p/locations/us-central1"
    google_cloud.respond(
        "POST", f"/v1/{parent}/batchPredictionJobs", {"name": f"{parent}/batchPredictionJobs/7"}
    )
    client = aiplatform_v1.JobServiceClient(
        transport="rest", client_options={"api_endpoint": google_cloud.url}
    )
    job_spec = json_util.recursive_remove_empty(json.loads(_resolve(json.loads(payload), values)))
    remote_runner.create_batch_prediction_job_with_client(client, parent, job_spec)
    (request,) = google_cloud.requests_to("POST", f"/v1/{parent}/batchPredictionJobs")
    job = aiplatform_v1.BatchPredictionJob.from_json(request.raw)

    assert job.model == CHAMPION
    assert job.input_config.instances_format == "bigquery"
    assert job.input_config.bigquery_source.input_uri == "bq://p.churn.customers"
    assert job.instance_config.instance_type == "object"
    assert job.output_config.predictions_format == "bigquery"
    assert job.output_config.bigquery_destination.output_uri == "bq://p"
    resources = job.dedicated_resources
    assert resources.machine_spec.machine_type == defaults.batch_machine_type
    assert resources.starting_replica_count == defaults.batch_starting_replicas
    assert resources.max_replica_count == defaults.batch_max_replicas
    # Each request asks the model server for reason codes from the `medium` cut-off up.
    assert dict(job.model_parameters) == {"reasons": str(defaults.medium_risk_cutoff)}


def test_with_a_capacity_batch_prediction_asks_reasons_for_every_instance():
    """Capacity tiers can put a customer under the `medium` cut-off in `high`, and are
    decided only once every prediction is back: so every instance needs its reasons."""
    assert model_parameters("high_medium", 0.4, capacity=True) == {"reasons": "true"}
    assert model_parameters("high_medium", 0.4) == {"reasons": "0.4"}
    assert model_parameters("none", 0.4, capacity=True) == {"reasons": "false"}


def test_batch_prediction_needs_bigquery_on_both_sides():
    with pytest.raises(SourceError, match=re.escape("the source 'customers.csv' is not bq://")):
        bigquery_job_tables("customers.csv", OUTPUT)
    assert errors_table("p.prediction_churn_2026_12_02.predictions") == (
        "p.prediction_churn_2026_12_02.errors"
    )


def _job() -> ScoringJob:
    return ScoringJob(
        source=SOURCE,
        threshold=0.5,
        high=0.7,
        medium=0.4,
        model_version=3,
        as_of=date(2026, 12, 2),
        scored_at=datetime(2026, 12, 2, 2, 0, tzinfo=UTC),
        run_id="run-1",
    )


def test_batch_output_is_staged_with_chunked_scorings_row_accounting(tmp_path: Path):
    """A table shaped like batch prediction's BigQuery output: the instance's columns plus
    `prediction` (our predictor's JSON answer) and, in the errors table, `errors`."""
    customers = generate_customers(40, seed=5, messy=False)
    customers.loc[3, "customerID"] = None  # the serving validator rejects it
    customers.loc[7, "customerID"] = customers.loc[6, "customerID"]  # a repeated customer
    answers = []
    for position, customer_id in enumerate(customers["customerID"]):
        if position == 3:
            answers.append({"customer_id": None, "error": "column `customerID` is empty"})
        elif position == 10:
            answers.append({"customer_id": customer_id, "error": "could not score this row"})
        else:
            answers.append({"customer_id": customer_id, "churn_probability": position / 40})
    predictions = pa.Table.from_pandas(
        customers.assign(prediction=[json.dumps(a) for a in answers]), preserve_index=False
    )
    failed = generate_customers(2, seed=6, messy=False)
    errors = pa.Table.from_pandas(failed, preserve_index=False).append_column(
        "errors",
        pa.array(
            [{"code": 3, "message": "instance too large"}] * 2,
            pa.struct([("code", pa.int64()), ("message", pa.string())]),
        ),
    )
    batches = [*predictions.to_batches(max_chunksize=16), *errors.to_batches()]

    run = stage_batch_output(batches, _job(), tmp_path, source_rows=42, tolerance=0.5)

    assert run.rows_read == 42 == run.rows_scored + run.rows_rejected
    assert (run.rows_rejected, run.duplicates) == (5, 1)
    staged = pq.read_table(tmp_path / PREDICTIONS_FILE).to_pandas()
    repeats = pq.read_table(tmp_path / REPEATS_FILE).to_pandas()
    published = staged[~staged["source_row"].isin(repeats["source_row"])]
    assert len(published) == run.rows_scored == 37
    # The yes/no call and tier come from this run's threshold and cut-offs.
    row = published.set_index("customer_id").loc[customers.loc[30, "customerID"]]
    assert row["churn_probability"] == 30 / 40
    assert bool(row["churn_predicted"]) and row["risk_tier"] == "high"
    assert set(published["model_version"]) == {3}
    reasons = pq.read_table(tmp_path / REJECTS_FILE).to_pandas().set_index("source_row")["reason"]
    assert reasons[11] == "could not score this row"
    assert reasons[41] == reasons[42] == "batch prediction failed: instance too large (code 3)"
    assert "customerID" in reasons[4]
    assert "repeat" in reasons[8] or "duplicate" in reasons[8]


def _predicted(customers: pd.DataFrame) -> pd.DataFrame:
    """`customers` as a batch prediction job's predictions table holds them: each row with
    our predictor's answer, churn probabilities spread evenly over [0, 1)."""
    answers = [
        json.dumps({"customer_id": customer_id, "churn_probability": position / len(customers)})
        for position, customer_id in enumerate(customers["customerID"])
    ]
    return customers.assign(prediction=answers)


def test_batch_output_gets_the_same_capacity_tiers_as_chunked_scoring(tmp_path: Path):
    customers = generate_customers(200, seed=7, messy=False).drop(columns="Churn")
    output = pa.Table.from_pandas(_predicted(customers), preserve_index=False)

    run = stage_batch_output(
        output.to_batches(max_chunksize=64),
        replace(_job(), top_n=15),
        tmp_path,
        source_rows=200,
        tolerance=0.1,
    )

    staged = pq.read_table(tmp_path / PREDICTIONS_FILE).to_pandas()
    high = staged[staged["risk_tier"] == "high"]
    assert run.tiers["high"] == 15 == len(high)
    assert (
        high["churn_probability"].min()
        > staged[staged["risk_tier"] != "high"]["churn_probability"].max()
    )


@pytest.mark.parametrize("returned", [197, 203])
def test_batch_output_that_misses_or_adds_source_rows_is_refused(tmp_path: Path, returned: int):
    """A row the job dropped would otherwise be neither scored nor rejected."""
    customers = generate_customers(returned, seed=7, messy=False).drop(columns="Churn")
    output = pa.Table.from_pandas(_predicted(customers), preserve_index=False)

    with pytest.raises(ContractError, match=f"{returned} rows came back .* the 200 rows"):
        stage_batch_output(output.to_batches(), _job(), tmp_path, source_rows=200, tolerance=0.1)


def test_only_a_batch_prediction_jobs_own_dataset_is_deleted():
    with pytest.raises(
        SourceError, match=re.escape("p.churn is not a batch prediction job's dataset")
    ):
        remove_job_dataset("p.churn.predictions")


def _stage_job_output(home: Path, job_dataset: str, source: str, tmp_path: Path) -> Dataset:
    """Steps 1 and 2c of the scoring pipeline's batch branch, as they run on Vertex, on
    the output table of a job in `job_dataset`."""
    model = Model(name="model", uri=str(tmp_path / "model"))
    load_champion.python_func(
        registry_uri=str(home / "registry"),
        model_ref="champion",
        model=model,
        vertex_model=VertexModel(name="vm", uri=str(tmp_path / "vm")),
    )
    project, dataset = job_dataset.split(".")
    staged = Dataset(name="staged", uri=str(tmp_path / "staged"))
    stage_batch_predictions.python_func(
        predictions=BQTable.create("bigquery_output_table", project, dataset, "predictions"),
        model=model,
        source_uri=source,
        as_of="2026-12-02",
        run_id="run-1",
        batch_rows=100,
        high_risk_cutoff=0.7,
        medium_risk_cutoff=0.4,
        invalid_row_tolerance=0.1,
        time_zone="UTC",
        high_risk_top_n=0,
        high_risk_top_share=0.1,
        staged=staged,
        observed=Artifact(name="observed", uri=str(tmp_path / "observed")),
    )
    return staged


def _job_output(
    bq_dataset: str, customers: pd.DataFrame, *, returned: pd.DataFrame
) -> tuple[str, str]:
    """A source table of `customers` in `bq_dataset`, and a batch prediction job's dataset
    beside it whose predictions table holds the `returned` ones; (job dataset, source)."""
    job_dataset = f"{bq_dataset.split('.')[0]}.prediction_churn_{uuid.uuid4().hex[:8]}"
    bigquery.client(parse_uri(f"bq://{job_dataset}.any")).create_dataset(job_dataset)
    source = f"bq://{bq_dataset}.customers"
    write_table(customers, source)
    write_table(_predicted(returned), f"bq://{job_dataset}.predictions")
    return job_dataset, source


def _dataset_exists(dataset: str) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        bigquery.client(parse_uri(f"bq://{dataset}.any")).get_dataset(dataset)
    except NotFound:
        return False
    return True


@pytest.mark.bigquery
def test_the_batch_branch_stages_the_jobs_bigquery_output_then_deletes_its_dataset(
    bq_dataset: str, champion_home: Path, tmp_path: Path
):
    customers = generate_customers(300, seed=8, messy=False).drop(columns="Churn")
    job_dataset, source = _job_output(bq_dataset, customers, returned=customers)

    staged = _stage_job_output(champion_home, job_dataset, source, tmp_path)

    assert staged.metadata["rows"]["read"] == 300 == staged.metadata["rows"]["scored"]
    assert staged.metadata["tiers"]["high"] == 30  # 10% of the day, by capacity
    assert len(pq.read_table(Path(staged.path) / PREDICTIONS_FILE)) == 300
    assert not _dataset_exists(job_dataset)


@pytest.mark.bigquery
def test_a_job_output_missing_a_row_is_refused_and_its_dataset_kept(
    bq_dataset: str, champion_home: Path, tmp_path: Path
):
    customers = generate_customers(300, seed=8, messy=False).drop(columns="Churn")
    job_dataset, source = _job_output(bq_dataset, customers, returned=customers.iloc[1:])

    with pytest.raises(ContractError, match=r"299 rows came back .* the 300 rows"):
        _stage_job_output(champion_home, job_dataset, source, tmp_path)
    assert _dataset_exists(job_dataset)
