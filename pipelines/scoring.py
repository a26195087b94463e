"""Daily batch-scoring pipeline: every active customer scored, nothing lost, at scale.

Steps:
 0. Join experiment (on Vertex AI, when `experiment` is set): as in training.
 1. Load champion: copy the model to score with (the `champion` alias unless `model_ref`
    names a version) out of the registry, refusing a file whose SHA-256 changed.
 2. Validate and score in chunks: stream the customer table from `source_uri` in Arrow
    record batches; validate each chunk for serving (rows that cannot be scored become
    rejects with their reason), score the rest, and stage both as Parquet. A model
    pickled by other versions of its libraries than the image's is refused unless
    `accept_library_mismatch` (the serving image, in 2b, checks the same). Reading,
    validating and scoring are one step so the table is never held, or copied, whole.
    With a capacity (`high_risk_top_n` or `high_risk_top_share`), a second pass over the
    staged predictions puts exactly the day's top customers in the `high` tier.
    With `control_share`, that share of the `high` tier (by a hash of the customer id
    salted with `control_salt`) gets `treatment_group` "control", the rest "offer".
    With `batch_prediction` (BigQuery in and out, a vertex:// registry), instead:
    2a. Batch prediction tables: the job's BigQuery input table and output project.
    2b. Vertex batch prediction: a Vertex AI batch prediction job scores the table with
        the champion version's serving image on `batch_machine_type` machines.
    2c. Stage batch predictions: read its output (predictions and failed instances) in
        chunks and stage it as step 2 does, the same validation deciding the rejects and
        the same capacity tiers; refuse output that misses or adds a source row;
        delete the job's dataset.
 3. Publish predictions: in one transaction, replace the as-of date's rows of the output
    table and of its `_rejects` table with the staged ones; export both as CSV files when
    `export_dir` is set.
 4. Summary and drift report: row counts (read = scored + rejected), churn rate, risk
    tiers, and input drift (PSI per feature and of the scores) against the champion's
    training data, as KFP metrics and a self-contained HTML report.
 5. Run summary: the summary of whichever branch ran, as the run's output.

Steps 3 and 4 are the same components in both branches.

`as_of` defaults to "" meaning today's date in `time_zone` when step 2 runs, so a compiled
or scheduled pipeline never freezes a date. Under kfp.local `batch_prediction` must stay
off: Google Cloud Pipeline Components run on Vertex AI only.
"""

from typing import Any

from google_cloud_pipeline_components.v1.batch_predict_job import ModelBatchPredictOp
from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.experiment import join_experiment_on_vertex
from components.scoring.batch_prediction import batch_prediction_tables, stage_batch_predictions
from components.scoring.champion import load_champion
from components.scoring.chunked import score_customers
from components.scoring.publish import publish_predictions
from components.scoring.summary import scoring_result, summarize_scoring, summary_text
from components.settings import Settings

# Parameter defaults: the settings' own, whatever the config file says (schedules and
# submitted runs pass every value; a compiled template stays the same).
DEFAULTS = Settings()


def _publish_and_summarize(
    champion: dsl.PipelineTask,
    staged: dsl.PipelineTask,
    output_uri: str,
    export_dir: str,
    drift_threshold: float,
) -> Any:
    """Steps 3 and 4 after either way of scoring; returns the summary as JSON text."""
    published = publish_predictions(
        staged=staged.outputs["staged"], output_uri=output_uri, export_dir=export_dir
    ).set_display_name("3. Publish predictions")
    summarized = summarize_scoring(
        model=champion.outputs["model"],
        staged=staged.outputs["staged"],
        observed=staged.outputs["observed"],
        published=published.outputs["published"],
        drift_threshold=drift_threshold,
    ).set_display_name("4. Summary and drift report")
    return (
        summary_text(summary=summarized.outputs["summary"])
        .set_display_name("4. Summary text")
        .output
    )


