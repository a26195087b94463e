"""Hostile configuration and cloud identifiers: config files, environment variables and
flags a careless or hostile user writes, and identifiers Google would refuse. Every outcome
is either settings holding exactly what was given (nothing rounded, nothing read as
something else) or one line naming the setting and where its value came from; an
identifier is either in Google's documented format or refused in one line."""

import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hostile import TRICKY_TEXT, assert_one_clear_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components import identifiers
from components.errors import SettingsError
from components.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
FIELDS = sorted(Settings.model_fields)
DECLARED = {name: field.annotation for name, field in Settings.model_fields.items()}

# Values as a TOML file holds them: every TOML scalar type, and what a typo makes of them.
toml_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(TRICKY_TEXT),
    st.text(max_size=20),
    st.sampled_from(["0 2 * * 1", "europe-west4", "acme-corp", "UTC", "gs://acme-churn", ""]),
    st.lists(st.integers(min_value=0, max_value=9), max_size=2),
)
# What an environment variable holds: text, often a number or a word in disguise.
env_text = st.one_of(
    st.sampled_from(TRICKY_TEXT),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=20),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats().map(repr),
    st.sampled_from(["true", "false", "yes", "off", "1", "0", "5", "5.9", "1e3", "0x10", "1_0"]),
)  # fmt: skip


