"""Hostile requests to the real model server on 127.0.0.1: whatever the body, content type
or instances, the answer is 200 with one entry per instance (scores, or why it has none) or
a 400/413/415 that says what is wrong; never a 500, and the server keeps answering."""

import json
import urllib.error
from typing import Any

import pytest
from hostile import hostile_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving import (  # noqa: F401 (module fixtures: the model and its server)
    SETTINGS,
    _instances,
    _post_bytes,
    model_dir,
    registry,
    server,
)

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.serving.server import ModelServer

pytestmark = pytest.mark.slow  # as test_serving: each module starts a model server

GOOD = _instances(generate_customers(20, seed=12, messy=False))
FIELDS = [column.name for column in TELCO_CHURN.required(with_label=False)]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()  # NaN and Infinity too: Python's json module writes and reads them
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def hostile_instances(draw: st.DrawFn) -> Any:
    """A customer record with some fields hostile, dropped, re-spelt or added, or not a
    record at all."""
    instance: dict[str, Any] = dict(draw(st.sampled_from(GOOD)))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        change = draw(st.sampled_from(["value", "json", "drop", "case"]))
        if change == "value":
            instance[field] = draw(hostile_values)
        elif change == "json":
            instance[field] = draw(json_values)
        elif change == "drop":
            del instance[field]
        else:
            instance[field.swapcase()] = instance.pop(field)
    if draw(st.booleans()):
        instance[draw(st.text(max_size=8))] = draw(json_values)
    return draw(st.one_of(st.just(instance), st.just(instance), json_values))


def _encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def _nested(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"


def _over_the_limit(size: int) -> bytes:
    return b'{"instances": ["' + b"x" * size + b'"]}'


LIMIT = SETTINGS.serving_max_request_bytes
TRUNCATED = _encode({"instances": GOOD[:3]})
bodies = st.one_of(
    st.lists(hostile_instances(), min_size=1, max_size=6).map(lambda i: _encode({"instances": i})),
    st.lists(hostile_instances(), max_size=3).map(lambda i: _encode({"instances": i, "x": 1})),
    json_values.map(_encode),
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.integers(1, 200_000).map(_nested),
    st.integers(0, len(TRUNCATED) - 1).map(lambda cut: TRUNCATED[:cut]),
    st.integers(LIMIT + 1, 2 * LIMIT).map(_over_the_limit),
)
# JSON half the time, so that most bodies reach the parser.
content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
        ]
    ),
)


@pytest.mark.hostile
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies, content_type=content_types)
def test_any_request_gets_an_answer_for_each_instance_or_a_client_error(
    server: ModelServer,  # noqa: F811 (the imported fixture)
    body: bytes,
    content_type: str,
    reliability,
):
    description = f"{len(body)}-byte body as {content_type}: {body[:60]!r}"
    try:
        status, answer = _post_bytes(server.predict_url, body, content_type)
    except (urllib.error.URLError, ConnectionError) as error:
        # A body over the limit is answered 413 unread and the connection closed, as HTTP
        # servers do; a client still sending it may see the pipe break before it reads the
        # answer (urllib has no `Expect: 100-continue`). Anything else is a failure.
        reason = getattr(error, "reason", error)
        if len(body) <= LIMIT or not isinstance(reason, ConnectionError):
            raise
        status, answer = None, {}  # refused unread; nothing came back to check

    if status is None:
        reliability.record("input", "serving", f"{description}: closed", outcome="refused")
    elif status != 200:
        assert status in (400, 413, 415), (status, answer, description)
        detail = answer["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail
        assert len(detail) < 300  # says what is wrong, doesn't echo the body back
        reliability.record("input", "serving", f"{description}: {status}", outcome="refused")
    else:
        instances = json.loads(body)["instances"]
        predictions = answer["predictions"]
        answered = [p for p in predictions if _answered(p)]
        scored = [p["customer_id"] for p in answered if "churn_probability" in p]
        rows_lost = len(instances) - len(answered)
        duplicates = len(scored) - len(set(scored))
        reliability.record(
            "input",
            "serving",
            description,
            outcome="handled",
            rows_lost=rows_lost,
            duplicates=duplicates,
        )
        assert len(predictions) == len(instances) and rows_lost == 0 and duplicates == 0
        assert all(0 <= p["churn_probability"] <= 1 for p in answered if "churn_probability" in p)
    # The server is still up and still scores good customers.
    status, answer = _post_bytes(server.predict_url, _encode({"instances": GOOD[:2]}))
    assert status == 200 and len(answer["predictions"]) == 2


def _answered(prediction: Any) -> bool:
    """An entry with scores or with the reason it has none, not both."""
    return isinstance(prediction, dict) and ("error" in prediction) != (
        "churn_probability" in prediction
    )
