"""Online serving: a registered model behind Vertex AI's custom-prediction-routine server.

Vertex's prebuilt scikit-learn containers cannot serve our pipeline (see DESIGN.md), so the
serving image (`containers/serving/`) runs the custom-prediction-routine model server with
`ChurnPredictor`. `start_model_server` runs that same server class on this machine, which is
what `submit.py serve` and the tests use, so what is tested locally is what the endpoint runs.

A request is `{"instances": [customer records]}` with the raw columns of the customer table,
in any case. Each instance goes through serving-mode `validate` and `score_frame`, the batch
scoring path, so a customer's served score equals its batch score. The response has one
entry per instance, in order: `customer_id`, `churn_probability`, `churn_predicted`,
`risk_tier` and `model_version`, or, for an instance that cannot be scored (no customer id,
an unparseable number), `customer_id` and the `error` that says why, so one bad record does
not fail the others.

Reason codes: a request with `"parameters": {"reasons": true}` (Vertex's field for a
request's parameters; a batch prediction job sends its `model_parameters` there) gets, per
scored instance, `baseline_probability` and `reasons`: up to 3 of
`{"feature", "value", "effect", "phrase"}`, strongest first, the numbers batch scoring
publishes (`components.scoring.reason_codes`). `"reasons"` may also be a probability:
reasons only for instances scored at least that (batch prediction asks for the run's
`medium` cut-off); `false` or no `reasons` gives none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import HTTPException, Request, Response
from google.cloud.aiplatform.prediction import handler_utils
from google.cloud.aiplatform.prediction.handler import PredictionHandler
from google.cloud.aiplatform.prediction.predictor import Predictor
from google.cloud.aiplatform.prediction.serializer import DefaultSerializer

from components.contract import TELCO_CHURN
from components.data.validate import validate
from components.errors import ChurnError, ContractError, RegistryError
from components.model.predict import small_frame_path, tree_kernel
from components.model.reasons import prepare as prepare_reasons
from components.registry import MODEL_FILE, RECORD_FILE, load_model_directory
from components.registry.container import HEALTH_ROUTE, MODEL_SHA256_VARIABLE, PREDICT_ROUTE
from components.scoring.reason_codes import REASON_COLUMNS, as_response
from components.scoring.tiers import score_frame
from components.serving.tied import tied_command
from components.settings import Settings, load_settings

HOST = "127.0.0.1"
SERVER_APP = "google.cloud.aiplatform.prediction.model_server:CprModelServer"
_PROJECT_ERROR = re.compile(r"components\.errors\.\w+: (?P<message>.+)$")


@dataclass(frozen=True)
class RequestRows:
    """One request's instances: validated rows to score (`clean`, in request order, from
    positions `positions`), the error entries of the others by position, and the scores."""

    size: int
    clean: pd.DataFrame
    positions: list[int]
    errors: dict[int, dict[str, Any]]
    scores: pd.DataFrame | None = None
    reasons_from: float | None = None  # the request's `reasons` parameter, as a probability


class ChurnPredictor(Predictor):
    """The custom prediction routine: the model server calls `load` once at start, then
    `postprocess(predict(preprocess(request)))` per request."""

    def load(self, artifacts_uri: str, **kwargs: Any) -> None:
        """Load a registry version's directory (a local path, or on Vertex the `gs://` copy
        in AIP_STORAGE_URI), refusing a model file whose SHA-256 differs from its record or
        from `MODEL_SHA256_VARIABLE`, or that other library versions pickled (unless the
        settings accept it); read the risk-tier cut-offs from the settings."""
        settings = load_settings(read_config=False)  # what the parent's environment says
        remote = artifacts_uri.startswith("gs://")
        directory = _download(artifacts_uri) if remote else Path(artifacts_uri)
        # The hash the registry holds for the version (the Vertex model's container
        # environment, or `submit.py serve`): a copy and the record beside it could both
        # have been changed, the registry's own entry not.
        pinned = os.environ.get(MODEL_SHA256_VARIABLE) or None
        self._model, self._version = load_model_directory(
            directory, sha256=pinned, accept_library_mismatch=settings.accept_library_mismatch
        )
        tree_kernel(self._model)  # compile now, not on the first request
        prepare_reasons(self._model)
        # Checked now too; a model it does not fit is scored by its whole pipeline.
        small_frame_path(self._model)
        self._high = settings.high_risk_cutoff
        self._medium = settings.medium_risk_cutoff
        self._columns = [c.name for c in TELCO_CHURN.required(with_label=False)]
        self._names = {name.casefold(): name for name in self._columns}
        self._numeric = {c.name for c in TELCO_CHURN.numeric}

    def preprocess(self, prediction_input: Any) -> RequestRows:
        """Match each instance's fields to the contract's columns (in any case; unknown
        fields are ignored, absent ones are missing values) and validate for serving."""
        instances = _instances(prediction_input)
        reasons_from = _reasons_from(prediction_input)
        records: list[dict[str, Any]] = []
        errors: dict[int, dict[str, Any]] = {}
        for position, instance in enumerate(instances):
            try:
                records.append(self._record(instance))
            except ValueError as exc:
                # An empty row (rejected for its blank id) keeps rows and positions aligned.
                records.append({})
                errors[position] = _error_entry(instance, str(exc))
        frame = self._frame(records)
        clean, kept, rejected = _validate(frame)
        return RequestRows(
            len(instances), clean, kept, rejected | errors, reasons_from=reasons_from
        )

    def predict(self, instances: RequestRows) -> RequestRows:
        """Score the validated rows with the batch scorer."""
        if instances.clean.empty:
            return instances
        scores = score_frame(
            self._model,
            instances.clean,
            threshold=self._version.threshold,
            high=self._high,
            medium=self._medium,
            reasons_for="none" if instances.reasons_from is None else instances.reasons_from,
        )
        return replace(instances, scores=scores)

    def postprocess(
        self, prediction_results: RequestRows
    ) -> dict[str, list[dict[str, Any] | None]]:
        """One entry per instance, in request order: its scores, or why it has none."""
        predictions: list[dict[str, Any] | None] = [None] * prediction_results.size
        for position, entry in prediction_results.errors.items():
            predictions[position] = entry
        if prediction_results.scores is not None:
            scores = prediction_results.scores
            rows = scores.itertuples(index=False)
            for position, row in zip(prediction_results.positions, rows, strict=True):
                predictions[position] = {
                    "customer_id": str(row.customer_id),
                    "churn_probability": float(row.churn_probability),
                    "churn_predicted": bool(row.churn_predicted),
                    "risk_tier": str(row.risk_tier),
                    "model_version": self._version.version,
                }
            if "baseline_probability" in scores.columns:
                columns = [scores[name].tolist() for name in REASON_COLUMNS]
                # Column by column: `to_dict("records")` costs a millisecond a row.
                rows = zip(*columns, strict=True)
                reasons = [dict(zip(REASON_COLUMNS, row, strict=True)) for row in rows]
                for position, row in zip(prediction_results.positions, reasons, strict=True):
                    if not pd.isna(row["baseline_probability"]):  # asked for this one
                        predictions[position] |= as_response(row)
        return {"predictions": predictions}

    def _frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """The instances as a frame, built column by column with the dtypes
        `DataFrame.from_records` would infer where validation tells them apart (a number
        column of JSON numbers within int64 and nulls is float64; anything else is left to
        pandas' inference from objects), at a
        fraction of its cost on a few rows."""
        columns: dict[str, np.ndarray] = {}
        for name in self._columns:
            values = [record.get(name) for record in records]
            numbers = name in self._numeric and all(
                v is None or type(v) is float or (type(v) is int and -(2**63) <= v < 2**63)
                for v in values
            )
            if numbers:
                columns[name] = np.array([np.nan if v is None else v for v in values], float)
            else:
                column = np.empty(len(values), dtype=object)
                column[:] = values
                columns[name] = column
        return pd.DataFrame(columns, copy=False)

    def _record(self, instance: Any) -> dict[str, Any]:
        if not isinstance(instance, dict):
            raise ValueError(
                f"instance is a JSON {type(instance).__name__}, expected an object of "
                "column: value pairs"
            )
        record: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in instance.items():
            name = self._names.get(str(key).strip().casefold())
            if name is None:
                continue
            if name in record:
                raise ValueError(f"fields {spelled[name]!r} and {key!r} differ only in case")
            if isinstance(value, list | dict):
                kind = "array" if isinstance(value, list) else "object"
                raise ValueError(f"field {key!r} is a JSON {kind}, expected a number, text or null")
            record[name], spelled[name] = value, key
        return record


class ChurnHandler(PredictionHandler):
    """The model server's request handler: Vertex's default one, plus what a server open to
    clients needs: bodies over `serving_max_request_bytes` are refused with 413 before they
    are read whole, and a body that is not UTF-8 JSON, or nests too deeply to parse, gets a
    400 naming the problem (the default answers 500 to both, and echoes a bad body back)."""

    def __init__(self, artifacts_uri: str, predictor: type[Predictor] | None = None) -> None:
        super().__init__(artifacts_uri, predictor)
        self._max_bytes = load_settings(read_config=False).serving_max_request_bytes

    async def handle(self, request: Request) -> Response:
        body = await self._read_body(request)
        content_type = handler_utils.get_content_type_from_headers(request.headers)
        if content_type not in (None, "application/json"):
            raise HTTPException(
                status_code=415, detail=f"content type {content_type!r}: send application/json"
            )
        predictor = self._predictor
        results = predictor.postprocess(predictor.predict(predictor.preprocess(_json(body))))
        accept = handler_utils.get_accept_from_headers(request.headers)
        return Response(content=DefaultSerializer.serialize(results, accept), media_type=accept)

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _too_large(self._max_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_bytes:
                raise _too_large(self._max_bytes)
        return bytes(body)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"request body is larger than {limit:,} bytes: send fewer instances per request",
    )


def _json(body: bytes) -> Any:
    """The request's JSON; a client's malformed body is a 400 that says what is wrong."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 (byte {exc.start})"
    except json.JSONDecodeError as exc:
        problem = f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        problem = "nests too deeply"
    raise HTTPException(status_code=400, detail=f"request body {problem}")


def _instances(prediction_input: Any) -> list[Any]:
    """The request's instance list; anything else is the client's error (HTTP 400)."""
    instances = prediction_input.get("instances") if isinstance(prediction_input, dict) else None
    if not isinstance(instances, list) or not instances:
        raise HTTPException(
            status_code=400,
            detail='expected a JSON body {"instances": [customer records, ...]} with at least '
            "one instance",
        )
    return instances


def _reasons_from(prediction_input: Any) -> float | None:
    """The request's `parameters.reasons` as the lowest probability that gets reasons
    (`true`: 0, every instance), or None for none; anything else is the client's error.
    Text forms ("true", "0.4") are taken too: a batch prediction job's parameters are
    text in the pipeline's component."""
    parameters = prediction_input.get("parameters") if isinstance(prediction_input, dict) else None
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise HTTPException(status_code=400, detail='"parameters" must be a JSON object')
    value = parameters.get("reasons")
    if isinstance(value, str):
        text = value.strip().casefold()
        value = {"true": True, "false": False, "": None}.get(text, text)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: refused below
                value = float(value)
    if value is None or value is False:
        return None
    if value is True:
        return 0.0
    if isinstance(value, int | float) and 0.0 <= value <= 1.0:
        return float(value)
    raise HTTPException(
        status_code=400,
        detail='"parameters": {"reasons": ...} must be true, false or a probability between 0 '
        f"and 1; got {json.dumps(value)}",
    )


def _error_entry(instance: Any, reason: str) -> dict[str, Any]:
    customer_id = None
    if isinstance(instance, dict):
        id_key = TELCO_CHURN.id_column.casefold()
        customer_id = next((v for k, v in instance.items() if str(k).casefold() == id_key), None)
    return {"customer_id": _customer_id(customer_id), "error": reason}


def _customer_id(value: Any) -> str | None:
    """An id as text, as scored entries have it; missing (pandas' NaN too) as JSON null."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return str(value).strip() or None


def _validate(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int], dict[int, dict[str, Any]]]:
    """Validated rows, their positions, and error entries for the rows validation rejects."""
    try:
        result = validate(
            frame, source="request", mode="serving", tolerance=1.0, first_row_number=0
        )
    except ContractError:
        # Validation stops when most values of a column are unreadable (a wrong-typed export).
        # A request's instances are independent records: validate them one by one instead,
        # so the unreadable ones get their error and the others are still scored.
        return _validate_each(frame)
    rejects = result.rejects
    rejected = {
        int(position): {"customer_id": _customer_id(customer_id), "error": reason}
        for position, customer_id, reason in zip(
            rejects["row_number"], rejects[TELCO_CHURN.id_column], rejects["reason"], strict=True
        )
    }
    return result.clean, [p for p in range(len(frame)) if p not in rejected], rejected


def _validate_each(
    frame: pd.DataFrame,
) -> tuple[pd.DataFrame, list[int], dict[int, dict[str, Any]]]:
    cleans: list[pd.DataFrame] = []
    kept: list[int] = []
    rejected: dict[int, dict[str, Any]] = {}
    for position in range(len(frame)):
        single = frame.iloc[[position]]
        customer_id = _customer_id(single[TELCO_CHURN.id_column].iloc[0])
        try:
            result = validate(single, source=f"instance {position}", mode="serving", tolerance=1.0)
        except ContractError as exc:
            rejected[position] = {"customer_id": customer_id, "error": str(exc)}
            continue
        if result.rows_rejected:
            rejected[position] = {
                "customer_id": customer_id,
                "error": result.rejects["reason"].iloc[0],
            }
        else:
            cleans.append(result.clean)
            kept.append(position)
    clean = pd.concat(cleans, ignore_index=True) if cleans else frame.iloc[:0]
    return clean, kept, rejected


def _download(uri: str) -> Path:
    """Vertex copies the model's directory to its own bucket and passes that gs:// URI;
    fetch the two files of a registry version into a local directory."""
    from google.api_core.exceptions import NotFound
    from google.cloud import storage

    bucket_name, _, prefix = uri.removeprefix("gs://").partition("/")
    prefix = prefix.strip("/")
    directory = Path(tempfile.mkdtemp(prefix="churn-model-"))
    bucket = storage.Client().bucket(bucket_name)
    for name in (RECORD_FILE, MODEL_FILE):
        try:
            bucket.blob(f"{prefix}/{name}" if prefix else name).download_to_filename(
                directory / name
            )
        except NotFound:
            raise RegistryError(
                f"{uri} has no {name}: serve a registered model version's directory"
            ) from None
    return directory


@dataclass
class ModelServer:
    """A running model server subprocess; as a context manager it is stopped on exit."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def predict_url(self) -> str:
        return self.url + PREDICT_ROUTE

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to shut down; kill it if it has not within `timeout` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_model_server(
    model_dir: Path,
    port: int,
    *,
    settings: Settings | None = None,
    timeout: float = 120.0,
    log_path: Path | None = None,
    sha256: str | None = None,
) -> ModelServer:
    """Serve the registry version in `model_dir` on 127.0.0.1:`port` with the model server
    Vertex runs, and return once its health route answers.

    The server is started through uvicorn rather than `python -m ...model_server`, whose
    `__main__` binds every network interface; the app, handler and predictor are the same.
    The child gets the risk-tier cut-offs and `accept_library_mismatch` of `settings`
    (default: `load_settings()`), so a `--config` file read by the caller applies to it
    too. Its output goes to `log_path` (default: a temporary file), named in any error.
    With `sha256` (the registry's record of the model file), the server refuses a model
    file with any other hash.
    """
    if not 0 < port < 65_536:
        raise ChurnError(f"port must be between 1 and 65535, got {port}")
    settings = load_settings() if settings is None else settings
    _check_port_free(port)
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="churn-model-server-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "HANDLER_MODULE": ChurnHandler.__module__,
        "HANDLER_CLASS": ChurnHandler.__name__,
        "PREDICTOR_MODULE": ChurnPredictor.__module__,
        "PREDICTOR_CLASS": ChurnPredictor.__name__,
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
        "AIP_PREDICT_ROUTE": PREDICT_ROUTE,
        "AIP_STORAGE_URI": str(Path(model_dir).resolve()),
        "CHURN_HIGH_RISK_CUTOFF": str(settings.high_risk_cutoff),
        "CHURN_MEDIUM_RISK_CUTOFF": str(settings.medium_risk_cutoff),
        "CHURN_SERVING_MAX_REQUEST_BYTES": str(settings.serving_max_request_bytes),
        "CHURN_ACCEPT_LIBRARY_MISMATCH": str(settings.accept_library_mismatch).lower(),
        "PYTHONUNBUFFERED": "1",
        MODEL_SHA256_VARIABLE: sha256 or "",  # never one inherited from this process
    }
    # Tied to this process: it ends when we do, however we end (see `tied`).
    command = tied_command("uvicorn", "--factory", SERVER_APP, "--host", HOST)
    command += ["--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ModelServer(process, f"http://{HOST}:{port}", log_path)
    try:
        _wait_until_healthy(server, model_dir, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _check_port_free(port: int) -> None:
    """Fail before starting: a server already on the port would answer our health check."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ChurnError(
                f"cannot serve on {HOST}:{port}: {exc.strerror}; pick another port"
            ) from None


def _wait_until_healthy(server: ModelServer, model_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    health_url = server.url + HEALTH_ROUTE
    while server.process.poll() is None:
        try:
            with urllib.request.urlopen(health_url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise ChurnError(
                f"model server for {model_dir} did not answer {health_url} within "
                f"{timeout:g}s; log: {server.log_path}"
            )
        time.sleep(0.1)
    raise ChurnError(
        f"model server for {model_dir} stopped before serving: {_last_error(server.log_path)} "
        f"(log: {server.log_path})"
    )


def _last_error(log_path: Path) -> str:
    """The project's error line from the server's log, else its last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if match := _PROJECT_ERROR.search(line):
            return match["message"]
    return lines[-1] if lines else "no output"
