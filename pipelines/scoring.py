"""Daily batch-scoring pipeline: every active customer scored, nothing lost, at scale.

Steps:
 1. Load champion: copy the model to score with (the `champion` alias unless `model_ref`
    names a version) out of the registry, refusing a file whose SHA-256 changed.
 2. Validate and score in chunks: stream the customer table from `source_uri` in Arrow
    record batches; validate each chunk for serving (rows that cannot be scored become
    rejects with their reason), score the rest, and stage both as Parquet. Reading,
    validating and scoring are one step so the table is never held, or copied, whole.
    With a capacity (`high_risk_top_n` or `high_risk_top_share`), a second pass over the
    staged predictions puts exactly the day's top customers in the `high` tier.
 3. Publish predictions: in one transaction, replace the as-of date's rows of the output
    table and of its `_rejects` table with the staged ones; export both as CSV files when
    `export_dir` is set.
 4. Summary and drift report: row counts (read = scored + rejected), churn rate, risk
    tiers, and input drift (PSI per feature and of the scores) against the champion's
    training data, as KFP metrics and a self-contained HTML report.

`as_of` defaults to "" meaning today's date in `time_zone` when step 2 runs, so a compiled
or scheduled pipeline never freezes a date.
"""

from kfp import dsl

from components.drift import summarize_scoring
from components.publish import publish_predictions
from components.score import load_champion, score_customers
from components.settings import Settings, compile_time_settings

DEFAULTS = Settings()
# Vertex picks the scoring step's machine from these; kfp.local ignores them.
RESOURCES = compile_time_settings()


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
) -> dsl.Artifact:
    """Returns the run summary artifact (JSON, with the key figures as metadata)."""
    champion = load_champion(registry_uri=registry_uri, model_ref=model_ref).set_display_name(
        "1. Load champion model"
    )
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
    )
    scored.set_display_name("2. Validate and score in chunks")
    scored.set_cpu_limit(RESOURCES.scoring_cpu).set_memory_limit(RESOURCES.scoring_memory)
    published = publish_predictions(
        staged=scored.outputs["staged"], output_uri=output_uri, export_dir=export_dir
    ).set_display_name("3. Publish predictions")
    summarized = summarize_scoring(
        model=champion.outputs["model"],
        staged=scored.outputs["staged"],
        observed=scored.outputs["observed"],
        published=published.outputs["published"],
        drift_threshold=drift_threshold,
    ).set_display_name("4. Summary and drift report")
    return summarized.outputs["summary"]