def build_scoring_pipeline(settings: Settings) -> GraphComponent:
    """The scoring pipeline, its scoring step given the CPU and memory of `settings` (Vertex
    picks the machine from them; kfp.local ignores them). Nothing else in it depends on
    the settings: parameter defaults and display names stay as they are."""

    @dsl.pipeline(
        name="churn-scoring",
        description="Score every customer with the champion churn model and publish the scores.",
    )
    def scoring_pipeline(
        source_uri: str,
        registry_uri: str,
        output_uri: str,
        model_ref: str = "champion",
        as_of: str = "",
        export_dir: str = "",
        batch_rows: int = DEFAULTS.score_batch_rows,
        workers: int = DEFAULTS.score_workers,
        high_risk_cutoff: float = DEFAULTS.high_risk_cutoff,
        medium_risk_cutoff: float = DEFAULTS.medium_risk_cutoff,
        invalid_row_tolerance: float = DEFAULTS.invalid_row_tolerance,
        drift_threshold: float = DEFAULTS.drift_threshold,
        time_zone: str = DEFAULTS.time_zone,
        high_risk_top_n: int = DEFAULTS.high_risk_top_n,
        high_risk_top_share: float = DEFAULTS.high_risk_top_share,
        accept_library_mismatch: bool = DEFAULTS.accept_library_mismatch,
        batch_prediction: bool = DEFAULTS.batch_prediction,
        project: str = DEFAULTS.project or "",
        location: str = DEFAULTS.region,
        batch_machine_type: str = DEFAULTS.batch_machine_type,
        batch_starting_replicas: int = DEFAULTS.batch_starting_replicas,
        batch_max_replicas: int = DEFAULTS.batch_max_replicas,
        experiment: str = "",
        control_share: float = DEFAULTS.control_share,
        control_salt: str = DEFAULTS.control_salt,
        reasons_for: str = DEFAULTS.reasons_for,
    ) -> dsl.Artifact:
        """Returns the run summary artifact (JSON, with the key figures as metadata)."""
        join_experiment_on_vertex(experiment)
        champion = load_champion(registry_uri=registry_uri, model_ref=model_ref).set_display_name(
            "1. Load champion model"
        )
        with dsl.If(batch_prediction == True, name="vertex-batch-prediction"):  # noqa: E712
            tables = batch_prediction_tables(
                source_uri=source_uri,
                output_uri=output_uri,
                reasons_for=reasons_for,
                medium_risk_cutoff=medium_risk_cutoff,
                high_risk_top_n=high_risk_top_n,
                high_risk_top_share=high_risk_top_share,
            ).set_display_name("2a. Batch prediction tables")
            predicted = ModelBatchPredictOp(
                project=project,
                location=location,
                job_display_name="churn-scoring",
                model=champion.outputs["vertex_model"],
                instances_format="bigquery",
                bigquery_source_input_uri=tables.outputs["source"],
                predictions_format="bigquery",
                bigquery_destination_output_uri=tables.outputs["destination"],
                instance_type="object",
                model_parameters=tables.outputs["parameters"],
                machine_type=batch_machine_type,
                starting_replica_count=batch_starting_replicas,
                max_replica_count=batch_max_replicas,
            ).set_display_name("2b. Vertex batch prediction")
            batch_staged = stage_batch_predictions(
                predictions=predicted.outputs["bigquery_output_table"],
                model=champion.outputs["model"],
                source_uri=source_uri,
                as_of=as_of,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                batch_rows=batch_rows,
                high_risk_cutoff=high_risk_cutoff,
                medium_risk_cutoff=medium_risk_cutoff,
                invalid_row_tolerance=invalid_row_tolerance,
                time_zone=time_zone,
                high_risk_top_n=high_risk_top_n,
                high_risk_top_share=high_risk_top_share,
                control_share=control_share,
                control_salt=control_salt,
                reasons_for=reasons_for,
            ).set_display_name("2c. Stage batch predictions")
            batch_summary = _publish_and_summarize(
                champion, batch_staged, output_uri, export_dir, drift_threshold
            )
        with dsl.Else(name="chunked-scoring"):
            scored = score_customers(
                source_uri=source_uri,
                output_uri=output_uri,
                model=champion.outputs["model"],
                as_of=as_of,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                batch_rows=batch_rows,
                workers=workers,
                high_risk_cutoff=high_risk_cutoff,
                medium_risk_cutoff=medium_risk_cutoff,
                invalid_row_tolerance=invalid_row_tolerance,
                time_zone=time_zone,
                high_risk_top_n=high_risk_top_n,
                high_risk_top_share=high_risk_top_share,
                accept_library_mismatch=accept_library_mismatch,
                control_share=control_share,
                control_salt=control_salt,
                reasons_for=reasons_for,
            )
            scored.set_display_name("2. Validate and score in chunks")
            scored.set_cpu_limit(settings.scoring_cpu).set_memory_limit(settings.scoring_memory)
            chunked_summary = _publish_and_summarize(
                champion, scored, output_uri, export_dir, drift_threshold
            )
        # kfp.local picks one of two branches' outputs only for parameters, so the branches
        # hand over the summary as text and one step outside them makes it the run's artifact.
        result = scoring_result(
            summary_json=dsl.OneOf(batch_summary, chunked_summary)
        ).set_display_name("5. Run summary")
        return result.outputs["summary"]

    return scoring_pipeline
