"""The stand-in answers the real client libraries through the real credentials flow."""

import pytest
from google.api_core import exceptions


def test_real_clients_reach_the_standin_with_its_bearer_token(google_cloud):
    from google.cloud import aiplatform_v1

    name = "projects/p/locations/us-central1/pipelineJobs/run-1"
    google_cloud.respond("GET", f"/v1/{name}", {"name": name, "state": "PIPELINE_STATE_RUNNING"})
    client = aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": google_cloud.url}
    )
    job = client.get_pipeline_job(name=name)
    assert job.state == aiplatform_v1.PipelineState.PIPELINE_STATE_RUNNING
    (request,) = google_cloud.requests_to("GET", f"/v1/{name}")
    assert request.authorized


def test_unrouted_paths_answer_with_googles_not_found(google_cloud):
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.PipelineServiceClient(
        transport="rest", client_options={"api_endpoint": google_cloud.url}
    )
    with pytest.raises(exceptions.NotFound, match="is not routed"):
        client.get_pipeline_job(name="projects/p/locations/us-central1/pipelineJobs/none")
