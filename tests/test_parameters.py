"""One mapping from settings to a pipeline's arguments, for local runs, Vertex runs and
schedules: every declared input is covered, and a Vertex run never carries a local path."""

from pathlib import Path

import pytest
from kfp import dsl

from components.errors import SettingsError
from components.settings import Settings, load_settings
from pipelines.compiling import build_pipeline
from pipelines.parameters import declared_inputs, pipeline_arguments

scoring_pipeline = build_pipeline("scoring", Settings())
training_pipeline = build_pipeline("training", Settings())

PIPELINES = [training_pipeline, scoring_pipeline]


@pytest.fixture
def cloud(no_config: Path):
    return load_settings({"project": "acme-corp"}, environ={}, config_file=no_config)


@pytest.mark.parametrize("pipeline_func", PIPELINES, ids=lambda p: p.name)
@pytest.mark.parametrize("vertex", [False, True], ids=["local", "vertex"])
def test_every_declared_input_gets_a_value(pipeline_func, vertex, cloud, no_config: Path):
    settings = cloud if vertex else load_settings(environ={}, config_file=no_config)
    arguments = pipeline_arguments(pipeline_func, settings, vertex=vertex)
    assert sorted(arguments) == declared_inputs(pipeline_func)


@pytest.mark.parametrize("pipeline_func", PIPELINES, ids=lambda p: p.name)
def test_a_vertex_run_never_carries_a_local_path(pipeline_func, cloud):
    for name, value in pipeline_arguments(pipeline_func, cloud, vertex=True).items():
        text = str(value)
        assert not text.startswith(("/", ".", "duckdb://", "~")), (name, value)
        if name.endswith(("_uri", "_dir")) and text:
            assert text.startswith(("bq://", "gs://", "vertex://")), (name, value)


def test_a_local_source_with_a_project_is_refused_before_submission(no_config: Path):
    flags = {"project": "acme-corp", "source": "customers.csv"}
    settings = load_settings(flags, environ={}, config_file=no_config)
    with pytest.raises(
        SettingsError, match=r"source_uri is 'customers\.csv', which a run on Vertex"
    ):
        pipeline_arguments(training_pipeline, settings, vertex=True)


def test_settings_reach_the_arguments_by_name_or_table(cloud):
    arguments = pipeline_arguments(
        scoring_pipeline, cloud, vertex=True, run={"as_of": "2026-12-01"}
    )
    assert arguments["batch_rows"] == cloud.score_batch_rows  # from the table
    assert arguments["drift_threshold"] == cloud.drift_threshold  # by name
    assert (
        arguments["output_uri"]
        == "bq://acme-corp.churn.churn_predictions?billing_project=acme-corp&location=us-central1"
    )
    assert arguments["as_of"] == "2026-12-01"  # a run value wins
    assert arguments["export_dir"] == ""


def test_a_parameter_nothing_maps_fails_loudly(cloud):
    from components.data.ingest import ingest

    @dsl.pipeline(name="churn-new")
    def new_pipeline(source_uri: str, brand_new_knob: int = 3):
        ingest(source_uri=source_uri)

    with pytest.raises(SettingsError, match="'brand_new_knob' of churn-new has no setting"):
        pipeline_arguments(new_pipeline, cloud, vertex=True)
    with pytest.raises(SettingsError, match="has no parameter"):
        pipeline_arguments(training_pipeline, cloud, vertex=True, run={"as_of": ""})
