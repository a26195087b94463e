"""Settings: one object, filled from defaults < config file < environment < CLI flags.

The config file is TOML (`churn.toml` in the working directory, or the path in
`CHURN_CONFIG`); environment variables are the field names upper-cased with a `CHURN_`
prefix (`CHURN_HOME`, `CHURN_PROMOTION_MARGIN`, ...). `GOOGLE_CLOUD_PROJECT` and
`GOOGLE_CLOUD_REGION` are honoured too, as the Google Cloud tools do.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from components.errors import SettingsError

DEFAULT_COMPONENT_IMAGE = "us-docker.pkg.dev/churn-pipelines/churn/components:0.1.0"


@dataclass(frozen=True)
class Settings:
    """Everything a run can be configured with. Field docs are the user-facing help."""

    home: Path = Path(".churn")
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
    batch_starting_replicas: int = 1
    batch_max_replicas: int = 10

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
    training_cpu: str = "4"
    """CPUs of the training step on Vertex (it chooses the machine; set when compiling)."""
    training_memory: str = "16G"
    scoring_cpu: str = "4"
    """CPUs of the scoring step on Vertex (one scoring worker each, by default)."""
    scoring_memory: str = "16G"
    poll_seconds: float = 10.0
    """How often `--wait` asks Vertex AI how a run is doing."""

    # --- Vertex AI endpoint: online serving of the champion (off by default) -------------
    deploy_endpoint: bool = False
    """After a training run promotes a new champion, deploy it to a Vertex AI endpoint and
    undeploy the previous one. An endpoint bills while it is up, used or not (README)."""
    endpoint_id: str = "churn"
    """Endpoint resource id: projects/<project>/locations/<region>/endpoints/<id>, created
    with that id if missing (found by resource name, never by display name)."""
    endpoint_machine_type: str = "n1-standard-2"
    endpoint_min_replicas: int = 1
    endpoint_max_replicas: int = 1
    seed: int = 42
    sample_rows: int = 21_096
    """Rows of generated sample data loaded into an empty embedded warehouse."""
    invalid_row_tolerance: float = 0.05
    """Largest share of invalid rows set aside before validation stops the run."""
    test_size: float = 0.2
    cv_folds: int = 5
    candidates_per_family: int = 2
    """Hyper-parameter settings tried per model family (randomised search)."""
    search_budget_seconds: float = 120.0
    """Wall-time budget of the candidate search, held at any size: a family that would
    overrun its share is cross-validated on a subsample, or skipped (logged, and in the
    report)."""
    promotion_metric: str = "roc_auc"
    promotion_margin: float = 0.002
    """A new model must beat the champion's test-set metric by at least this much."""
    promotion_floor: float = 0.70
    """... and reach at least this value, whatever the champion scores."""
    high_risk_cutoff: float = 0.7
    """Churn probability from which a customer is in the `high` risk tier."""
    medium_risk_cutoff: float = 0.4
    """... and from which `medium` (below it: `low`)."""
    drift_threshold: float = 0.2
    """Population stability index above which a feature counts as drifted."""
    score_batch_rows: int = 100_000
    """Rows read, scored and written per chunk by batch scoring (bounds memory)."""
    score_workers: int = 0
    """Processes scoring chunks side by side; 0: one per CPU the scoring step may use."""
    serving_max_request_bytes: int = 8 * 1024 * 1024
    """Largest prediction request body the model server reads (larger: HTTP 413)."""
    accept_library_mismatch: bool = False
    """Score and serve a model pickled with other versions of scikit-learn, numpy or joblib
    than the image runs (logging a warning) instead of refusing it. Off: a model is only
    unpickled by the libraries its record says pickled it (components/registry/model_files.py)."""

    # --- Calibration, capacity tiers and the promotion gate's uncertainty ----------------
    resampling: str = "auto"
    """How training handles the rare churn class: `smote` (synthetic churners inside each
    training fold), `class_weight` (balanced sample weights), `none`, or `auto`: the one
    with the best CV `promotion_metric` for the selected candidate."""
    calibration: str = "auto"
    """Map from the model's score to a probability that means what it says, fitted on
    out-of-fold predictions of the training split: `sigmoid`, `isotonic`, `auto` (the one
    with the lower CV Brier score) or `none` (raw scores, as resampling leaves them)."""
    high_risk_top_n: int = 0
    """Batch scoring: put exactly the N most likely churners of the day in the `high` tier
    (a team that can call 500 customers a day sets 500), whatever `high_risk_cutoff` says;
    0: tier by `high_risk_cutoff`. Online serving, one request at a time, uses the cut-off."""
    high_risk_top_share: float = 0.0
    """... or the top share of the day's scored customers (0.05: the top 5%); 0: off. At
    most one of `high_risk_top_n` and `high_risk_top_share` may be set."""
    promotion_requires_significance: bool = False
    """Promote only when the bootstrap 95% interval of the paired difference between the
    new model's and the champion's test metric lies above zero."""
    bootstrap_samples: int = 1000
    """Bootstrap resamples of the test rows behind the 95% intervals of the test metric
    and of the paired difference against the champion."""

    # --- issue 19: persistent holdout and promotion rule ---
    holdout_salt: str = "churn-holdout-1"
    """Salt of the persistent holdout: a customer is in the test set when SHA-256 of the
    salt and their id falls below `holdout_share`, so every weekly version is compared on
    the same customers, none of whom trained any version. Any text; "" turns the
    persistent holdout off (a random `test_size` split, seeded). Changing it rotates the
    holdout (README: "Rotating the holdout")."""
    holdout_share: float = 0.2
    """Share of customers in the persistent holdout, between 0.05 and 0.5. Changing it,
    like changing the salt, starts a new holdout."""
    promotion_rule: str = "non_inferiority"
    """How a new model replaces the champion, judged on the paired bootstrap 95% interval
    of the difference in `promotion_metric` (new minus champion) on the same test
    customers: `non_inferiority` (the interval lies above -`promotion_tolerance`),
    `superiority` (above zero) or `margin` (the point estimate beats the champion by
    `promotion_margin`, the rule before intervals). `promotion_requires_significance`
    makes `non_inferiority` `superiority`. Error rates: `python bench/bench_promotion.py`."""
    promotion_tolerance: float = 0.005
    """How much worse than the champion a new model may be, at 95% confidence, and still
    replace it under `non_inferiority`; between 0 and 0.05."""

    def __post_init__(self) -> None:
        if self.bigquery_location is None:
            # Filled here, not read through a property, so every reader of the field agrees.
            object.__setattr__(self, "bigquery_location", self.region)
        _check_range("invalid_row_tolerance", self.invalid_row_tolerance, 0.0, 0.5)
        _check_range("test_size", self.test_size, 0.05, 0.5)
        _check_range("promotion_floor", self.promotion_floor, 0.0, 1.0)
        _check_range("promotion_margin", self.promotion_margin, -1.0, 1.0)
        _check_range("medium_risk_cutoff", self.medium_risk_cutoff, 0.0, 1.0)
        _check_range("high_risk_cutoff", self.high_risk_cutoff, self.medium_risk_cutoff, 1.0)
        # A PSI is 0 for identical distributions and grows without bound; NaN flags nothing.
        _check_range("drift_threshold", self.drift_threshold, 0.0, math.inf)
        if not 0 <= self.seed < 2**32:
            raise SettingsError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.score_batch_rows < 1:
            raise SettingsError(f"score_batch_rows must be positive, got {self.score_batch_rows}")
        if self.score_workers < 0:
            raise SettingsError(
                f"score_workers must be 0 (automatic) or more, got {self.score_workers}"
            )
        if self.serving_max_request_bytes < 1024:
            raise SettingsError(
                "serving_max_request_bytes must be at least 1024, "
                f"got {self.serving_max_request_bytes}"
            )
        if not 2 <= self.cv_folds <= 20:
            raise SettingsError(f"cv_folds must be between 2 and 20, got {self.cv_folds}")
        if self.candidates_per_family < 1:
            raise SettingsError(
                f"candidates_per_family must be at least 1, got {self.candidates_per_family}"
            )
        if not 1 <= self.endpoint_min_replicas <= self.endpoint_max_replicas:
            raise SettingsError(
                "endpoint replicas must satisfy 1 <= endpoint_min_replicas <= "
                f"endpoint_max_replicas, got {self.endpoint_min_replicas} and "
                f"{self.endpoint_max_replicas}"
            )
        if self.sample_rows < 100:
            raise SettingsError(f"sample_rows must be at least 100, got {self.sample_rows}")
        _check_time_zone(self.time_zone)
        _ = self.label_map  # a malformed label fails at start-up, not at submission
        if self.promotion_metric not in ("roc_auc", "pr_auc", "f1"):
            raise SettingsError(
                "promotion_metric must be one of roc_auc, pr_auc, f1; "
                f"got {self.promotion_metric!r}"
            )

        _check_choice("resampling", self.resampling, ("auto", "smote", "class_weight", "none"))
        _check_choice("calibration", self.calibration, ("auto", "sigmoid", "isotonic", "none"))
        if self.high_risk_top_n < 0:
            raise SettingsError(
                f"high_risk_top_n must be 0 (off) or a number of customers, got "
                f"{self.high_risk_top_n}"
            )
        _check_range("high_risk_top_share", self.high_risk_top_share, 0.0, 1.0)
        if self.high_risk_top_n and self.high_risk_top_share:
            raise SettingsError(
                "set at most one of high_risk_top_n and high_risk_top_share, got "
                f"{self.high_risk_top_n} and {self.high_risk_top_share}"
            )
        if not 0 <= self.bootstrap_samples <= 100_000:
            raise SettingsError(
                "bootstrap_samples must be between 0 (no intervals) and 100000, got "
                f"{self.bootstrap_samples}"
            )
        if self.promotion_requires_significance and self.bootstrap_samples < 100:
            raise SettingsError(
                "promotion_requires_significance needs bootstrap_samples of at least 100, got "
                f"{self.bootstrap_samples}"
            )
        # --- issue 19: persistent holdout and promotion rule ---
        _check_range("holdout_share", self.holdout_share, 0.05, 0.5)
        _check_choice(
            "promotion_rule", self.promotion_rule, ("non_inferiority", "superiority", "margin")
        )
        _check_range("promotion_tolerance", self.promotion_tolerance, 0.0, 0.05)

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


