"""Vertex AI Model Service routes for the Google stand-in (tests/google_standin.py)."""

import json
from collections.abc import Callable
from urllib.parse import unquote

from google.cloud import aiplatform_v1
from google.protobuf import json_format
from google_standin import Authorize, allow_all, error, permission_denied

LOCATION = "projects/proj-p/locations/us-central1"
MODEL = f"{LOCATION}/models/churn"


class VertexModels:
    """Model Service routes on the stand-in, answering like Vertex AI: versions numbered
    from 1 under one model, aliases unique across its versions, operations done at once.

    An upload is refused as Vertex refuses it: a body that is no `UploadModelRequest`, an
    artifact URI outside Cloud Storage, a caller without `aiplatform.models.upload`, and a
    serving image that does not exist (Vertex ingests the image when the version is
    uploaded, so the image must exist then; `image_exists` says which do)."""

    def __init__(
        self,
        standin,
        *,
        location: str = LOCATION,
        image_exists: Callable[[str], bool] = lambda _uri: True,
        authorize: Authorize = allow_all,
    ) -> None:
        """`location`: `projects/P/locations/L`, the one this stand-in serves; the model is
        `<location>/models/churn`."""
        self.versions: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        self.location, self.model = location, f"{location}/models/churn"
        self.image_exists, self.authorize = image_exists, authorize
        base = "/v1/" + location
        standin.route("GET", base + r"/models/(?P<ref>[^/:]+)", self._get)
        standin.route("POST", base + r"/models:upload", self._upload)
        standin.route("POST", base + r"/models/(?P<ref>[^/:]+):mergeVersionAliases", self._merge)
        standin.route("POST", base + r"/models/(?P<ref>[^/:]+)/evaluations:import", self._import)

    def _resolve(self, ref: str) -> dict | None:
        _, _, version = unquote(ref).partition("@")
        version = self.aliases.get(version, version) or max(self.versions, default="")
        return self.versions.get(version)

    def _get(self, _request, match):
        model = self._resolve(match["ref"])
        if model is None:
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no model"}}
        return 200, model

    def _upload(self, request, _match):
        body = request.json
        try:
            json_format.Parse(
                json.dumps({k: v for k, v in body.items() if k != "parent"}),
                aiplatform_v1.UploadModelRequest.pb(aiplatform_v1.UploadModelRequest()),
            )
        except json_format.ParseError as exc:
            return error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        if not self.authorize(request.member, "aiplatform.models.upload", self.location):
            return permission_denied(
                "aiplatform.googleapis.com",
                "aiplatform.models.upload",
                self.location,
                request.caller,
            )
        model = body.get("model", {})
        if not model.get("artifactUri", "").startswith("gs://"):
            return error(
                400, "INVALID_ARGUMENT", "artifact_uri must be a Cloud Storage path (gs://)."
            )
        image = model.get("containerSpec", {}).get("imageUri", "")
        if not self.image_exists(image):
            return error(
                400,
                "FAILED_PRECONDITION",
                f"The container image {image} does not exist, or the Vertex AI Service Agent "
                "cannot read it.",
            )
        if not self.versions and body.get("parentModel"):
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no parent"}}
        version = str(len(self.versions) + 1)
        self.versions[version] = body["model"] | {"name": self.model, "versionId": version}
        response = {
            "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
            "model": self.model,
            "modelVersionId": version,
        }
        operation = f"{self.location}/operations/{version}"
        return 200, {"name": operation, "done": True, "response": response}

    def _merge(self, request, match):
        version = self._resolve(match["ref"])["versionId"]
        for alias in request.json["versionAliases"]:
            self.aliases[alias] = version
        return 200, self.versions[version]

    def _import(self, request, match):
        return 200, request.json["modelEvaluation"] | {"name": f"{unquote(match['ref'])}/e/1"}
