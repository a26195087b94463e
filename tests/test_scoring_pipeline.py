"""The scoring pipeline as users run it: compiled for Vertex, and end to end under kfp.local
through `submit.py score`, against a champion registered the way training registers one."""

import io
import json
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineSpec

import submit
from components.data.sample_data import generate_customers
from components.settings import Settings
from pipelines.compiling import build_pipeline

scoring_pipeline = build_pipeline("scoring", Settings())


def test_scoring_pipeline_compiles_to_a_valid_spec_with_numbered_steps(tmp_path: Path):
    path = tmp_path / "scoring.yaml"
    compiler.Compiler().compile(scoring_pipeline, str(path))
    spec = yaml.safe_load(path.read_text())
    json_format.ParseDict(spec, PipelineSpec())
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    names = sorted(
        task["taskInfo"]["name"]
        for dag in dags
        for task in dag["tasks"].values()
        if not task["componentRef"]["name"].startswith("comp-condition-")  # dsl.If groups
    )
    assert names == [
        "0. Join experiment",
        "1. Load champion model",
        "2. Validate and score in chunks",
        "2a. Batch prediction tables",
        "2b. Vertex batch prediction",
        "2c. Stage batch predictions",
        "3. Publish predictions",
        "3. Publish predictions",
        "4. Summary and drift report",
        "4. Summary and drift report",
        "4. Summary text",
        "4. Summary text",
        "5. Run summary",
    ]
    # A scheduled run must not freeze a date: the default is decided when step 2 runs.
    assert spec["root"]["inputDefinitions"]["parameters"]["as_of"]["defaultValue"] == ""


def _score(home: Path, *args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        code = submit.main(["score", "--home", str(home), "--local", "--json", *args])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.slow
def test_submit_score_scores_everyone_once_per_date(champion_home: Path, tmp_path: Path):
    source = tmp_path / "customers.csv"
    frame = generate_customers(1_500, seed=22)
    frame.loc[5, "customerID"] = ""  # cannot be scored
    frame.loc[6, "Contract"] = "Three year"  # unseen: scored and counted
    frame.to_csv(source, index=False)

    first = _score(champion_home, "--source", str(source), "--batch-rows", "400")
    rows = first["rows"]
    assert first["status"] == "succeeded" and first["model_version"] == 1
    assert rows["read"] == 1_500 == rows["scored"] + rows["rejected"]
    assert sum(first["tiers"].values()) == rows["scored"]
    assert first["as_of_date"] == datetime.now(UTC).date().isoformat()
    warehouse = champion_home / "warehouse.duckdb"
    assert first["output"] == f"duckdb://{warehouse}?table=churn_predictions"
    assert first["unseen_categories"] == {"Contract": 1}
    assert first["drift"]["drifted_features"] == []  # same population as the training data

    again = _score(champion_home, "--source", str(source), "--as-of", first["as_of_date"])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        published = con.execute("SELECT * FROM churn_predictions").df()
        rejects = con.execute("SELECT * FROM churn_predictions_rejects").df()
    assert len(published) == rows["scored"]  # the rerun replaced the date's rows
    assert published["customer_id"].is_unique
    assert set(published["run_id"]) == {again["run_id"]}
    assert len(rejects) == rows["rejected"]
    assert "`customerID` is blank" in set(rejects["reason"])
    assert frame.loc[6, "customerID"] in set(published["customer_id"])

    export = pd.read_csv(again["exports"]["predictions"])
    assert sorted(export["customer_id"]) == sorted(published["customer_id"])
    report = Path(again["report"]).read_text()
    assert "Population stability index" in report and "Contract" in report
