"""Weekly churn-model training pipeline.

Steps:
 0. Join experiment (on Vertex AI, when `experiment` is set): add the run to its Vertex AI
    experiment, so scheduled runs are compared with submitted ones in the console.
 1. Ingest: read the customer table from `source_uri` (file, DuckDB or BigQuery).
 2. Validate: check the data contract; set aside invalid and duplicate rows with reasons.
 3. Split: hold out the persistent, leak-free test set (customers chosen by a salted hash
    of their id, the same every week; a customer is on one side only).
 4. Train candidates: stratified group k-fold CV of five model families, then of the best
    with SMOTE inside the training folds or class weights; pick the best; calibrate it and
    choose its threshold on out-of-fold predictions; refit.
 5. Evaluate: score the untouched test set with the new model and the current champion
    (on the test customers it never trained on), with bootstrap 95% intervals.
 6. Register: add a new registry version (with its hashed training customers and its
    holdout); promote it to champion only if it clears the floor and passes the promotion
    rule against the champion (by default non-inferiority: the 95% interval of the
    difference lies above minus the tolerance).
 7. Summarize: run summary and self-contained HTML report.
 8. Deploy (only with `deploy_endpoint`, and only when step 6 promoted the model): the new
    champion to a Vertex AI endpoint, all traffic to it, the previous model undeployed.

`serving_image` is the container a Vertex model version is registered with ("" means the
project's serving image in Artifact Registry); a local registry ignores it.
"""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.data.ingest import ingest
from components.data.split import split_data
from components.data.validate import validate_training_data
from components.experiment import join_experiment_on_vertex
from components.model.evaluate import evaluate_model
from components.model.register import register_model
from components.model.train import train_candidates
from components.reports.training import summarize_training
from components.serving.endpoint import deploy_to_endpoint
from components.settings import Settings

# Parameter defaults: the settings' own, whatever the config file says (schedules and
# submitted runs pass every value; a compiled template stays the same).
DEFAULTS = Settings()


def build_training_pipeline(settings: Settings) -> GraphComponent:
    """The training pipeline, its training step given the CPU and memory of `settings` (Vertex
    picks the machine from them; kfp.local ignores them). Nothing else in it depends on
    the settings: parameter defaults and display names stay as they are."""

    @dsl.pipeline(
        name="churn-training",
        description="Train, evaluate and register a customer-churn model; promote it if it wins.",
    )
    def training_pipeline(
        source_uri: str,
        registry_uri: str,
        invalid_row_tolerance: float = DEFAULTS.invalid_row_tolerance,
        test_size: float = DEFAULTS.test_size,
        seed: int = DEFAULTS.seed,
        cv_folds: int = DEFAULTS.cv_folds,
        candidates_per_family: int = DEFAULTS.candidates_per_family,
        search_budget_seconds: float = DEFAULTS.search_budget_seconds,
        promotion_metric: str = DEFAULTS.promotion_metric,
        promotion_margin: float = DEFAULTS.promotion_margin,
        promotion_floor: float = DEFAULTS.promotion_floor,
        resampling: str = DEFAULTS.resampling,
        calibration: str = DEFAULTS.calibration,
        promotion_requires_significance: bool = DEFAULTS.promotion_requires_significance,
        bootstrap_samples: int = DEFAULTS.bootstrap_samples,
        serving_image: str = "",
        deploy_endpoint: bool = DEFAULTS.deploy_endpoint,
        endpoint_id: str = DEFAULTS.endpoint_id,
        endpoint_machine_type: str = DEFAULTS.endpoint_machine_type,
        endpoint_min_replicas: int = DEFAULTS.endpoint_min_replicas,
        endpoint_max_replicas: int = DEFAULTS.endpoint_max_replicas,
        experiment: str = "",
        holdout_salt: str = DEFAULTS.holdout_salt,
        holdout_share: float = DEFAULTS.holdout_share,
        promotion_rule: str = DEFAULTS.promotion_rule,
        promotion_tolerance: float = DEFAULTS.promotion_tolerance,
    ) -> dsl.Artifact:
        """Returns the run summary artifact (JSON, with the key figures as metadata)."""
        join_experiment_on_vertex(experiment)
        raw = ingest(source_uri=source_uri).set_display_name("1. Ingest customers")
        checked = validate_training_data(
            raw=raw.outputs["raw"],
            source_uri=source_uri,
            invalid_row_tolerance=invalid_row_tolerance,
        ).set_display_name("2. Validate data contract")
        split = split_data(
            clean=checked.outputs["clean"],
            test_size=test_size,
            seed=seed,
            holdout_salt=holdout_salt,
            holdout_share=holdout_share,
        ).set_display_name("3. Split train / test")
        trained = train_candidates(
            train=split.outputs["train"],
            cv_folds=cv_folds,
            seed=seed,
            candidates_per_family=candidates_per_family,
            search_budget_seconds=search_budget_seconds,
            promotion_metric=promotion_metric,
            resampling=resampling,
            calibration=calibration,
        ).set_display_name("4. Train candidates and select")
        trained.set_cpu_limit(settings.training_cpu).set_memory_limit(settings.training_memory)
        evaluated = evaluate_model(
            model=trained.outputs["model"],
            test=split.outputs["test"],
            registry_uri=registry_uri,
            seed=seed,
            promotion_metric=promotion_metric,
            bootstrap_samples=bootstrap_samples,
        ).set_display_name("5. Evaluate on test set")
        registered = register_model(
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            train=split.outputs["train"],
            predictions=evaluated.outputs["predictions"],
            registry_uri=registry_uri,
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            promotion_metric=promotion_metric,
            promotion_margin=promotion_margin,
            promotion_floor=promotion_floor,
            promotion_requires_significance=promotion_requires_significance,
            serving_image=serving_image,
            promotion_rule=promotion_rule,
            promotion_tolerance=promotion_tolerance,
        ).set_display_name("6. Register and promote")
        summarized = summarize_training(
            raw=raw.outputs["raw"],
            rejects=checked.outputs["rejects"],
            train=split.outputs["train"],
            test=split.outputs["test"],
            model=trained.outputs["model"],
            candidates=trained.outputs["candidates"],
            evaluation=evaluated.outputs["evaluation"],
            predictions=evaluated.outputs["predictions"],
            registration=registered.outputs["registration"],
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ).set_display_name("7. Summary and report")
        with (
            dsl.If(deploy_endpoint == True, name="deploy-endpoint"),  # noqa: E712 (a KFP condition)
            dsl.If(registered.outputs["promoted"] == True, name="promoted"),  # noqa: E712
        ):
            deploy_to_endpoint(
                registered_model=registered.outputs["registered_model"],
                registry_uri=registry_uri,
                endpoint_id=endpoint_id,
                machine_type=endpoint_machine_type,
                min_replicas=endpoint_min_replicas,
                max_replicas=endpoint_max_replicas,
            ).set_display_name("8. Deploy champion to endpoint")
        return summarized.outputs["summary"]

    return training_pipeline
