"""Endpoint deploy at the wire: the real aiplatform client against the recording stand-in,
request bodies parsed into `aiplatform_v1` protos."""

from urllib.parse import unquote

import pytest
from google.cloud import aiplatform_v1

from components.errors import RegistryError
from components.serving.endpoint import deploy_model_version

LOCATION = "projects/p/locations/us-central1"
ENDPOINT = f"{LOCATION}/endpoints/churn"
MODEL = f"{LOCATION}/models/churn"


class VertexEndpoints:
    """Endpoint Service routes on the stand-in, answering like Vertex AI (operations done
    at once; deploying gives the new model all the traffic, as requested)."""

    def __init__(self, standin) -> None:
        self.endpoint: dict | None = None
        self.next_id = 100
        base = "/v1/" + LOCATION
        standin.route("GET", base + r"/endpoints/churn", self._get)
        standin.route("POST", base + r"/endpoints", self._create)
        standin.route("POST", base + r"/endpoints/churn:deployModel", self._deploy)
        standin.route("POST", base + r"/endpoints/churn:undeployModel", self._undeploy)

    @staticmethod
    def _done(kind: str, response: dict) -> dict:
        response = {"@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{kind}"} | response
        return {"name": f"{LOCATION}/operations/1", "done": True, "response": response}

    def _get(self, _request, _match):
        if self.endpoint is None:
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "none"}}
        return 200, self.endpoint

    def _create(self, request, _match):
        self.endpoint = request.json | {"name": ENDPOINT, "deployedModels": []}
        return 200, self._done("Endpoint", self.endpoint)

    def _deploy(self, request, _match):
        self.next_id += 1
        model, _, version = request.json["deployedModel"]["model"].partition("@")
        deployed = {"id": str(self.next_id), "model": model, "modelVersionId": version}
        self.endpoint["deployedModels"].append(deployed)
        self.endpoint["trafficSplit"] = {str(self.next_id): 100}
        return 200, self._done("DeployModelResponse", {"deployedModel": deployed})

    def _undeploy(self, request, _match):
        gone = request.json["deployedModelId"]
        models = self.endpoint["deployedModels"]
        self.endpoint["deployedModels"] = [m for m in models if m["id"] != gone]
        return 200, self._done("UndeployModelResponse", {})


def _deploy(google_cloud, version: int):
    return deploy_model_version(
        f"{MODEL}@{version}",
        endpoint_id="churn",
        machine_type="n1-standard-2",
        min_replicas=1,
        max_replicas=2,
        api_endpoint=google_cloud.url,
    )


def test_first_deploy_creates_the_endpoint_by_id_and_sends_all_traffic(google_cloud):
    endpoints = VertexEndpoints(google_cloud)

    deployment = _deploy(google_cloud, 1)

    assert deployment.created_endpoint and deployment.endpoint == ENDPOINT
    (create,) = google_cloud.requests_to("POST", f"/v1/{LOCATION}/endpoints")
    assert create.query["endpointId"] == ["churn"]  # found by resource name from now on
    (request,) = google_cloud.requests_to("POST", f"/v1/{ENDPOINT}:deployModel")
    deploy = aiplatform_v1.DeployModelRequest.from_json(request.raw)
    assert deploy.deployed_model.model == f"{MODEL}@1"
    resources = deploy.deployed_model.dedicated_resources
    assert resources.machine_spec.machine_type == "n1-standard-2"
    assert (resources.min_replica_count, resources.max_replica_count) == (1, 2)
    assert dict(deploy.traffic_split) == {"0": 100}
    assert not google_cloud.requests_to("POST", f"/v1/{ENDPOINT}:undeployModel")
    assert [m["modelVersionId"] for m in endpoints.endpoint["deployedModels"]] == ["1"]


def test_a_new_champion_replaces_the_deployed_one(google_cloud):
    endpoints = VertexEndpoints(google_cloud)
    first = _deploy(google_cloud, 1)

    second = _deploy(google_cloud, 2)

    assert not second.created_endpoint and second.undeployed == [first.deployed_model_id]
    assert len(google_cloud.requests_to("POST", f"/v1/{LOCATION}/endpoints")) == 1
    deploys = google_cloud.requests_to("POST", f"/v1/{ENDPOINT}:deployModel")
    assert aiplatform_v1.DeployModelRequest.from_json(deploys[-1].raw).traffic_split == {"0": 100}
    (request,) = google_cloud.requests_to("POST", f"/v1/{ENDPOINT}:undeployModel")
    undeploy = aiplatform_v1.UndeployModelRequest.from_json(request.raw)
    assert undeploy.deployed_model_id == first.deployed_model_id
    assert [m["modelVersionId"] for m in endpoints.endpoint["deployedModels"]] == ["2"]
    # Looked up by resource name every time, never listed by display name.
    gets = {unquote(r.path) for r in google_cloud.requests if r.method == "GET"}
    assert gets == {f"/v1/{ENDPOINT}"}

    again = _deploy(google_cloud, 2)  # a rerun changes nothing
    assert again.deployed_model_id == second.deployed_model_id
    assert len(google_cloud.requests_to("POST", f"/v1/{ENDPOINT}:deployModel")) == 2


def test_only_vertex_model_versions_can_be_deployed(google_cloud):
    with pytest.raises(RegistryError, match="endpoints serve Vertex AI model versions"):
        deploy_model_version(
            "/home/me/.churn/registry/v0003",
            endpoint_id="churn",
            machine_type="n1-standard-2",
            min_replicas=1,
            max_replicas=1,
        )
    assert not google_cloud.requests