def _check_time_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"time_zone must be an IANA time zone such as Europe/London, got {name!r}"
        ) from None


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


_ENV_ALIASES = {"project": "GOOGLE_CLOUD_PROJECT", "region": "GOOGLE_CLOUD_REGION"}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build settings from defaults, the config file, the environment and `overrides`
    (CLI flags; `None` values are ignored), later sources winning."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    named = config_file or environ.get("CHURN_CONFIG")
    config_path = Path(named or "churn.toml")
    if named and not config_path.is_file():
        # Only the default file may be absent: a named one that is not there is a typo
        # that would otherwise run with every setting at its default.
        raise SettingsError(f"config file {config_path} does not exist")
    if config_path.is_file():
        try:
            values.update(tomllib.loads(config_path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {config_path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise SettingsError(f"config file {config_path} cannot be read: {exc}") from None
    names = {f.name for f in fields(Settings)}
    for name in names:
        for key in (f"CHURN_{name.upper()}", _ENV_ALIASES.get(name)):
            if key and key in environ:
                values[name] = environ[key]
                break
    for name, value in (overrides or {}).items():
        if isinstance(value, str) and not value.strip():
            # An empty flag would quietly mean "the default" (for --source: sample data).
            flag = "--" + name.replace("_", "-")
            raise SettingsError(f"{flag} is empty: give a value or leave it out")
        if value is not None:
            values[name] = value
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    return Settings(**{name: _coerce(name, value) for name, value in values.items()})


def _coerce(name: str, value: Any) -> Any:
    """Turn text from the environment or TOML into the field's declared type."""
    declared = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if declared == "Path":
            return Path(value).expanduser()
        if declared == "int":
            return int(value)
        if declared == "float":
            return float(value)
        if declared == "bool":
            return _boolean(value)
        if declared == "str | None":
            return str(value) if value not in ("", None) else None
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name} must be {declared}, got {value!r}") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def component_image(settings: Settings) -> str:
    """The container image every pipeline step of `settings` runs in: `component_image`,
    else the project's image in its Artifact Registry, else `DEFAULT_COMPONENT_IMAGE` (a
    local run ignores it). Compiling sets it (`pipelines.compiling`), so the settings in
    use decide, not those when a step's module was imported."""
    if settings.component_image or settings.project:
        return settings.component_image_uri
    return DEFAULT_COMPONENT_IMAGE
