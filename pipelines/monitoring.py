"""Monitoring pipeline: what became of the customers scored, what the offers did, who is told.

Steps:
 0. Join experiment (on Vertex AI, when `experiment` is set): as in training.
 1. Measure performance: for every scoring date in the predictions table up to `as_of`,
    the estimate of ROC-AUC and of the `high` tier's precision from the calibrated scores
    alone; where the outcome window (`outcome_window_days`) has closed, the realized
    metrics from the outcomes table with their bootstrap intervals and the estimate's
    error; one row per date in the `churn_performance` table beside the predictions
    (replaced per date). Also the scores' drift (PSI) per date against the champion's
    training data, and the offer effect (control against offered customers).
 2. Trend page: expected churn and tiers, drift, realized against estimated ROC-AUC,
    calibration and the offer effect over the dates, as a self-contained HTML report.
 3. Alerts and digest: drift over `drift_threshold`, realized or estimated ROC-AUC under
    `promotion_floor`, more `high` customers than `high_tier_limit`, no scores for the day
    by `scores_deadline`, a retraining due; and the retention team's daily digest. Sent by
    e-mail and chat webhook, each at most once a day (the `churn_alerts` table); the run
    summary says which were sent and whether a retraining is due (`submit.py monitor`
    then starts one when the run did not).
 4. Start retraining (on Vertex AI, when a retraining is due and `retrain_job` names the
    training run to start: the schedule passes the published training template, pinned
    by its sha256 version, as the weekly training schedule runs it): the run creates that
    PipelineJob as the pipelines' account, once per monitored day.

`as_of` defaults to "" meaning today in `time_zone` when step 1 runs, so a schedule never
freezes a date.
"""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.experiment import join_experiment_on_vertex
from components.monitoring.monitor import measure_performance, send_alerts
from components.monitoring.retrain import start_retraining
from components.reports.trend import trend_report
from components.settings import Settings

DEFAULTS = Settings()


def build_monitoring_pipeline(settings: Settings) -> GraphComponent:
    """The monitoring pipeline (nothing in it depends on `settings`: the parameters carry
    every value, their defaults the settings' own)."""
    del settings

    @dsl.pipeline(
        name="churn-monitoring",
        description="Measure the churn model against outcomes, the offers, and alert.",
    )
    def monitoring_pipeline(
        registry_uri: str,
        output_uri: str,
        outcomes_uri: str,
        model_ref: str = "champion",
        as_of: str = "",
        time_zone: str = DEFAULTS.time_zone,
        outcome_window_days: int = DEFAULTS.outcome_window_days,
        lift_top_n: int = DEFAULTS.lift_top_n,
        bootstrap_samples: int = DEFAULTS.bootstrap_samples,
        seed: int = DEFAULTS.seed,
        promotion_floor: float = DEFAULTS.promotion_floor,
        drift_threshold: float = DEFAULTS.drift_threshold,
        high_tier_limit: int = DEFAULTS.high_tier_limit,
        scores_deadline: str = DEFAULTS.scores_deadline,
        retrain_below_floor: int = DEFAULTS.retrain_below_floor,
        retrain_windows: int = DEFAULTS.retrain_windows,
        alert_email_to: str = DEFAULTS.alert_email_to,
        alert_email_from: str = DEFAULTS.alert_email_from,
        smtp_host: str = DEFAULTS.smtp_host,
        smtp_port: int = DEFAULTS.smtp_port,
        smtp_security: str = DEFAULTS.smtp_security,
        smtp_user: str = DEFAULTS.smtp_user,
        alert_webhook: str = DEFAULTS.alert_webhook,
        alert_webhook_format: str = DEFAULTS.alert_webhook_format,
        digest_link: str = DEFAULTS.digest_link,
        digest_customer_ids: bool = DEFAULTS.digest_customer_ids,
        experiment: str = "",
        retrain_job: str = "",
        project: str = "",
        location: str = DEFAULTS.region,
        vertex_endpoint: str = "",
    ) -> dsl.Artifact:
        """Returns the run summary artifact (JSON, with the key figures as metadata)."""
        join_experiment_on_vertex(experiment)
        measured = measure_performance(
            registry_uri=registry_uri,
            model_ref=model_ref,
            predictions_uri=output_uri,
            outcomes_uri=outcomes_uri,
            as_of=as_of,
            time_zone=time_zone,
            outcome_window_days=outcome_window_days,
            lift_top_n=lift_top_n,
            bootstrap_samples=bootstrap_samples,
            seed=seed,
            promotion_floor=promotion_floor,
            retrain_below_floor=retrain_below_floor,
            retrain_windows=retrain_windows,
        ).set_display_name("1. Measure performance")
        page = trend_report(
            measured=measured.outputs["measured"],
            drift_threshold=drift_threshold,
            promotion_floor=promotion_floor,
        ).set_display_name("2. Trend page")
        alerted = send_alerts(
            measured=measured.outputs["measured"],
            report=page.outputs["report"],
            as_of=as_of,
            time_zone=time_zone,
            scores_deadline=scores_deadline,
            drift_threshold=drift_threshold,
            promotion_floor=promotion_floor,
            high_tier_limit=high_tier_limit,
            alert_email_to=alert_email_to,
            alert_email_from=alert_email_from,
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_security=smtp_security,
            smtp_user=smtp_user,
            alert_webhook=alert_webhook,
            alert_webhook_format=alert_webhook_format,
            digest_link=digest_link,
            digest_customer_ids=digest_customer_ids,
        ).set_display_name("3. Alerts and digest")
        # Two gates: kfp.local never has a `retrain_job` (submit.py trains after a local
        # run), and a run on Vertex starts one only when step 1 finds a retraining due.
        with (
            dsl.If(retrain_job != "", name="on-vertex-with-a-training-template"),
            dsl.If(measured.outputs["Output"] == True, name="retraining-due"),  # noqa: E712
        ):
            start_retraining(
                measured=measured.outputs["measured"],
                retrain_job=retrain_job,
                project=project,
                location=location,
                vertex_endpoint=vertex_endpoint,
            ).set_display_name("4. Start retraining")
        return alerted.outputs["summary"]

    return monitoring_pipeline
