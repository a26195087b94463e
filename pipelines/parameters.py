"""Settings -> a pipeline's arguments: the one mapping local runs, Vertex runs and schedules
use, so the three can never disagree on what a setting means.

Every input a pipeline declares (read from its compiled spec, so an input added to a
pipeline function is seen at once) takes its value from `SOURCES` when listed there, else
from the settings attribute or property of the same name. An input with neither fails
loudly (and `tests/test_parameters.py` proves both pipelines are fully covered): a new
pipeline parameter needs one line in `SOURCES` unless a setting already has its name.
"""

from collections.abc import Callable, Mapping
from typing import Any

from components.errors import SettingsError
from components.settings import Settings
from components.warehouse import with_bigquery_job

Source = Callable[[Settings, bool], Any]
"""(settings, on Vertex?) -> the argument's value."""


def _table(uri: Callable[[Settings], str]) -> Source:
    # Steps on Vertex have no settings file: a bq:// URI carries its job's project and place.
    return lambda s, _vertex: with_bigquery_job(uri(s), s.bigquery_job_project, s.bigquery_location)


SOURCES: dict[str, Source] = {
    "source_uri": _table(lambda s: s.source_uri),
    "output_uri": _table(lambda s: s.predictions_uri),
    "outcomes_uri": _table(lambda s: s.outcomes_uri),
    "registry_uri": lambda s, _vertex: s.registry_uri,
    "batch_rows": lambda s, _vertex: s.score_batch_rows,
    "workers": lambda s, _vertex: s.score_workers,
    # Which model and which date are per run (CLI flags); these are the scheduled defaults.
    "model_ref": lambda _s, _vertex: "champion",
    "as_of": lambda _s, _vertex: "",
    # CSV copies of the predictions land in the local home; on Vertex the table is the
    # output (a Vertex run never carries a local path).
    "export_dir": lambda s, vertex: "" if vertex else str((s.home / "predictions").resolve()),
    # The image a Vertex model version is registered with; a local registry has none.
    "serving_image": lambda s, vertex: s.serving_image_uri if vertex else (s.serving_image or ""),
    # Where Vertex jobs started by a step (batch prediction) run.
    "project": lambda s, _vertex: s.project or "",
    "location": lambda s, _vertex: s.region,
    # A run joins its experiment itself (step 0), on Vertex only: nothing to join locally.
    "experiment": lambda s, vertex: (s.experiment or "") if vertex else "",
    # The training run a monitoring run on Vertex starts when a retraining is due: only a
    # schedule passes one (`schedules.retraining_job`); submit.py trains after other runs.
    "retrain_job": lambda _s, _vertex: "",
    "vertex_endpoint": lambda s, vertex: s.vertex_endpoint if vertex else "",
}


def declared_inputs(pipeline_func: Any) -> list[str]:
    """The input parameter names of a `@dsl.pipeline` function, from its pipeline spec."""
    return sorted(pipeline_func.pipeline_spec.root.input_definitions.parameters)


def pipeline_arguments(
    pipeline_func: Any,
    settings: Settings,
    *,
    vertex: bool,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every input `pipeline_func` declares, from `settings` (`run`: per-run values such as
    `--model` or `--as-of`, which win); fails naming any input nothing maps."""
    run = dict(run or {})
    unknown = sorted(set(run) - set(declared_inputs(pipeline_func)))
    if unknown:
        raise SettingsError(f"{pipeline_func.name} has no parameter(s) {', '.join(unknown)}")
    arguments: dict[str, Any] = {}
    for name in declared_inputs(pipeline_func):
        if name in run:
            arguments[name] = run[name]
        elif name in SOURCES:
            arguments[name] = SOURCES[name](settings, vertex)
        elif name in Settings.model_fields:
            arguments[name] = getattr(settings, name)
        else:
            raise SettingsError(
                f"pipeline parameter {name!r} of {pipeline_func.name} has no setting: add it to "
                "pipelines.parameters.SOURCES or name a setting after it"
            )
    if vertex:
        _require_cloud(arguments)
    return arguments


_CLOUD_SCHEMES = ("bq://", "gs://", "vertex://")


def _require_cloud(arguments: Mapping[str, Any]) -> None:
    """A step on Vertex cannot see this machine: every location must be a cloud URI."""
    for name, value in arguments.items():
        if name.endswith(("_uri", "_dir")) and value and not str(value).startswith(_CLOUD_SCHEMES):
            raise SettingsError(
                f"{name} is {value!r}, which a run on Vertex AI cannot reach; use a bq://, "
                "gs:// or vertex:// URI (--source, --output, CHURN_REGISTRY), or --local"
            )
