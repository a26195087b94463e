"""Settings precedence: defaults < config file < environment < CLI flags."""

from pathlib import Path

import pytest

from components.errors import SettingsError
from components.settings import load_settings


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


def test_defaults_run_locally_on_the_embedded_warehouse(tmp_path: Path):
    environ = {"CHURN_HOME": str(tmp_path)}
    settings = load_settings(environ=environ, config_file=_empty_config(tmp_path))
    assert not settings.runs_on_vertex
    assert settings.source_uri == f"duckdb://{tmp_path}/warehouse.duckdb?table=customers"
    assert settings.registry_uri == str(tmp_path / "registry")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHURN_CV_FOLDS": "many"}, "setting cv_folds must be int, got 'many'"),
        ({"CHURN_TEST_SIZE": "0.9"}, "test_size must be between 0.05 and 0.5, got 0.9"),
        ({"CHURN_HIGH_RISK_CUTOFF": "0.1"}, "high_risk_cutoff must be between 0.4 and 1.0"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ, config_file=_empty_config(tmp_path))


def test_unknown_config_keys_are_rejected(tmp_path: Path):
    config = tmp_path / "churn.toml"
    config.write_text("cv_fold = 3\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(environ={}, config_file=config)


def test_a_project_and_region_alone_configure_every_cloud_value(tmp_path: Path):
    flags = {"project": "acme", "region": "europe-west4"}
    settings = load_settings(flags, environ={}, config_file=_empty_config(tmp_path))
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


def test_cloud_values_without_a_project_name_the_missing_setting(tmp_path: Path):
    settings = load_settings(environ={}, config_file=_empty_config(tmp_path))
    with pytest.raises(SettingsError, match="no Google Cloud project set"):
        _ = settings.pipeline_root_uri


@pytest.mark.parametrize(("text", "value"), [("true", True), ("0", False), ("yes", True)])
def test_boolean_settings_from_the_environment(tmp_path: Path, text: str, value: bool):
    environ = {"CHURN_BATCH_PREDICTION": text}
    settings = load_settings(environ=environ, config_file=_empty_config(tmp_path))
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


def _empty_config(directory: Path) -> Path:
    """A config file that sets nothing, so a churn.toml in the working directory can't."""
    path = directory / "empty.toml"
    path.touch()
    return path
