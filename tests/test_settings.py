"""Settings precedence: defaults < config file < environment < CLI flags."""

from pathlib import Path

import pytest

from components.errors import SettingsError
from components.settings import Settings, load_settings


def test_precedence(tmp_path: Path):
    config = tmp_path / "churn.toml"
    config.write_text('cv_folds = 3\npromotion_margin = 0.01\nregion = "europe-west4"\n')
    settings = load_settings(
        {"region": "us-east1", "seed": None},
        environ={"CHURN_PROMOTION_MARGIN": "0.02", "GOOGLE_CLOUD_PROJECT": "acme-corp"},
        config_file=config,
    )
    assert settings.cv_folds == 3  # file over default
    assert settings.promotion_margin == 0.02  # environment over file
    assert settings.region == "us-east1"  # flag over file
    assert settings.seed == 42  # unset flag leaves the default
    assert settings.project == "acme-corp" and settings.runs_on_vertex


def test_defaults_run_locally_on_the_embedded_warehouse(tmp_path: Path, no_config: Path):
    environ = {"CHURN_HOME": str(tmp_path)}
    settings = load_settings(environ=environ, config_file=no_config)
    assert not settings.runs_on_vertex
    assert settings.source_uri == f"duckdb://{tmp_path}/warehouse.duckdb?table=customers"
    assert settings.registry_uri == str(tmp_path / "registry")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CHURN_CV_FOLDS": "many"},
            "cv_folds = many from environment variable CHURN_CV_FOLDS is not allowed: "
            "must be a whole number from 2 to 20",
        ),
        (
            {"CHURN_TEST_SIZE": "0.9"},
            "test_size = 0.9 from environment variable CHURN_TEST_SIZE is not allowed: "
            "must be a number from 0.05 to 0.5",
        ),
        (
            {"CHURN_HIGH_RISK_CUTOFF": "0.1"},
            r"high_risk_cutoff must be between medium_risk_cutoff \(0.4\) and 1.0, got 0.1 "
            r"\(high_risk_cutoff from environment variable CHURN_HIGH_RISK_CUTOFF, "
            r"medium_risk_cutoff from the default\)",
        ),
        (
            {"CHURN_RESAMPLING": "adasyn"},
            "resampling = adasyn from environment variable CHURN_RESAMPLING is not allowed: "
            "must be one of auto, smote, class_weight",
        ),
        (
            {"CHURN_CALIBRATION": "platt"},
            "calibration = platt from environment variable CHURN_CALIBRATION is not allowed: "
            "must be one of auto, sigmoid, isotonic",
        ),
        (
            {"CHURN_HIGH_RISK_TOP_N": "-5"},
            "high_risk_top_n = -5 from environment variable CHURN_HIGH_RISK_TOP_N is not allowed",
        ),
        (
            {"CHURN_HIGH_RISK_TOP_N": "500", "CHURN_HIGH_RISK_TOP_SHARE": "0.1"},
            "set at most one of high_risk_top_n and high_risk_top_share",
        ),
        (
            {"CHURN_PROMOTION_REQUIRES_SIGNIFICANCE": "yes", "CHURN_BOOTSTRAP_SAMPLES": "0"},
            "promotion_requires_significance needs bootstrap_samples of at least 100",
        ),
    ],
)
def test_bad_values_name_the_setting(environ, message, no_config: Path):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ, config_file=no_config)


def test_unknown_config_keys_are_rejected(tmp_path: Path):
    config = tmp_path / "churn.toml"
    config.write_text("cv_fold = 3\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(environ={}, config_file=config)


def test_a_project_and_region_alone_configure_every_cloud_value(no_config: Path):
    flags = {"project": "acme-corp", "region": "europe-west4"}
    settings = load_settings(flags, environ={}, config_file=no_config)
    assert settings.source_uri == "bq://acme-corp.churn.customers"
    assert settings.predictions_uri == "bq://acme-corp.churn.churn_predictions"
    assert settings.registry_uri == (
        "vertex://projects/acme-corp/locations/europe-west4/models/churn"
        "?artifacts=gs://acme-corp-churn/models"
    )
    assert settings.pipeline_root_uri == "gs://acme-corp-churn/pipeline-root"
    assert settings.pipeline_service_account == "churn-pipelines@acme-corp.iam.gserviceaccount.com"
    assert settings.component_image_uri.startswith("europe-west4-docker.pkg.dev/acme-corp/churn/")
    assert settings.bigquery_job_project == "acme-corp"


def test_cloud_values_without_a_project_name_the_missing_setting(no_config: Path):
    settings = load_settings(environ={}, config_file=no_config)
    with pytest.raises(SettingsError, match="no Google Cloud project set"):
        _ = settings.pipeline_root_uri


@pytest.mark.parametrize(("text", "value"), [("true", True), ("0", False), ("yes", True)])
def test_boolean_settings_from_the_environment(text: str, value: bool, no_config: Path):
    environ = {"CHURN_BATCH_PREDICTION": text}
    settings = load_settings(environ=environ, config_file=no_config)
    assert settings.batch_prediction is value


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path):
    with pytest.raises(SettingsError, match=r"config file .*typo.toml does not exist"):
        load_settings(environ={}, config_file=tmp_path / "typo.toml")
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(environ={"CHURN_CONFIG": str(tmp_path / "typo.toml")})


