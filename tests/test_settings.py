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
        environ={"CHURN_PROMOTION_MARGIN": "0.02", "GOOGLE_CLOUD_PROJECT": "acme"},
        config_file=config,
    )
    assert settings.cv_folds == 3  # file over default
    assert settings.promotion_margin == 0.02  # environment over file
    assert settings.region == "us-east1"  # flag over file
    assert settings.seed == 42  # unset flag leaves the default
    assert settings.project == "acme" and settings.runs_on_vertex


def test_defaults_run_locally_on_the_embedded_warehouse(tmp_path: Path, no_config: Path):
    environ = {"CHURN_HOME": str(tmp_path)}
    settings = load_settings(environ=environ, config_file=no_config)
    assert not settings.runs_on_vertex
    assert settings.source_uri == f"duckdb://{tmp_path}/warehouse.duckdb?table=customers"
    assert settings.registry_uri == str(tmp_path / "registry")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHURN_CV_FOLDS": "many"}, "setting cv_folds must be int, got 'many'"),
        ({"CHURN_TEST_SIZE": "0.9"}, "test_size must be between 0.05 and 0.5, got 0.9"),
        ({"CHURN_HIGH_RISK_CUTOFF": "0.1"}, "high_risk_cutoff must be between 0.4 and 1.0"),
        ({"CHURN_RESAMPLING": "adasyn"}, "resampling must be one of auto, smote, class_weight"),
        ({"CHURN_CALIBRATION": "platt"}, "calibration must be one of auto, sigmoid, isotonic"),
        ({"CHURN_HIGH_RISK_TOP_N": "-5"}, "high_risk_top_n must be 0 .off. or a number"),
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
    flags = {"project": "acme", "region": "europe-west4"}
    settings = load_settings(flags, environ={}, config_file=no_config)
    assert settings.source_uri == "bq://acme.churn.customers"
    assert settings.predictions_uri == "bq://acme.churn.churn_predictions"
    assert settings.registry_uri == (
        "vertex://projects/acme/locations/europe-west4/models/churn"
        "?artifacts=gs://acme-churn/models"
    )
    assert settings.pipeline_root_uri == "gs://acme-churn/pipeline-root"
    assert settings.pipeline_service_account == "churn-pipelines@acme.iam.gserviceaccount.com"
    assert settings.component_image_uri.startswith("europe-west4-docker.pkg.dev/acme/churn/")
    assert settings.bigquery_job_project == "acme"


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
    with pytest.raises(SettingsError, match="seed must be between 0"):
        load_settings({"seed": -1}, environ={})


def test_vertex_settings_default_from_project_and_region(no_config: Path):
    settings = load_settings(
        {"project": "acme", "region": "europe-west4"},
        environ={},
        config_file=no_config,
    )
    assert settings.template_registry_uri == "https://europe-west4-kfp.pkg.dev/acme/churn-pipelines"
    assert settings.vertex_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert settings.scheduler_endpoint == "cloudscheduler.googleapis.com"
    assert settings.scheduler_account == "churn-scheduler@acme.iam.gserviceaccount.com"
    assert (settings.training_schedule, settings.scoring_schedule) == ("0 2 * * 1", "0 8 * * *")
    assert settings.label_map == {"app": "churn-pipelines"}
    assert settings.enable_caching is False


def test_endpoint_overrides_and_labels_from_the_environment(no_config: Path):
    settings = load_settings(
        environ={
            "CHURN_PROJECT": "acme",
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
        ({"CHURN_TIME_ZONE": "Mars/Olympus"}, "time_zone must be an IANA time zone"),
        ({"CHURN_LABELS": "Team=x"}, "label 'Team=x' in labels must be key=value"),
    ],
)
def test_bad_vertex_settings_name_the_setting(environ, message, no_config: Path):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ, config_file=no_config)


def test_the_component_image_comes_from_the_settings_given():
    from components.settings import DEFAULT_COMPONENT_IMAGE, component_image

    assert component_image(Settings()) == DEFAULT_COMPONENT_IMAGE
    image = component_image(Settings(project="acme"))
    assert image == "us-central1-docker.pkg.dev/acme/churn/components:0.1.0"
    pinned = "x.example/churn/components@sha256:" + "0" * 64
    assert component_image(Settings(project="acme", component_image=pinned)) == pinned


def test_google_api_endpoint_is_every_apis_host_unless_the_api_has_its_own():
    one = Settings(project="p", region="europe-west4", google_api_endpoint="http://127.0.0.1:9")
    assert {
        one.vertex_endpoint,
        one.scheduler_endpoint,
        one.logging_endpoint,
        one.artifact_registry_endpoint,
        one.cloud_build_endpoint,
    } == {"http://127.0.0.1:9"}
    own = Settings(project="p", region="europe-west4", google_api_endpoint="http://127.0.0.1:9",
                   vertex_api_endpoint="vertex.example")  # fmt: skip
    assert own.vertex_endpoint == "vertex.example"
    default = Settings(project="p", region="europe-west4")
    assert default.vertex_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert default.cloud_build_endpoint == "cloudbuild.googleapis.com"
