"""Step 0 of both pipelines on Vertex AI: the run joins its Vertex AI experiment.

The pipeline does this itself, rather than the CLI after submitting, for two reasons:
runs started by a schedule (Cloud Scheduler or Vertex Schedules) have no CLI to do it, and
Vertex creates a run's metadata context only once it starts the run, which on a busy
region can take minutes after the submission returned. Inside the run the context exists.

What is sent is what `aiplatform.PipelineJob.submit(experiment=...)` sends: the experiment
as a `system.Experiment` context (created if new), then the run's context added to it as a
child, which is how the console's Experiments page finds the run and its metrics.
"""

import contextlib
import re

from components.errors import ChurnError, google_reason
from components.stage import stage

_JOB = re.compile(r"(?P<parent>projects/[^/]+/locations/(?P<location>[^/]+))/pipelineJobs/[^/]+")


class ExperimentError(ChurnError):
    """The run could not be added to its experiment."""


def experiment_context(experiment: str):
    """The experiment as the Vertex SDK creates it, so the console lists it."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.Context(
        display_name=experiment,
        schema_title="system.Experiment",
        schema_version="0.0.1",
        metadata={"experiment_deleted": False},
    )


def join_experiment(pipeline_job: str, experiment: str, api_endpoint: str | None = None) -> str:
    """Add the run `pipeline_job` (projects/P/locations/R/pipelineJobs/ID) to `experiment`,
    creating the experiment if it is new; returns the run's context name. `api_endpoint`
    defaults to the run's regional Vertex AI endpoint."""
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1

    found = _JOB.fullmatch(pipeline_job)
    if not found:
        raise ExperimentError(f"{pipeline_job!r} is not a pipeline job resource name")
    options = {"api_endpoint": api_endpoint or f"{found['location']}-aiplatform.googleapis.com"}
    pipelines = aiplatform_v1.PipelineServiceClient(transport="rest", client_options=options)
    metadata = aiplatform_v1.MetadataServiceClient(transport="rest", client_options=options)
    store = f"{found['parent']}/metadataStores/default"
    try:
        run_context = pipelines.get_pipeline_job(name=pipeline_job).job_detail.pipeline_run_context
        if not run_context.name:
            raise ExperimentError(f"run {pipeline_job} has no metadata context")
        with contextlib.suppress(exceptions.Conflict):  # 409: the experiment exists already
            metadata.create_context(
                parent=store, context=experiment_context(experiment), context_id=experiment
            )
        metadata.add_context_children(
            context=f"{store}/contexts/{experiment}", child_contexts=[run_context.name]
        )
    except exceptions.GoogleAPICallError as exc:
        raise ExperimentError(
            f"adding run {pipeline_job} to experiment {experiment!r} failed: {google_reason(exc)}"
        ) from None
    return run_context.name


@stage
def join_vertex_experiment(experiment: str, pipeline_job: str) -> None:
    """Add this run to `experiment` (on Vertex AI only: the job name placeholder has no
    value under kfp.local)."""
    from components.experiment import join_experiment

    join_experiment(pipeline_job, experiment)


def join_experiment_on_vertex(experiment: str) -> None:
    """Step 0 of both pipelines (call inside the pipeline function). The job name
    placeholder has no value under kfp.local, where `experiment` is "": the condition keeps
    the step to Vertex AI."""
    from kfp import dsl

    with dsl.If(experiment != "", name="on-vertex-with-experiment"):
        # A failure fails the run (visibly, unlike a warning nobody reads); a passing blip
        # of the Metadata API should not.
        join_vertex_experiment(
            experiment=experiment, pipeline_job=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER
        ).set_display_name("0. Join experiment").set_retry(num_retries=2)