def test_an_empty_flag_is_an_error_not_the_default(tmp_path: Path):
    with pytest.raises(SettingsError, match="--source is empty"):
        load_settings({"source": ""}, environ={}, config_file=None)


def test_a_negative_seed_is_refused(tmp_path: Path):
    with pytest.raises(
        SettingsError,
        match="seed = -1 from flag --seed is not allowed: must be a whole number from 0 to 4294",
    ):
        load_settings({"seed": -1}, environ={})


def test_vertex_settings_default_from_project_and_region(no_config: Path):
    settings = load_settings(
        {"project": "acme-corp", "region": "europe-west4"},
        environ={},
        config_file=no_config,
    )
    assert (
        settings.template_registry_uri
        == "https://europe-west4-kfp.pkg.dev/acme-corp/churn-pipelines"
    )
    assert settings.vertex_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert settings.scheduler_endpoint == "cloudscheduler.googleapis.com"
    assert settings.scheduler_account == "churn-scheduler@acme-corp.iam.gserviceaccount.com"
    assert (settings.training_schedule, settings.scoring_schedule) == ("0 2 * * 1", "0 8 * * *")
    assert settings.label_map == {"app": "churn-pipelines"}
    assert settings.enable_caching is False


def test_endpoint_overrides_and_labels_from_the_environment(no_config: Path):
    settings = load_settings(
        environ={
            "CHURN_PROJECT": "acme-corp",
            "CHURN_VERTEX_API_ENDPOINT": "http://127.0.0.1:9000",
            "CHURN_SCHEDULER_API_ENDPOINT": "scheduler.p.example",
            "CHURN_TEMPLATE_REGISTRY": "https://r-kfp.pkg.dev/other/templates/",
            "CHURN_LABELS": "app=churn-pipelines, team=retention",
        },
        config_file=no_config,
    )
    assert settings.vertex_endpoint == "http://127.0.0.1:9000"
    assert settings.scheduler_endpoint == "scheduler.p.example"
    assert settings.template_registry_uri == "https://r-kfp.pkg.dev/other/templates"
    assert settings.label_map == {"app": "churn-pipelines", "team": "retention"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CHURN_TIME_ZONE": "Mars/Olympus"},
            "time_zone 'Mars/Olympus' is not an IANA time zone .* CHURN_TIME_ZONE",
        ),
        ({"CHURN_LABELS": "Team=x"}, "label 'Team=x' in labels must be key=value"),
    ],
)
def test_bad_vertex_settings_name_the_setting(environ, message, no_config: Path):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ, config_file=no_config)


def test_the_component_image_comes_from_the_settings_given():
    from components.settings import DEFAULT_COMPONENT_IMAGE, component_image

    assert component_image(Settings()) == DEFAULT_COMPONENT_IMAGE
    image = component_image(Settings(project="acme-corp"))
    assert image == "us-central1-docker.pkg.dev/acme-corp/churn/components:0.1.0"
    pinned = "x.example/churn/components@sha256:" + "0" * 64
    assert component_image(Settings(project="acme-corp", component_image=pinned)) == pinned


def test_google_api_endpoint_is_every_apis_host_unless_the_api_has_its_own():
    one = Settings(
        project="proj-p", region="europe-west4", google_api_endpoint="http://127.0.0.1:9"
    )
    assert {
        one.vertex_endpoint,
        one.scheduler_endpoint,
        one.logging_endpoint,
        one.artifact_registry_endpoint,
        one.cloud_build_endpoint,
    } == {"http://127.0.0.1:9"}
    own = Settings(project="proj-p", region="europe-west4", google_api_endpoint="http://127.0.0.1:9",
                   vertex_api_endpoint="vertex.example")  # fmt: skip
    assert own.vertex_endpoint == "vertex.example"
    default = Settings(project="proj-p", region="europe-west4")
    assert default.vertex_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert default.cloud_build_endpoint == "cloudbuild.googleapis.com"


