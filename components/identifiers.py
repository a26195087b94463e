"""Google Cloud identifiers checked against Google's documented formats, before any request.

Each check returns the value it was given, or raises `SettingsError` with one line saying what
the value must look like. A malformed identifier would otherwise build a malformed URL
(`--project 'demo#x'`), travel to an API that refuses it after minutes of work, or (a cron
string, a time zone) sit in a schedule that never starts a run. BigQuery dataset and table
ids, and `bq://` URIs, are checked by the warehouse, which parses them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import zoneinfo
from datetime import datetime

from components.errors import SettingsError

# Project ids: "6 to 30 lowercase ASCII letters, digits, or hyphens, must start with a letter,
# no trailing hyphen" (Resource Manager, projects#resource:-project; `gcloud projects
# create`). Older projects may carry a domain prefix ("example.com:my-project").
_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")

# The regions Vertex AI serves: google-cloud-aiplatform's constants.SUPPORTED_REGIONS
# (tests/test_identifiers.py keeps the two equal) without "global", where pipelines,
# batch prediction and the Model Registry do not run. A region newer than this list is
# passed with the `extra_regions` setting.
VERTEX_REGIONS = frozenset(
    {
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-east7",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
        "us-west8",
    }
)
# Compute Engine region names ("europe-west4", "us-central1"): what a new region looks like.
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")

# Bucket names (Cloud Storage, buckets#naming): lowercase letters, digits, -, _ and .;
# start and end with a letter or digit; 3-63 characters, or up to 222 with dots, each
# dot-separated part at most 63; not an IP address; not starting with "goog"; not
# containing "google" (nor close misspellings, which only Google can judge).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]")

# Service accounts (IAM, service-accounts#names): a user-managed account's id is 6-30
# lowercase letters, digits and hyphens, starting with a letter, at
# PROJECT.iam.gserviceaccount.com; Google-managed ones (PROJECT_NUMBER-compute@developer…,
# service-PROJECT_NUMBER@gcp-sa-….iam…, PROJECT@appspot…) end in gserviceaccount.com too.
_USER_ACCOUNT = re.compile(
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]@(?P<project>[^@]+)\.iam\.gserviceaccount\.com"
)
_GOOGLE_ACCOUNT = re.compile(
    r"[a-z0-9][a-z0-9-]{0,62}@(?:[a-z0-9][a-z0-9-]{0,62}\.)+gserviceaccount\.com"
)
# A Google group: an e-mail address (IAM principal `group:EMAIL`).
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+'-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)

# Vertex AI experiments are metadata contexts; their ids match [a-z0-9][a-z0-9-]{0,127}
# (Vertex AI, experiments: "lowercase letters, digits and hyphens, at most 128").
_EXPERIMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")

# Endpoint ids (aiplatform_v1 CreateEndpointRequest.endpoint_id): starting with a letter,
# up to 63 of [a-z0-9-] ending in a letter or digit; starting with a digit, up to 9 digits
# with no leading zero.
_ENDPOINT_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?|[1-9][0-9]{0,8}")

# BigQuery locations (BigQuery, locations): the multi-regions US and EU, or a region name.
_BIGQUERY_MULTI_REGIONS = frozenset({"US", "EU"})

# Image references, after the distribution/reference grammar Docker and Artifact Registry
# use: [host[:port]/]path[:tag][@digest]; path components lowercase.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:{_HOST}/)?{_PATH}(?:/{_PATH})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)

# Cloud Scheduler's unix-cron (scheduler/docs/configuring/cron-job-schedules): five fields,
# minute hour day-of-month month day-of-week, with numbers, names (JAN, MON), *, ranges,
# lists and steps; no `L` (said so there), nor Quartz's `W`, `#` or `?`. Vertex Schedules
# take the same five fields after the `TZ=` prefix the project adds from `time_zone`.
_CRON_FIELD = re.compile(r"[0-9A-Z*,/-]+")
_MONTHS, _DAYS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC", "SUN MON TUE WED THU FRI SAT"
_CRON_NAMES = {
    "month": frozenset(_MONTHS.split()),
    "day of the week": frozenset(_DAYS.split()),
}
_CRON_FIELDS = ("minute", "hour", "day of the month", "month", "day of the week")

# In the tz database but not time zones: the machine's own zone (a different one on each
# machine) and the files that configure it.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def project_id(value: str, name: str = "project") -> str:
    if not _PROJECT.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not a Google Cloud project id: 6 to 30 lowercase letters, "
            "digits or hyphens, starting with a letter and not ending with a hyphen"
        )
    return value


def region(value: str, extra: frozenset[str] = frozenset(), name: str = "region") -> str:
    if value in VERTEX_REGIONS or value in extra:
        return value
    hint = (
        "; a region newer than this list: add it to extra_regions"
        if _REGION.fullmatch(value)
        else ""
    )
    raise SettingsError(
        f"{name} {value!r} is not a Vertex AI region such as us-central1 or europe-west4{hint}"
    )


def region_name(value: str, name: str = "extra_regions") -> str:
    """A region not (yet) in VERTEX_REGIONS: it must still look like one."""
    if not _REGION.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not a region name such as europe-west4 (letters-letters-digits)"
        )
    return value


def bucket_uri(value: str, name: str = "bucket") -> str:
    """gs://BUCKET, with an optional path after it."""
    scheme, _, rest = value.partition("://")
    bucket = rest.split("/", 1)[0]
    if scheme != "gs" or not bucket:
        raise SettingsError(f"{name} {value!r} must be a gs://BUCKET URI")
    bucket_name(bucket, name)
    return value


