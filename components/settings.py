"""Settings: one typed object, filled from defaults < config file < environment < CLI flags.

The config file is TOML (`churn.toml` in the working directory, or the path in `--config`
or `CHURN_CONFIG`); environment variables are the field names upper-cased with a `CHURN_`
prefix (`CHURN_HOME`, `CHURN_PROMOTION_MARGIN`, ...). `GOOGLE_CLOUD_PROJECT` and
`GOOGLE_CLOUD_REGION` are honoured too, as the Google Cloud tools do.

`Settings` is a pydantic-settings model, validated whole where the values come in: types
are strict (a TOML `cv_folds = 5.9` or `true` is refused, not rounded; only text from the
environment is parsed, "5" being 5), every number has a range, unknown keys are refused,
and cloud identifiers are checked against Google's formats (`components.identifiers`).
`load_settings` turns any refusal into one line naming the setting, where its value came
from (the file, the variable or the flag) and what is allowed. `Settings(field=...)` reads
nothing but its arguments, so tests and defaults never depend on the environment.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from components import identifiers
from components.errors import SettingsError

DEFAULT_COMPONENT_IMAGE = "us-docker.pkg.dev/churn-pipelines/churn/components:0.1.0"

# A step's CPU and memory as KFP accepts them at compile time (PipelineTask's own checks).
_CPU = r"^([0-9]*[.])?[0-9]+m?$"
_MEMORY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class Settings(BaseSettings):
    """Everything a run can be configured with. Field docs are the user-facing help."""

    model_config = SettingsConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        validate_default=True,
        use_attribute_docstrings=True,
    )

    home: Annotated[Path, Field(strict=False)] = Path(".churn")
    """Local home: embedded warehouse, model registry, run records and reports."""
    project: str | None = None
    """Google Cloud project; when unset, pipelines run locally."""
    region: str = "us-central1"
    source: str | None = None
    """Customer table URI; default: the embedded warehouse's `customers` table, or
    bq://<project>.churn.customers with a project."""
    predictions: str | None = None
    """Predictions table URI; default: `churn_predictions` in the embedded warehouse, or
    bq://<project>.churn.churn_predictions with a project."""
    registry: str | None = None
    """Model registry: a local directory, or Vertex AI Model Registry as
    vertex://projects/P/locations/R/models/ID?artifacts=gs://BUCKET/PATH (model directories
    are uploaded under `artifacts`); default: <home>/registry, or the model `churn` in the
    project and region with artifacts under <bucket>/models."""

    # --- Google Cloud: every default derives from project and region ---------------------
    bucket: str | None = None
    """gs:// bucket of pipeline artifacts, model directories and CSV exports
    (default gs://<project>-churn)."""
    pipeline_root: str | None = None
    """gs:// root for Vertex AI pipeline artifacts (default <bucket>/pipeline-root)."""
    service_account: str | None = None
    """Service account Vertex pipelines run as
    (default churn-pipelines@<project>.iam.gserviceaccount.com)."""
    scheduler_service_account: str | None = None
    """Service account Cloud Scheduler calls Vertex AI as
    (default churn-scheduler@<project>.iam.gserviceaccount.com)."""
    ci_service_account: str | None = None
    """Service account CI (GitHub Actions, through Workload Identity Federation) pushes
    images and templates and updates the schedules as
    (default churn-ci@<project>.iam.gserviceaccount.com)."""
    submitter_group: str | None = None
    """Google group whose members submit runs, build the images and follow runs from their
    laptops; `setup` grants it what those commands need and `check` checks it."""
    viewer_group: str | None = None
    """Google group whose members inspect runs (console, HTML reports, step logs); `setup`
    grants it read access and `check` checks it."""
    google_api_endpoint: str | None = None
    """One host for every Google Cloud API the project calls (a stand-in in the tests, or a
    Private Service Connect endpoint); an API's own `*_api_endpoint` setting wins over it.
    Default: each API's own host."""
    component_image: str | None = None
    """Image every pipeline step runs in, read at compile time
    (default <region>-docker.pkg.dev/<project>/churn/components:<version>)."""
    serving_image: str | None = None
    """Model-serving image registered with each model version, used by batch prediction and
    endpoints (default <region>-docker.pkg.dev/<project>/churn/serving:<version>)."""
    bigquery_billing_project: str | None = None
    """Project BigQuery jobs run in and are billed to (default: project); tables may live
    in another project."""
    bigquery_location: str | None = None
    """BigQuery location of the jobs, of the dataset `setup` makes and of tables created for
    predictions (default: `region`: Vertex batch prediction needs its BigQuery input and
    output where the model is)."""
    batch_prediction: bool = False
    """Score with a Vertex AI batch prediction job instead of in-process chunked scoring
    (for tables one machine should not score)."""
    batch_machine_type: str = "n1-standard-4"
    batch_starting_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10

    # --- Vertex runs, templates and schedules (submit.py, pipelines/vertex.py, templates.py)
    template_registry: str | None = None
    """Artifact Registry KFP repository the pipeline templates are published to
    (default https://<region>-kfp.pkg.dev/<project>/churn-pipelines)."""
    vertex_api_endpoint: str | None = None
    """Vertex AI API host, for Private Service Connect or tests
    (default <region>-aiplatform.googleapis.com; a URL with http:// is used as given)."""
    scheduler_api_endpoint: str | None = None
    """Cloud Scheduler API host (default cloudscheduler.googleapis.com)."""
    artifact_registry_api_endpoint: str | None = None
    """Artifact Registry API host, where image tags are resolved to digests
    (default artifactregistry.googleapis.com)."""
    cloud_build_api_endpoint: str | None = None
    """Cloud Build API host `submit.py build` uses (default cloudbuild.googleapis.com)."""
    logging_api_endpoint: str | None = None
    """Cloud Logging API host, where `--wait` and `runs` read a failed step's error line
    (default logging.googleapis.com)."""
    training_schedule: str = "0 2 * * 1"
    """Cron of the scheduled retraining, in `time_zone` (default Mondays at 02:00)."""
    scoring_schedule: str = "0 8 * * *"
    """Cron of the scheduled batch scoring, in `time_zone` (default daily at 08:00)."""
    time_zone: str = "UTC"
    """IANA time zone of the schedules, and of "today" when a scheduled scoring run starts."""
    experiment: str = "churn-pipelines"
    """Vertex AI experiment every Vertex run joins, submitted or scheduled (step 0 of both
    pipelines), so their metrics compare; "" for none."""
    labels: str = "app=churn-pipelines"
    """Labels on every Vertex run, as key=value,key=value (lower case, for billing reports)."""
    enable_caching: bool = False
    """Let Vertex reuse a step's earlier outputs; off, as every run should read fresh data."""
    training_cpu: Annotated[str, Field(pattern=_CPU)] = "4"
    """CPUs of the training step on Vertex (it chooses the machine; set when compiling)."""
    training_memory: Annotated[str, Field(pattern=_MEMORY)] = "16G"
    scoring_cpu: Annotated[str, Field(pattern=_CPU)] = "4"
    """CPUs of the scoring step on Vertex (one scoring worker each, by default)."""
    scoring_memory: Annotated[str, Field(pattern=_MEMORY)] = "16G"
    poll_seconds: Annotated[float, Field(ge=0.0, le=3600.0)] = 10.0
    """How often `--wait` asks Vertex AI how a run is doing."""

    # --- Vertex AI endpoint: online serving of the champion (off by default) -------------
    deploy_endpoint: bool = False
    """After a training run promotes a new champion, deploy it to a Vertex AI endpoint and
    undeploy the previous one. An endpoint bills while it is up, used or not (README)."""
    endpoint_id: str = "churn"
    """Endpoint resource id: projects/<project>/locations/<region>/endpoints/<id>, created
    with that id if missing (found by resource name, never by display name)."""
    endpoint_machine_type: str = "n1-standard-2"
    endpoint_min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    endpoint_max_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
    sample_rows: Annotated[int, Field(ge=100, le=10_000_000)] = 21_096
    """Rows of generated sample data loaded into an empty embedded warehouse."""
    invalid_row_tolerance: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    """Largest share of invalid rows set aside before validation stops the run."""
    test_size: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5
    candidates_per_family: Annotated[int, Field(ge=1, le=100)] = 2
    """Hyper-parameter settings tried per model family (randomised search)."""
    search_budget_seconds: Annotated[float, Field(ge=0.0, le=7 * 24 * 3600.0)] = 120.0
    """Wall-time budget of the candidate search, held at any size: a family that would
    overrun its share is cross-validated on a subsample, or skipped (logged, and in the
    report)."""
    promotion_metric: Literal["roc_auc", "pr_auc", "f1"] = "roc_auc"
    promotion_margin: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.002
    """A new model must beat the champion's test-set metric by at least this much."""
    promotion_floor: Annotated[float, Field(ge=0.0, le=1.0)] = 0.70
    """... and reach at least this value, whatever the champion scores."""
    high_risk_cutoff: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """Churn probability from which a customer is in the `high` risk tier."""
    medium_risk_cutoff: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4
    """... and from which `medium` (below it: `low`)."""
    drift_threshold: Annotated[float, Field(ge=0.0, le=100.0)] = 0.2
    """Population stability index above which a feature counts as drifted."""
    score_batch_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """Rows read, scored and written per chunk by batch scoring (bounds memory)."""
    score_workers: Annotated[int, Field(ge=0, le=256)] = 0
    """Processes scoring chunks side by side; 0: one per CPU the scoring step may use."""
    serving_max_request_bytes: Annotated[int, Field(ge=1024, le=2**30)] = 8 * 1024 * 1024
    """Largest prediction request body the model server reads (larger: HTTP 413)."""
    accept_library_mismatch: bool = False
    """Score and serve a model pickled with other versions of scikit-learn, numpy or joblib
    than the image runs (logging a warning) instead of refusing it. Off: a model is only
    unpickled by the libraries its record says pickled it (components/registry/model_files.py)."""

    # --- Calibration, capacity tiers and the promotion gate's uncertainty ----------------
    resampling: Literal["auto", "smote", "class_weight", "none"] = "auto"
    """How training handles the rare churn class: `smote` (synthetic churners inside each
    training fold), `class_weight` (balanced sample weights), `none`, or `auto`: the one
    with the best CV `promotion_metric` for the selected candidate."""
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    """Map from the model's score to a probability that means what it says, fitted on
    out-of-fold predictions of the training split: `sigmoid`, `isotonic`, `auto` (the one
    with the lower CV Brier score) or `none` (raw scores, as resampling leaves them)."""
    high_risk_top_n: Annotated[int, Field(ge=0, le=10**9)] = 0
    """Batch scoring: put exactly the N most likely churners of the day in the `high` tier
    (a team that can call 500 customers a day sets 500), whatever `high_risk_cutoff` says;
    0: tier by `high_risk_cutoff`. Online serving, one request at a time, uses the cut-off."""
    high_risk_top_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """... or the top share of the day's scored customers (0.05: the top 5%); 0: off. At
    most one of `high_risk_top_n` and `high_risk_top_share` may be set."""
    promotion_requires_significance: bool = False
    """Promote only when the bootstrap 95% interval of the paired difference between the
    new model's and the champion's test metric lies above zero."""
    bootstrap_samples: Annotated[int, Field(ge=0, le=100_000)] = 1000
    """Bootstrap resamples of the test rows behind the 95% intervals of the test metric
    and of the paired difference against the champion."""
    reasons_for: Literal["high_medium", "all", "none"] = "high_medium"
    """Batch scoring: which customers get their top 3 reasons (`reason_1` ...) beside their
    score: `high_medium` (the `high` and `medium` tiers by the cut-offs), `all` or `none`."""

    holdout_salt: str = "churn-holdout-1"
    """Salt of the persistent holdout: a customer is in the test set when SHA-256 of the
    salt and their id falls below `holdout_share`, so every weekly version is compared on
    the same customers, none of whom trained any version. Any text; "" turns the
    persistent holdout off (a random `test_size` split, seeded). Changing it rotates the
    holdout (README: "Rotating the holdout")."""
    holdout_share: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    """Share of customers in the persistent holdout, between 0.05 and 0.5. Changing it,
    like changing the salt, starts a new holdout."""
    promotion_rule: Literal["non_inferiority", "superiority", "margin"] = "non_inferiority"
    """How a new model replaces the champion, judged on the paired bootstrap 95% interval
    of the difference in `promotion_metric` (new minus champion) on the same test
    customers: `non_inferiority` (the interval lies above -`promotion_tolerance`),
    `superiority` (above zero) or `margin` (the point estimate beats the champion by
    `promotion_margin`, the rule before intervals). `promotion_requires_significance`
    makes `non_inferiority` `superiority`. Error rates: `python bench/bench_promotion.py`."""
    promotion_tolerance: Annotated[float, Field(ge=0.0, le=0.05)] = 0.005
    """How much worse than the champion a new model may be, at 95% confidence, and still
    replace it under `non_inferiority`; between 0 and 0.05."""

    # --- issue 18: cloud identifiers and regions ------------------------------------------
    extra_regions: str = ""
    """Vertex AI regions newer than this release's list (components/identifiers.py), comma
    separated, each a region name such as europe-west4; `region` may then be one of them."""

    # --- issue 20: monitoring (outcomes, performance, offers, alerts) --------------------
    outcomes: str | None = None
    """Outcomes table URI (`customer_id`, `churned`, `observed_date`: one row per churn or
    per sighting of a customer still there); any table URI. Default: `churn_outcomes` in the
    embedded warehouse, or bq://<project>.churn.churn_outcomes with a project."""
    outcome_window_days: Annotated[int, Field(ge=1, le=366)] = 30
    """Days after a scoring date within which a churn counts as that date's outcome; the
    date's realized performance is measured once they have passed (1 to 366)."""
    lift_top_n: Annotated[int, Field(ge=1, le=10**9)] = 500
    """Realized performance: the lift of the day's N highest-scored customers (at least 1)."""
    control_share: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    """Share of each day's `high` tier marked `treatment_group = "control"` (left out of
    the offers, to measure what the offers do); 0 (off) to 0.5."""
    control_salt: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "campaign-1"
    """Salt of the hash that picks the control group: the same customers stay in it while
    the salt stays; a new campaign gets a new salt (letters, digits, - and _)."""
    high_tier_limit: Annotated[int, Field(ge=0, le=10**9)] = 0
    """Alert when a day's `high` tier holds more customers than this; 0: no limit."""
    scores_deadline: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "09:00"
    """HH:MM in `time_zone` by which today's scores must be in the predictions table; the
    monitoring run alerts when they are not (a scoring schedule that did not run)."""
    alert_email_to: str = ""
    """Comma-separated addresses alerts and the digest are e-mailed to; "" for none. On
    Vertex AI, failed training and scoring runs e-mail them too."""
    alert_email_from: str = "churn-pipelines@localhost"
    """Sender address of alert e-mails."""
    smtp_host: str = ""
    """SMTP server alerts are sent through ("" = no e-mail)."""
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    """SMTP port (1 to 65535); 587 with STARTTLS, 465 with TLS, 25 plain."""
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    """SMTP connection security: `starttls`, `tls` or `none` (a local relay only)."""
    smtp_user: str = ""
    """SMTP login ("" = none); its password is read from the environment variable
    CHURN_SMTP_PASSWORD, never from a file or a flag."""
    alert_webhook: Annotated[str, Field(pattern=r"^(https?://\S+)?$")] = ""
    """Chat webhook URL alerts are posted to ("" = none): a Slack incoming webhook or a
    Google Chat space webhook, as `alert_webhook_format` says."""
    alert_webhook_format: Literal["slack", "google_chat"] = "slack"
    """Payload of `alert_webhook`: `slack` or `google_chat`."""
    digest_customer_ids: bool = False
    """Put the ids of the customers entering the `high` tier in the daily digest. Off: the
    digest holds counts and a link only, no customer data."""
    digest_link: str = ""
    """Link to today's rows in the digest (a BI dashboard or the console's table view);
    `{date}` is replaced by the day. Default: the predictions table's URI."""
    retrain_below_floor: Annotated[int, Field(ge=0, le=100)] = 0
    """Retraining trigger: start a training run when realized ROC-AUC is under
    `promotion_floor` in this many of the last `retrain_windows` closed dates; 0: off."""
    retrain_windows: Annotated[int, Field(ge=1, le=100)] = 5
    """... out of this many (at least `retrain_below_floor`)."""
    monitoring_schedule: str = "0 6 * * 1"
    """Cron of the scheduled monitoring run, in `time_zone` (default Mondays at 06:00)."""

    def __init__(self, **values: Any) -> None:
        # Refused values raise SettingsError, one line, wherever Settings is built.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # `load_settings` describes the cause again, with where each value came from.
            raise SettingsError(describe(exc, {})) from exc

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):
        # Only the arguments: `load_settings` reads the file and the environment, so that
        # `Settings()` is the defaults, whatever the environment of a test or an import.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _fill_bigquery_location(cls, values: Any) -> Any:
        # Filled here, not read through a property, so every reader of the field agrees.
        if isinstance(values, dict) and values.get("bigquery_location") is None:
            values = {**values, "bigquery_location": values.get("region", "us-central1")}
        return values

    @field_validator("home", mode="before")
    @classmethod
    def _home_not_empty(cls, value: Any) -> Any:
        # Path("") is ".": an empty home would quietly run in the current directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("home is empty: give a directory")
        return value

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("project", "bigquery_billing_project")
    @classmethod
    def _project(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else _checked(identifiers.project_id, value, info)

    @field_validator("extra_regions")
    @classmethod
    def _extra_regions(cls, value: str, info: Any) -> str:
        for name in _split(value):
            _checked(identifiers.region_name, name, info)
        return value

    @field_validator("bucket", "pipeline_root")
    @classmethod
    def _bucket(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else _checked(identifiers.bucket_uri, value, info)

    @field_validator("service_account", "scheduler_service_account", "ci_service_account")
    @classmethod
    def _service_account(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else _checked(identifiers.service_account, value, info)

    @field_validator("submitter_group", "viewer_group")
    @classmethod
    def _group(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else _checked(identifiers.group_email, value, info)

    @field_validator("component_image", "serving_image")
    @classmethod
    def _image(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else _checked(identifiers.image, value, info)

    @field_validator("training_schedule", "scoring_schedule", "monitoring_schedule")
    @classmethod
    def _cron(cls, value: str, info: Any) -> str:
        return _checked(identifiers.cron, value, info)

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str, info: Any) -> str:
        return _checked(identifiers.time_zone, value, info)

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str, info: Any) -> str:
        return _checked(identifiers.experiment, value, info)

    @field_validator("endpoint_id")
    @classmethod
    def _endpoint_id(cls, value: str, info: Any) -> str:
        return _checked(identifiers.endpoint_id, value, info)

    @field_validator("bigquery_location")
    @classmethod
    def _bigquery_location(cls, value: str | None, info: Any) -> str | None:
        if value is None or value == info.data.get("region"):
            return value  # the region's, checked as the region
        return _checked(identifiers.bigquery_location, value, info)

    # Tables (bq:// dataset and table ids, duckdb:// paths) are parsed and checked by
    # components.warehouse.parse_uri, which submit.py calls before anything runs: the
    # warehouse sits above settings in the layers (pyproject.toml), so not from here.
    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("gs://"):
            raise ValueError(
                f"source {value!r} is in Cloud Storage, which no step reads: load it into "
                "BigQuery (bq load) and give its bq://PROJECT.DATASET.TABLE, or a local file"
            )
        return value

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        """Checks of one setting against another (each field's own range is on the field)."""
        _checked(identifiers.region, self.region, "region", frozenset(_split(self.extra_regions)))
        if self.high_risk_cutoff < self.medium_risk_cutoff:
            raise ValueError(
                f"high_risk_cutoff must be between medium_risk_cutoff "
                f"({self.medium_risk_cutoff}) and 1.0, got {self.high_risk_cutoff}"
            )
        if self.endpoint_min_replicas > self.endpoint_max_replicas:
            raise ValueError(
                "endpoint replicas must satisfy 1 <= endpoint_min_replicas <= "
                f"endpoint_max_replicas, got {self.endpoint_min_replicas} and "
                f"{self.endpoint_max_replicas}"
            )
        if self.batch_starting_replicas > self.batch_max_replicas:
            raise ValueError(
                "batch replicas must satisfy 1 <= batch_starting_replicas <= "
                f"batch_max_replicas, got {self.batch_starting_replicas} and "
                f"{self.batch_max_replicas}"
            )
        try:
            _ = self.label_map  # a malformed label fails at start-up, not at submission
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
        if self.high_risk_top_n and self.high_risk_top_share:
            raise ValueError(
                "set at most one of high_risk_top_n and high_risk_top_share, got "
                f"{self.high_risk_top_n} and {self.high_risk_top_share}"
            )
        if self.promotion_requires_significance and self.bootstrap_samples < 100:
            raise ValueError(
                "promotion_requires_significance needs bootstrap_samples of at least 100, got "
                f"{self.bootstrap_samples}"
            )
        if self.retrain_below_floor > self.retrain_windows:
            raise ValueError(
                f"retrain_below_floor must be between 0 and retrain_windows "
                f"({self.retrain_windows}), got {self.retrain_below_floor}"
            )
        return self

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`, validated as a new Settings is."""
        return type(self)(**(dict(self) | changes))

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def source_uri(self) -> str:
        if self.source:
            return self.source
        if self.project:
            return f"bq://{self.project}.churn.customers"
        return f"duckdb://{self.warehouse_path}?table=customers"

    @property
    def predictions_uri(self) -> str:
        if self.predictions:
            return self.predictions
        if self.project:
            return f"bq://{self.project}.churn.churn_predictions"
        return f"duckdb://{self.warehouse_path}?table=churn_predictions"

    @property
    def outcomes_uri(self) -> str:
        if self.outcomes:
            return self.outcomes
        if self.project:
            return f"bq://{self.project}.churn.churn_outcomes"
        return f"duckdb://{self.warehouse_path}?table=churn_outcomes"

    @property
    def registry_uri(self) -> str:
        if self.registry:
            return self.registry
        if self.project:
            return (
                f"vertex://projects/{self.project}/locations/{self.region}/models/churn"
                f"?artifacts={self.bucket_uri}/models"
            )
        return str(self.home / "registry")

    @property
    def bucket_uri(self) -> str:
        return (self.bucket or f"gs://{self._cloud_project}-churn").rstrip("/")

    @property
    def pipeline_root_uri(self) -> str:
        return self.pipeline_root or f"{self.bucket_uri}/pipeline-root"

    @property
    def pipeline_service_account(self) -> str:
        return (
            self.service_account or f"churn-pipelines@{self._cloud_project}.iam.gserviceaccount.com"
        )

    @property
    def scheduler_account(self) -> str:
        return (
            self.scheduler_service_account
            or f"churn-scheduler@{self._cloud_project}.iam.gserviceaccount.com"
        )

    @property
    def ci_account(self) -> str:
        return self.ci_service_account or f"churn-ci@{self._cloud_project}.iam.gserviceaccount.com"

    @property
    def component_image_uri(self) -> str:
        return self.component_image or self._artifact_registry_image("components")

    @property
    def serving_image_uri(self) -> str:
        return self.serving_image or self._artifact_registry_image("serving")

    @property
    def bigquery_job_project(self) -> str | None:
        return self.bigquery_billing_project or self.project

    def _artifact_registry_image(self, name: str) -> str:
        version = metadata.version("churn-pipelines")
        return f"{self.region}-docker.pkg.dev/{self._cloud_project}/churn/{name}:{version}"

    @property
    def template_registry_uri(self) -> str:
        return (
            self.template_registry
            or f"https://{self.region}-kfp.pkg.dev/{self._cloud_project}/churn-pipelines"
        ).rstrip("/")

    @property
    def vertex_endpoint(self) -> str:
        return self._endpoint(self.vertex_api_endpoint, f"{self.region}-aiplatform.googleapis.com")

    @property
    def scheduler_endpoint(self) -> str:
        return self._endpoint(self.scheduler_api_endpoint, "cloudscheduler.googleapis.com")

    @property
    def logging_endpoint(self) -> str:
        return self._endpoint(self.logging_api_endpoint, "logging.googleapis.com")

    @property
    def artifact_registry_endpoint(self) -> str:
        return self._endpoint(
            self.artifact_registry_api_endpoint, "artifactregistry.googleapis.com"
        )

    @property
    def cloud_build_endpoint(self) -> str:
        return self._endpoint(self.cloud_build_api_endpoint, "cloudbuild.googleapis.com")

    def _endpoint(self, own: str | None, default: str) -> str:
        return own or self.google_api_endpoint or default

    @property
    def label_map(self) -> dict[str, str]:
        labels = {}
        for item in filter(None, (part.strip() for part in self.labels.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise SettingsError(
                    f"label {item!r} in labels must be key=value with lower-case letters, "
                    "digits, - and _ (at most 63 each, the key starting with a letter)"
                )
            labels[key] = value
        return labels

    @property
    def _cloud_project(self) -> str:
        if not self.project:
            raise SettingsError("no Google Cloud project set: pass --project or set CHURN_PROJECT")
        return self.project

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def runs_on_vertex(self) -> bool:
        return self.project is not None


_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def _checked(check: Any, value: str, info: Any, *args: Any) -> str:
    """Run an identifiers check inside a validator: pydantic reports a ValueError as the
    setting's error, with its source added by `describe`."""
    name = info if isinstance(info, str) else info.field_name
    try:
        return check(value, *args, name=name)
    except SettingsError as exc:
        raise ValueError(str(exc)) from None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_ENV_ALIASES = {"project": "GOOGLE_CLOUD_PROJECT", "region": "GOOGLE_CLOUD_REGION"}
DEFAULT_ORIGIN = "the default"


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    flag_names: Mapping[str, str] | None = None,
    read_config: bool = True,
) -> Settings:
    """Build settings from defaults, the config file, the environment and `overrides`
    (CLI flags; `None` values are ignored), later sources winning. `flag_names` spells
    each override's flag as the CLI does (default: --name-with-dashes). Without
    `read_config`, no file is read: for a child process whose parent put the settings it
    needs in its environment (the parent's file may not be the one in its directory)."""
    environ = os.environ if environ is None else environ
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    shown: dict[str, Any] = {}  # an environment variable's text, as it was given

    config_path = _config_path(config_file, environ) if read_config else None
    if config_path is not None:
        where = f"config file {config_path}"
        for name, value in _read_config(config_path).items():
            if name not in fields:
                raise SettingsError(f"unknown setting {name!r} in {where}{_suggest(name)}")
            if isinstance(value, str) and not value and _optional(name):
                continue  # "" in the file: not set, as an empty variable is
            values[name], origins[name] = value, where

    for name in fields:
        for key in (f"CHURN_{name.upper()}", _ENV_ALIASES.get(name)):
            if key and key in environ:
                where = f"environment variable {key}"
                if environ[key] or not _optional(name):
                    values[name] = _from_text(name, environ[key], where)
                    origins[name], shown[name] = where, _Text(environ[key])
                break

    for name, value in (overrides or {}).items():
        flag = (flag_names or {}).get(name) or "--" + name.replace("_", "-")
        if name not in fields:
            raise SettingsError(f"unknown setting {name!r} (flag {flag}){_suggest(name)}")
        if isinstance(value, str) and not value.strip():
            # An empty flag would quietly mean "the default" (for --source: sample data).
            raise SettingsError(f"{flag} is empty: give a value or leave it out")
        if value is not None:
            values[name], origins[name] = value, f"flag {flag}"
            shown.pop(name, None)

    try:
        return Settings(**values)
    except SettingsError as exc:
        if not isinstance(exc.__cause__, ValidationError):
            raise
        raise SettingsError(describe(exc.__cause__, origins, values | shown)) from None


def _config_path(config_file: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The one config file in use: `config_file` (--config), else CHURN_CONFIG, else
    ./churn.toml when it exists. A named file must exist: a typo would otherwise run with
    every setting at its default."""
    named = config_file or environ.get("CHURN_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        return path
    default = Path("churn.toml")
    return default if default.is_file() else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path).toml_data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror}") from None


class _Text(str):
    """An environment variable's text, shown in an error as it was typed (CHURN_CV_FOLDS=1
    reads `cv_folds = 1`), quoted when that would hide something (empty, spaces around it,
    a line break)."""

    def __repr__(self) -> str:
        text = str(self)
        return text if text and text.isprintable() and text == text.strip() else repr(text)


def _optional(name: str) -> bool:
    return Settings.model_fields[name].default is None


def _from_text(name: str, text: str, where: str) -> Any:
    """An environment variable's text as the field's type: the one source whose values are
    all text, so the one whose numbers and booleans are parsed ("5" is 5, "true" is True);
    ranges and every other check follow with the other sources' values."""
    annotation = Settings.model_fields[name].annotation
    if annotation not in (int, float, bool):
        return text
    try:
        return TypeAdapter(annotation).validate_python(text, strict=False)
    except ValidationError:
        raise SettingsError(
            f"{name} = {_Text(text)!r} from {where} is not allowed: "
            f"must be {_allowed(name, Settings.model_fields[name])}"
        ) from None


def describe(
    exc: ValidationError, origins: Mapping[str, str], values: Mapping[str, Any] | None = None
) -> str:
    """The first refusal of `exc` as one line: the setting, its value, where the value came
    from (`origins`: field -> "config file X", "environment variable Y", "flag --z") and
    what is allowed."""
    error = exc.errors()[0]
    fields = Settings.model_fields
    name = str(error["loc"][0]) if error["loc"] else ""
    where = f" from {origins.get(name, DEFAULT_ORIGIN)}" if origins else ""
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r}{where}{_suggest(name)}"
    if name in fields and error["type"] != "value_error":
        value = (values or {}).get(name, error.get("input"))
        return f"{name} = {value!r}{where} is not allowed: must be {_allowed(name, fields[name])}"
    reason = _reason(error)
    if name or not origins:
        return f"{reason}{f' ({where.strip()})' if where else ''}"
    # A check of settings against each other: where each setting it names came from.
    named = [f for f in fields if re.search(rf"\b{f}\b", reason)]
    sources = ", ".join(f"{f} from {origins.get(f, DEFAULT_ORIGIN)}" for f in named)
    return f"{reason}{f' ({sources})' if sources else ''}"


def _reason(error: Mapping[str, Any]) -> str:
    context = error.get("ctx") or {}
    return str(context.get("error") or error["msg"])


def _allowed(name: str, field: Any) -> str:
    """What a field allows, from its declared type and bounds."""
    bounds = {}
    for item in field.metadata:
        for key in ("ge", "le", "gt", "lt", "pattern"):
            if getattr(item, key, None) is not None:
                bounds[key] = getattr(item, key)
    annotation = field.annotation
    text = {int: "a whole number", float: "a number", bool: "true or false"}.get(annotation)
    if getattr(annotation, "__origin__", None) is Literal:
        return "one of " + ", ".join(annotation.__args__)
    if name == "home":
        return "a directory path, not empty"
    if text is None:
        text = "text" if "None" not in str(annotation) else "text, or unset"
    if "ge" in bounds and "le" in bounds:
        return f"{text} from {bounds['ge']} to {bounds['le']}"
    if bounds.get("pattern") == _CPU:
        return 'CPUs as text, such as "4" or "500m"'
    if bounds.get("pattern") == _MEMORY:
        return 'memory as text, such as "16G" or "512Mi"'
    return text


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{hint} (every setting, and what it allows, is in components/settings.py)"


def component_image(settings: Settings) -> str:
    """The container image every pipeline step of `settings` runs in: `component_image`,
    else the project's image in its Artifact Registry, else `DEFAULT_COMPONENT_IMAGE` (a
    local run ignores it). Compiling sets it (`pipelines.compiling`), so the settings in
    use decide, not those when a step's module was imported."""
    if settings.component_image or settings.project:
        return settings.component_image_uri
    return DEFAULT_COMPONENT_IMAGE