# --- issue 18: strict types, ranges, where each value came from -------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("cv_folds = 5.9", "cv_folds = 5.9 from config file {path} is not allowed: must be a"),
        ("cv_folds = true", "cv_folds = True from config file {path} is not allowed"),
        ("high_risk_top_n = 0.9", "high_risk_top_n = 0.9 from config file {path} is not allowed"),
        ("search_budget_seconds = -1", "search_budget_seconds = -1 from config file {path}"),
        ("score_workers = 1000000", "must be a whole number from 0 to 256"),
        ('home = ""', "home is empty: give a directory (from config file {path})"),
        ('region = "europe-west4/../x"', "region 'europe-west4/../x' is not a Vertex AI region"),
        ('project = "demo#x"', "project 'demo#x' is not a Google Cloud project id"),
        ("batch_starting_replicas = 0", "batch_starting_replicas = 0 from config file {path}"),
        ('source = "gs://b/customers.csv"', "in Cloud Storage, which no step reads"),
        ('training_cpu = "four"', "training_cpu = 'four' from config file {path}"),
        ('drift_threshold = inf', "drift_threshold = inf from config file {path}"),
        ("cv_fold = 3", "unknown setting 'cv_fold' in config file {path}; did you mean cv_folds?"),
        ("[cv_folds]\nx = 1", "cv_folds = {{'x': 1}} from config file {path}"),
    ],
)  # fmt: skip
def test_the_config_file_is_typed_strictly_and_every_refusal_names_the_file(
    tmp_path: Path, toml: str, message: str
):
    config = tmp_path / "churn.toml"
    config.write_text(toml + "\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={}, config_file=config)
    text = str(refused.value)
    assert message.format(path=config) in text and "\n" not in text


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHURN_CV_FOLDS": "1"}, "cv_folds = 1 from environment variable CHURN_CV_FOLDS"),
        ({"CHURN_CV_FOLDS": "5.9"}, "cv_folds = 5.9 from environment variable CHURN_CV_FOLDS"),
        ({"CHURN_SCORE_BATCH_ROWS": "0"}, "score_batch_rows = 0 from environment variable"),
        ({"CHURN_HOME": ""}, "home is empty: give a directory (from environment variable CHURN_"),
        ({"CHURN_HOME": "  "}, "home is empty"),
        ({"CHURN_TIME_ZONE": "localtime"}, "'localtime' is not an IANA time zone"),
        ({"CHURN_POLL_SECONDS": "nan"}, "poll_seconds = nan from environment variable"),
        ({"GOOGLE_CLOUD_PROJECT": "demo#x"}, "(from environment variable GOOGLE_CLOUD_PROJECT)"),
        ({"CHURN_EXPERIMENT": "Churn Runs"}, "is not a Vertex AI experiment name"),
        ({"CHURN_BATCH_PREDICTION": "maybe"}, "batch_prediction = maybe from environment"),
    ],
)  # fmt: skip
def test_environment_text_is_parsed_once_and_refusals_name_the_variable(
    environ, message, no_config
):
    with pytest.raises(SettingsError) as refused:
        load_settings(environ=environ, config_file=no_config)
    assert message in str(refused.value)


def test_text_from_the_environment_becomes_the_fields_type(no_config: Path):
    environ = {"CHURN_CV_FOLDS": "5", "CHURN_DRIFT_THRESHOLD": "0.3", "CHURN_HOME": "~/churn"}
    settings = load_settings(environ=environ, config_file=no_config)
    assert (settings.cv_folds, settings.drift_threshold) == (5, 0.3)
    assert settings.home == Path.home() / "churn"


def test_a_flag_refusal_names_the_flag(no_config: Path):
    with pytest.raises(SettingsError, match="score_workers = 1000000 from flag --workers"):
        load_settings(
            {"score_workers": 10**6},
            environ={},
            config_file=no_config,
            flag_names={"score_workers": "--workers"},
        )


def test_settings_built_in_code_read_no_environment(monkeypatch):
    monkeypatch.setenv("CHURN_CV_FOLDS", "3")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "acme-corp")
    assert Settings().cv_folds == 5 and Settings().project is None
    with pytest.raises(SettingsError, match="cv_folds = 1 is not allowed"):
        Settings(cv_folds=1)
    assert Settings().replace(cv_folds=3).cv_folds == 3
    with pytest.raises(SettingsError, match="cv_folds = 1 is not allowed"):
        Settings().replace(cv_folds=1)


def test_a_broken_churn_toml_does_not_matter_when_another_file_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "churn.toml").write_text("cv_folds = [not toml\n")
    given = tmp_path / "given.toml"
    given.write_text("cv_folds = 3\n")
    assert load_settings(environ={}, config_file=given).cv_folds == 3
    assert load_settings(environ={"CHURN_CONFIG": str(given)}).cv_folds == 3
    with pytest.raises(SettingsError, match=r"config file churn\.toml is not valid TOML"):
        load_settings(environ={})


def test_settings_that_cross_name_where_each_came_from(tmp_path: Path):
    config = tmp_path / "churn.toml"
    config.write_text("endpoint_min_replicas = 3\n")
    with pytest.raises(SettingsError) as refused:
        load_settings({"endpoint_max_replicas": 2}, environ={}, config_file=config)
    assert (
        f"(endpoint_min_replicas from config file {config}, endpoint_max_replicas from flag "
        "--endpoint-max-replicas)"
    ) in str(refused.value)


def test_a_region_newer_than_the_list_is_passed_with_extra_regions(no_config: Path):
    with pytest.raises(SettingsError, match="add it to extra_regions"):
        load_settings({"region": "europe-west15"}, environ={}, config_file=no_config)
    environ = {"CHURN_EXTRA_REGIONS": "europe-west15, asia-east9"}
    settings = load_settings({"region": "europe-west15"}, environ=environ, config_file=no_config)
    assert settings.region == settings.bigquery_location == "europe-west15"
    with pytest.raises(SettingsError, match="extra_regions 'europe/west15' is not a region name"):
        load_settings(environ={"CHURN_EXTRA_REGIONS": "europe/west15"}, config_file=no_config)