def _toml(value) -> str:
    """A TOML literal of `value` (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return str(value)


def _kept(name: str, given, settings: Settings) -> bool:
    """The setting holds exactly what was given: same value, never a rounded or re-read one."""
    value, declared = getattr(settings, name), DECLARED[name]
    if declared is int:
        return type(given) is int and value == given
    if declared is float:
        return type(given) in (int, float) and value == given
    if declared is bool:
        return type(given) is bool and value is given
    if name == "home":
        return isinstance(given, str) and value == Path(given).expanduser()
    if given == "" and value is None:
        return True  # "" leaves an optional setting unset, as an empty variable does
    return isinstance(given, str) and value == given


# A value that may well be fine: the default, or one a user would plausibly write.
_PLAUSIBLE = {
    "home": "~/churn",
    "project": "acme-corp",
    "region": "europe-west4",
    "bucket": "gs://acme-churn",
    "experiment": "",
    "time_zone": "Europe/London",
    "training_schedule": "30 1 * * SUN",
    "labels": "app=churn,team=retention",
}


def _plausible(name: str):
    default = Settings.model_fields[name].default
    value = _PLAUSIBLE.get(name, default)
    return str(value) if isinstance(value, Path) else value


def _setting(name: str) -> st.SearchStrategy:
    plausible = _plausible(name)
    return st.tuples(st.just(name), toml_values if plausible is None else st.one_of(
        st.just(plausible), toml_values
    ))  # fmt: skip


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    document=st.lists(
        st.sampled_from(FIELDS).flatmap(_setting), min_size=1, max_size=3, unique_by=lambda t: t[0]
    ).map(dict),
    unknown=st.sampled_from([None, None, None, "cv_fold", "Home", "score-workers", "project_id"]),
)
def test_any_config_file_is_kept_exactly_or_refused_naming_the_setting_and_file(
    tmp_path_factory, document, unknown, reliability
):
    path = tmp_path_factory.mktemp("config") / "churn.toml"
    lines = [f"{name} = {_toml(value)}" for name, value in document.items()]
    if unknown:
        lines.append(f"{unknown} = 1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    description = "; ".join(lines)[:200]
    try:
        loaded = load_settings(environ={}, config_file=path)
    except SettingsError as error:
        assert_one_clear_line(error, str(path))
        assert_one_clear_line(error, *(unknown or "-", *document))
        reliability.record("input", "configuration", description, outcome="refused")
        return
    assert unknown is None, description
    for name, value in document.items():
        assert _kept(name, value, loaded), (name, value, getattr(loaded, name))
    reliability.record("input", "configuration", description, outcome="handled")


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    variables=st.dictionaries(st.sampled_from(FIELDS), env_text, min_size=1, max_size=3),
    alias=st.booleans(),
)
def test_any_environment_is_parsed_to_the_fields_type_or_refused_naming_the_variable(
    variables, alias, reliability
):
    environ = {f"CHURN_{name.upper()}": text for name, text in variables.items()}
    if alias and "project" in variables:
        environ["GOOGLE_CLOUD_PROJECT"] = environ.pop("CHURN_PROJECT")
    description = " ".join(f"{k}={v!r}" for k, v in environ.items())[:200]
    try:
        loaded = load_settings(environ=environ, config_file=None)
    except SettingsError as error:
        assert_one_clear_line(error, *environ)
        reliability.record("input", "configuration", description, outcome="refused")
        return
    for name, text in variables.items():
        value, declared = getattr(loaded, name), DECLARED[name]
        if declared in (int, float, bool):
            assert type(value) is declared or (declared is float and type(value) is int)
            if declared is not bool:
                # Parsed from the text, never rounded: the number the text says.
                assert float(value) == float(text.strip().replace("_", "")), (text, value)
        elif name == "home":
            assert text.strip() and value == Path(text).expanduser()
        else:
            assert value == (text or None if Settings.model_fields[name].default is None else text)
    # Whatever was accepted is a valid Settings again (no check skipped on the way in).
    assert Settings(**dict(loaded)) == loaded
    reliability.record("input", "configuration", description, outcome="handled")


# --- identifiers -----------------------------------------------------------------------

_VALID = {
    "project": st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True),
    "bucket": st.from_regex(r"[a-z0-9][a-z0-9_-]{1,40}[a-z0-9]", fullmatch=True),
    "cron": st.sampled_from(["0 2 * * 1", "*/5 * * * *", "0 8 1-7 JAN,JUL MON-FRI"]),
    "time_zone": st.sampled_from(["UTC", "Europe/London", "Asia/Kolkata", "America/New_York"]),
    "region": st.sampled_from(sorted(identifiers.VERTEX_REGIONS)),
    "experiment": st.from_regex(r"[a-z0-9][a-z0-9-]{0,40}", fullmatch=True),
    "service_account": st.from_regex(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@acme-corp\.iam\.gserviceaccount\.com", fullmatch=True
    ),
    "image": st.sampled_from(
        ["us-docker.pkg.dev/acme-corp/churn/components:0.1.0", "python:3.11-slim"]
    ),
    "endpoint_id": st.one_of(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
        st.integers(1, 999_999_999).map(str),
    ),
    "bigquery_location": st.sampled_from(["US", "EU", "europe-west4", "asia-northeast1"]),
}
_HOSTILE_PARTS = ["#", "/", "..", " ", "\t", "`", "'", "?", "%2F", "TZ=UTC ", "\n", "\u00a0",
                  "A", "_", "-", "61", "L", "google", "localtime", "*", "@", ":", "é"]  # fmt: skip


@st.composite
def identifier_cases(draw: st.DrawFn) -> tuple[str, str]:
    """A kind of identifier and a value: a valid one, one with a hostile part put in, cut
    or doubled, or any text."""
    kind = draw(st.sampled_from(sorted(_VALID)))
    value = draw(_VALID[kind])
    how = draw(st.sampled_from(["valid", "insert", "cut", "double", "any"]))
    if how == "insert":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(_HOSTILE_PARTS)) + value[at:]
    elif how == "cut":
        value = value[: draw(st.integers(0, len(value)))]
    elif how == "double":
        value = value + value
    elif how == "any":
        value = draw(st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=40)))
    return kind, value


_CHECKS = {
    "project": identifiers.project_id,
    "bucket": identifiers.bucket_name,
    "cron": identifiers.cron,
    "time_zone": identifiers.time_zone,
    "region": identifiers.region,
    "experiment": identifiers.experiment,
    "service_account": identifiers.service_account,
    "image": identifiers.image,
    "endpoint_id": identifiers.endpoint_id,
    "bigquery_location": identifiers.bigquery_location,
}
_URL_SAFE = re.compile(r"[A-Za-z0-9._:@/+-]*")


def _well_formed(kind: str, value: str) -> bool:
    """What Google's formats promise, restated as properties: fits in a URL without
    escaping, within the documented lengths, and (cron, time zone) usable as Google reads it."""
    if kind == "cron":
        fields = value.split()
        return (
            len(fields) == 5
            and not value.upper().startswith(("TZ=", "CRON_TZ="))
            and bool(next(CronSim(value, datetime(2026, 1, 1))))
        )
    if kind == "time_zone":
        ZoneInfo(value)  # raises for a name the tz database does not have
        return value not in ("localtime", "posixrules", "Factory")
    if not _URL_SAFE.fullmatch(value) or ".." in value or value != value.strip():
        return False
    if kind == "project":
        return 6 <= len(value.rpartition(":")[2]) <= 30 and value.islower()
    if kind == "bucket":
        return 3 <= len(value) <= 222 and "google" not in value and "/" not in value
    if kind == "region":
        return value in identifiers.VERTEX_REGIONS
    if kind == "experiment":
        return len(value) <= 128 and value == value.lower() and "/" not in value
    if kind == "service_account":
        return value.count("@") == 1 and value.endswith(".gserviceaccount.com")
    if kind == "endpoint_id":
        return len(value) <= (9 if value[:1].isdigit() else 63) and "/" not in value
    if kind == "bigquery_location":
        return value in ("US", "EU") or (value.count("-") == 1 and value.islower())
    return " " not in value  # image


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=identifier_cases())
def test_an_identifier_is_in_googles_format_or_refused_in_one_line(case, reliability):
    kind, value = case
    description = f"{kind} {value!r}"[:200]
    try:
        checked = _CHECKS[kind](value, name=kind)
    except SettingsError as error:
        message = assert_one_clear_line(error, kind)
        assert message.startswith(kind), message
        reliability.record("input", "identifiers", description, outcome="refused")
        return
    assert checked == value and _well_formed(kind, value), description
    reliability.record("input", "identifiers", description, outcome="handled")


# --- a handful through the real CLI ------------------------------------------------------


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("config", "environ", "argv", "where"),
    [
        ("cv_folds = 5.9\n", {}, ["train", "--dry-run"], "churn.toml"),
        ("", {"CHURN_HOME": ""}, ["score", "--dry-run"], "CHURN_HOME"),
        ("", {}, ["train", "--dry-run", "--project", "demo#x"], "--project"),
        ("", {"CHURN_SCORING_SCHEDULE": "TZ=UTC 0 8 * * *"}, ["schedule", "--dry-run",
         "--project", "acme-corp"], "CHURN_SCORING_SCHEDULE"),
    ],
)  # fmt: skip
def test_the_cli_refuses_hostile_configuration_in_one_line(
    tmp_path, config, environ, argv, where, reliability
):
    (tmp_path / "churn.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "GOOGLE_"))}
    env |= environ | {"HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "submit.py"), *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    description = f"{config.strip()} {environ} submit.py {' '.join(argv)}"
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and where in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["churn.toml"]  # nothing made
    reliability.record("input", "configuration", description, outcome="refused")