def bucket_name(value: str, name: str = "bucket") -> str:
    parts = value.split(".")
    ok = (
        _BUCKET.fullmatch(value) is not None
        and (len(value) <= 63 or len(parts) > 1)
        and all(0 < len(part) <= 63 for part in parts)
        and not value.startswith("goog")
        and "google" not in value
        and not _is_ip_address(value)
    )
    if not ok:
        raise SettingsError(
            f"{name}: {value!r} is not a Cloud Storage bucket name: 3 to 63 lowercase letters, "
            "digits, -, _ or . (up to 222 with dots), starting and ending with a letter or "
            "digit, not an IP address, not starting with goog or containing google"
        )
    return value


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def service_account(value: str, name: str = "service_account") -> str:
    domain = value.rpartition("@")[2]
    user_managed = domain.endswith(".iam.gserviceaccount.com") and not domain.startswith("gcp-sa-")
    if user_managed:
        user = _USER_ACCOUNT.fullmatch(value)
        if user and _PROJECT.fullmatch(user["project"]):
            return value
    elif _GOOGLE_ACCOUNT.fullmatch(value):
        return value
    raise SettingsError(
        f"{name} {value!r} is not a service account e-mail such as "
        "churn-pipelines@PROJECT.iam.gserviceaccount.com (account id of 6 to 30 lowercase "
        "letters, digits or hyphens, starting with a letter)"
    )


def group_email(value: str, name: str = "group") -> str:
    if not _EMAIL.fullmatch(value) or len(value) > 254:
        raise SettingsError(
            f"{name} {value!r} is not a group e-mail address such as team@example.com"
        )
    return value


def experiment(value: str, name: str = "experiment") -> str:
    """A Vertex AI experiment name; "" means none."""
    if value and not _EXPERIMENT.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not a Vertex AI experiment name: 1 to 128 lowercase letters, "
            'digits or hyphens, starting with a letter or digit ("" for none)'
        )
    return value


def endpoint_id(value: str, name: str = "endpoint_id") -> str:
    if not _ENDPOINT_ID.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not a Vertex AI endpoint id: a lowercase letter then up to 62 "
            "lowercase letters, digits or hyphens (not ending with one), or up to 9 digits "
            "without a leading zero"
        )
    return value


def bigquery_location(value: str, name: str = "bigquery_location") -> str:
    if value not in _BIGQUERY_MULTI_REGIONS and not _REGION.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not a BigQuery location: US, EU or a region such as europe-west4"
        )
    return value


def image(value: str, name: str = "image") -> str:
    if len(value) > 1024 or not _IMAGE.fullmatch(value):
        raise SettingsError(
            f"{name} {value!r} is not an image reference such as "
            "REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG (or @sha256:DIGEST)"
        )
    return value


def cron(value: str, name: str = "schedule") -> str:
    """A unix-cron string of exactly five fields, in the time zone set apart (`time_zone`)."""
    from cronsim import CronSim, CronSimError

    fields = value.split()
    if fields and fields[0].upper().startswith(("TZ=", "CRON_TZ=")):
        raise SettingsError(
            f"{name} {value!r} carries its own time zone: give the five cron fields only and "
            "set time_zone (schedules run in it)"
        )
    if len(fields) != 5:
        raise SettingsError(
            f"{name} {value!r} must be five cron fields (minute hour day-of-month month "
            f"day-of-week), such as '0 2 * * 1'; got {len(fields)}"
        )
    for field, what in zip(fields, _CRON_FIELDS, strict=True):
        names = _CRON_NAMES.get(what, frozenset())
        if not _CRON_FIELD.fullmatch(field) or any(
            word not in names for word in re.findall(r"[A-Za-z]+", field)
        ):
            raise SettingsError(
                f"{name} {value!r}: {what} {field!r} is not unix-cron (digits, *, ranges, lists "
                "and /steps; JAN-DEC and SUN-SAT in upper case; no L, W, # or ?)"
            )
    try:
        CronSim(" ".join(fields), datetime(2026, 1, 1))
    except CronSimError as exc:
        raise SettingsError(
            f"{name} {value!r} is not a valid cron schedule: {str(exc).lower()} (minute 0-59, "
            "hour 0-23, day of the month 1-31, month 1-12 or JAN-DEC, day of the week 0-7 or "
            "SUN-SAT)"
        ) from None
    return value


def time_zone(value: str, name: str = "time_zone") -> str:
    """An IANA tz database name (Cloud Scheduler's `timeZone`, Vertex's `TZ=`)."""
    if value in _NOT_ZONES or value not in _time_zones():
        raise SettingsError(
            f"{name} {value!r} is not an IANA time zone such as Europe/London or UTC"
        )
    return value


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())  # reads the tz database's folder
