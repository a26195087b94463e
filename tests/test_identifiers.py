"""Cloud identifiers are checked against Google's documented formats before any request."""

import ast
import importlib.util
from pathlib import Path

import pytest

from components import identifiers
from components.errors import SettingsError


def test_the_region_list_is_the_vertex_sdks():
    # The SDK's own list of the regions Vertex AI serves ("global" runs no pipelines), read
    # from its source: importing google.cloud.aiplatform takes seconds.
    spec = importlib.util.find_spec("google.cloud.aiplatform")
    source = Path(spec.submodule_search_locations[0], "constants", "base.py").read_text()
    (node,) = [
        node.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "SUPPORTED_REGIONS"
    ]
    supported = ast.literal_eval(node.args[0])
    assert supported - {"global"} == identifiers.VERTEX_REGIONS


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (identifiers.project_id, ["acme-corp", "my-project-123", "example.com:my-proj"],
         ["acme", "demo#x", "Demo-project", "1project", "project-", "a" * 31, "", "p/../x"]),
        (identifiers.bucket_name, ["acme-churn", "a_b.c", "abc"],
         ["ab", "Acme", "-abc", "goog-x", "my-google-bucket", "192.168.5.4", "a..b", "a/b"]),
        (identifiers.service_account,
         ["churn-pipelines@acme-corp.iam.gserviceaccount.com",
          "123456789-compute@developer.gserviceaccount.com",
          "service-123@gcp-sa-aiplatform.iam.gserviceaccount.com"],
         ["churn@acme-corp.iam.gserviceaccount.com", "x@example.com",
          "a b@c.iam.gserviceaccount.com",
          "churn-pipelines@acme.iam.gserviceaccount.com"]),
        (identifiers.group_email, ["team@example.com", "data.team+x@corp.example.org"],
         ["team", "team@", "@example.com", "a b@example.com"]),
        (identifiers.experiment, ["churn-pipelines", "", "2026-run"],
         ["Churn", "churn_pipelines", "-churn", "a" * 129, "churn pipelines"]),
        (identifiers.image,
         ["us-docker.pkg.dev/p/churn/components:0.1.0", "python:3.11-slim",
          "localhost:5000/a/b@sha256:" + "a" * 64],
         ["US-docker.pkg.dev/p/Churn/x", "a b", "x:", "x@sha256:123", "x:tag with space"]),
        (identifiers.endpoint_id, ["churn", "churn-2", "123456789"],
         ["Churn", "churn-", "0123", "1234567890", "a" * 64, "churn_x", ""]),
        (identifiers.bigquery_location, ["US", "EU", "europe-west4"],
         ["us", "eu-west", "EUROPE-WEST4", "", "europe-west4/x"]),
        (identifiers.time_zone, ["UTC", "Europe/London", "America/Argentina/Buenos_Aires"],
         ["localtime", "posixrules", "Factory", "Mars/Olympus", "", "+01:00", "europe/london"]),
        (identifiers.cron,
         ["0 2 * * 1", "*/15 8-18 * * MON-FRI", "0 0 1 JAN,JUL *", "30 6 1-7 * 0"],
         ["banana", "61 25 * * *", "", "TZ=Europe/London 0 2 * * 1", "CRON_TZ=UTC 0 2 * * 1",
          "* * * * * *", "0 2 * *", "0 0 L * *", "0 0 1W * *", "0 0 * * 1#2", "0 0 ? * *",
          "0 0 * * mon"]),
    ],
)  # fmt: skip
def test_identifiers_in_googles_formats_pass_and_others_are_refused_in_one_line(check, good, bad):
    for value in good:
        assert check(value) == value
    for value in bad:
        with pytest.raises(SettingsError) as refused:
            check(value, name="the_setting")
        message = str(refused.value)
        assert "\n" not in message and message.startswith("the_setting"), message


def test_regions_are_vertex_regions_or_passed_as_new_ones():
    assert identifiers.region("europe-west4") == "europe-west4"
    with pytest.raises(SettingsError, match="add it to extra_regions"):
        identifiers.region("europe-west99")
    assert identifiers.region("europe-west99", frozenset({"europe-west99"})) == "europe-west99"
    for bad in ("europe-west4/../x", "R", "global", "US"):
        with pytest.raises(SettingsError, match="is not a Vertex AI region"):
            identifiers.region(bad)


def test_a_schedule_with_a_bad_cron_is_refused_before_anything_is_built():
    from components.settings import Settings
    from pipelines.schedules import scheduled_run

    with pytest.raises(SettingsError, match="the cron of schedule churn-training-weekly"):
        scheduled_run(Settings(), "churn-training-weekly", "TZ=UTC 0 2 * * 1", None, "uri")
