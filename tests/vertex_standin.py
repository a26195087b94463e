"""Vertex AI Model Service routes for the Google stand-in (tests/google_standin.py)."""

from urllib.parse import unquote

LOCATION = "projects/p/locations/us-central1"
MODEL = f"{LOCATION}/models/churn"


class VertexModels:
    """Model Service routes on the stand-in, answering like Vertex AI: versions numbered
    from 1 under one model, aliases unique across its versions, operations done at once."""

    def __init__(self, standin) -> None:
        self.versions: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        base = "/v1/" + LOCATION
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
        if not self.versions and body.get("parentModel"):
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no parent"}}
        version = str(len(self.versions) + 1)
        self.versions[version] = body["model"] | {"name": MODEL, "versionId": version}
        response = {
            "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
            "model": MODEL,
            "modelVersionId": version,
        }
        return 200, {"name": f"{LOCATION}/operations/{version}", "done": True, "response": response}

    def _merge(self, request, match):
        version = self._resolve(match["ref"])["versionId"]
        for alias in request.json["versionAliases"]:
            self.aliases[alias] = version
        return 200, self.versions[version]

    def _import(self, request, match):
        return 200, request.json["modelEvaluation"] | {"name": f"{unquote(match['ref'])}/e/1"}
