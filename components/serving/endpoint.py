"""Deploy the champion to a Vertex AI endpoint (optional; the training pipeline's last
branch when `deploy_endpoint` is on and the run promoted its model).

The endpoint is found by resource name (`projects/P/locations/R/endpoints/ID`, the
`endpoint_id` setting) and created with that id if missing, so two endpoints sharing a
display name can't be confused. The new version gets all the traffic; every model deployed
there before is then undeployed, so one champion bills at a time.
"""

import logging
import re
from dataclasses import dataclass, field

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp.dsl import Input

from components.errors import RegistryError
from components.stage import stage

log = logging.getLogger(__name__)

_MODEL_VERSION = re.compile(
    r"(?P<model>projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/models/[^/@]+)"
    r"@(?P<version>[^/@]+)"
)
_OPERATION_TIMEOUT = 1800.0  # deploying pulls the image and starts replicas: minutes


@dataclass
class Deployment:
    """What `deploy_model_version` did."""

    endpoint: str
    deployed_model_id: str
    undeployed: list[str] = field(default_factory=list)
    created_endpoint: bool = False


def deploy_model_version(
    model_version: str,
    *,
    endpoint_id: str,
    machine_type: str,
    min_replicas: int,
    max_replicas: int,
    api_endpoint: str = "",
) -> Deployment:
    """Deploy `model_version` (`projects/P/locations/R/models/ID@VERSION`) to the endpoint
    `endpoint_id` in the same project and region, with all the traffic; then undeploy what
    was deployed there before. A version already deployed there is left as it is."""
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1

    match = _MODEL_VERSION.fullmatch(model_version)
    if not match:
        raise RegistryError(
            f"cannot deploy {model_version!r}: endpoints serve Vertex AI model versions "
            "(projects/P/locations/R/models/ID@VERSION); register to a vertex:// registry"
        )
    parent = f"projects/{match['project']}/locations/{match['location']}"
    client = aiplatform_v1.EndpointServiceClient(
        transport="rest",
        client_options={
            "api_endpoint": api_endpoint or f"{match['location']}-aiplatform.googleapis.com"
        },
    )
    name = f"{parent}/endpoints/{endpoint_id}"
    created = False
    try:
        endpoint = client.get_endpoint(name=name)
    except exceptions.NotFound:
        endpoint = client.create_endpoint(
            parent=parent,
            endpoint=aiplatform_v1.Endpoint(display_name=endpoint_id),
            endpoint_id=endpoint_id,
        ).result(_OPERATION_TIMEOUT)
        created = True
    for deployed in endpoint.deployed_models:
        if deployed.model == match["model"] and deployed.model_version_id == match["version"]:
            log.info("%s is already deployed to %s as %s", model_version, name, deployed.id)
            return Deployment(name, deployed.id)
    previous = [deployed.id for deployed in endpoint.deployed_models]
    response = client.deploy_model(
        endpoint=name,
        deployed_model=aiplatform_v1.DeployedModel(
            model=model_version,
            display_name=f"churn-{match['version']}",
            dedicated_resources=aiplatform_v1.DedicatedResources(
                machine_spec=aiplatform_v1.MachineSpec(machine_type=machine_type),
                min_replica_count=min_replicas,
                max_replica_count=max_replicas,
            ),
        ),
        # "0" is the model being deployed: it takes all the traffic at once.
        traffic_split={"0": 100},
    ).result(_OPERATION_TIMEOUT)
    for deployed_id in previous:
        client.undeploy_model(endpoint=name, deployed_model_id=deployed_id).result(
            _OPERATION_TIMEOUT
        )
    return Deployment(name, response.deployed_model.id, previous, created)


@stage
def deploy_to_endpoint(
    registered_model: Input[VertexModel],
    registry_uri: str,
    endpoint_id: str,
    machine_type: str,
    min_replicas: int,
    max_replicas: int,
) -> str:
    """Deploy the model version just registered to the endpoint; return the endpoint's
    resource name."""
    import logging

    from components.errors import RegistryError
    from components.registry.vertex import parse_vertex_uri
    from components.serving.endpoint import deploy_model_version

    logging.basicConfig(level=logging.INFO)
    if not registry_uri.startswith("vertex://"):
        raise RegistryError(
            f"deploy_endpoint needs a vertex:// registry; {registry_uri!r} is local"
        )
    deployment = deploy_model_version(
        registered_model.metadata["resourceName"],
        endpoint_id=endpoint_id,
        machine_type=machine_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        api_endpoint=parse_vertex_uri(registry_uri)["api_endpoint"],
    )
    return deployment.endpoint
