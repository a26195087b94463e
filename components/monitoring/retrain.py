"""Step 4 of the monitoring pipeline on Vertex AI: when a retraining is due, start a training
run from the published training template, as the weekly schedule does.

The run to start comes whole as a pipeline argument (`retrain_job`: the PipelineJob's REST
JSON, made by `pipelines.schedules.retraining_job` from the same template, pinned by its
sha256 version, that the weekly training schedule names): a step on Vertex has no settings,
and a static argument keeps the monitoring schedule's body static. The step creates it with
Google's own client, as the pipelines' account (which must be able to act as itself).
"""

from datetime import date

from kfp.dsl import Artifact, Input, Output

from components.errors import ChurnError
from components.stage import stage

RETRAIN_LABEL = {"started-by": "monitoring"}
"""Added to the training run a monitoring run starts, so `runs` and the console tell it from
the scheduled ones."""


class RetrainError(ChurnError):
    """Vertex AI refused the training run a monitoring run started."""


def retraining_job_id(display_name: str, day: date) -> str:
    """One id per pipeline and monitored day: a retried step or a second monitoring run that
    day finds the run already there (409) instead of starting another."""
    return f"{display_name}-retrain-{day:%Y%m%d}"


def start_training_run(
    retrain_job: str, *, project: str, location: str, endpoint: str, day: date
) -> tuple[str, bool]:
    """Create the PipelineJob `retrain_job` (REST JSON) in `project`/`location` through the
    Vertex AI endpoint `endpoint`: (its resource name, whether this call created it; False
    when the day's retraining run exists already)."""
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1

    from components.errors import google_reason

    # Parsed strictly: a field Vertex does not know fails here, not as a 400 later.
    job = aiplatform_v1.PipelineJob.from_json(retrain_job)
    job.labels.update(RETRAIN_LABEL)
    parent = f"projects/{project}/locations/{location}"
    job_id = retraining_job_id(job.display_name, day)
    client = aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": endpoint}
    )
    try:
        created = client.create_pipeline_job(
            parent=parent, pipeline_job=job, pipeline_job_id=job_id
        )
    except exceptions.GoogleAPICallError as exc:
        # Over REST, Vertex's ALREADY_EXISTS arrives as a plain 409 (Conflict).
        if isinstance(exc, exceptions.Conflict) and "already exists" in str(exc):
            return f"{parent}/pipelineJobs/{job_id}", False
        fix = (
            " Grant the pipelines' account roles/iam.serviceAccountUser on itself: "
            "python submit.py setup, then python submit.py check"
            if "act as service_account" in str(exc)
            else ""
        )
        raise RetrainError(
            f"starting the retraining run from {job.template_uri or 'an inline spec'} failed: "
            f"{google_reason(exc)}{fix}"
        ) from None
    return created.name, True


@stage
def start_retraining(
    measured: Input[Artifact],
    retrain_job: str,
    project: str,
    location: str,
    vertex_endpoint: str,
    retraining: Output[Artifact],
) -> None:
    """Start the training run `retrain_job` (the published training template, pinned by its
    sha256 version) as the pipelines' account; runs only on Vertex, when retraining is due."""
    import json
    from datetime import date
    from pathlib import Path

    from components.monitoring.retrain import start_training_run

    today = date.fromisoformat(json.loads(Path(measured.path).read_text())["today"])
    name, created = start_training_run(
        retrain_job, project=project, location=location, endpoint=vertex_endpoint, day=today
    )
    Path(retraining.path).write_text(json.dumps({"pipeline_job": name, "created": created}))
    retraining.metadata.update({"pipeline_job": name, "created": created})
