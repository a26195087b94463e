"""One Google Cloud project behind the stand-in with every API the project calls, judged as
Google judges them: one IAM (`standin.iam`, roles from tests/data/iam_roles.json) decides for
every caller, every API sees the same service accounts, repositories and images.

    setup / check     CloudProject (google_standin.py): Service Usage, IAM, Resource Manager,
                      bucket and dataset metadata, Artifact Registry repositories
    build             ArtifactRegistry, CloudBuild (artifact_registry_standin.py)
    publish           TemplateRegistry (template_registry_standin.py): the KFP repository
    train / score     VertexPipelines (vertex_pipelines_standin.py): runs from an inline spec
                      or a published template, each image checked in ArtifactRegistry
    register          VertexModels (vertex_standin.py): uploads need their serving image
    schedule          CloudScheduler (cloud_scheduler_standin.py), VertexSchedules

What each cannot judge as Google would is said in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from artifact_registry_standin import ArtifactRegistry
from cloud_scheduler_standin import CloudScheduler
from google_standin import CloudProject, GoogleStandIn
from template_registry_standin import TemplateRegistry
from vertex_pipelines_standin import VertexPipelines, VertexSchedules
from vertex_standin import VertexModels


@dataclass
class StrictCloud:
    standin: GoogleStandIn
    project: CloudProject
    region: str
    images: ArtifactRegistry
    templates: TemplateRegistry
    pipelines: VertexPipelines
    schedules: VertexSchedules
    scheduler: CloudScheduler
    models: VertexModels

    @property
    def environment(self) -> dict[str, str]:
        """The settings (as CHURN_* variables) that point every client at the stand-in."""
        url = self.standin.url
        return {
            "CHURN_PROJECT": self.project.project,
            "CHURN_REGION": self.region,
            "CHURN_GOOGLE_API_ENDPOINT": url,
            "CHURN_VERTEX_API_ENDPOINT": url,
            "CHURN_SCHEDULER_API_ENDPOINT": url,
            "CHURN_ARTIFACT_REGISTRY_API_ENDPOINT": url,
            "CHURN_CLOUD_BUILD_API_ENDPOINT": url,
            "CHURN_LOGGING_API_ENDPOINT": url,
            "CHURN_TEMPLATE_REGISTRY": f"{url}/{self.project.project}/churn-pipelines",
        }


def strict_cloud(standin: GoogleStandIn, region: str, **project: Any) -> StrictCloud:
    """Every API of one project on `standin`, sharing its IAM and its resources."""
    made = CloudProject(standin, **project)
    allowed = standin.iam.allowed
    # Artifact Registry's docker API reads the repositories setup made (CloudProject serves
    # their metadata and IAM policies).
    images = ArtifactRegistry(standin, repositories=made.repositories)

    def kfp_repositories() -> set[str]:
        return {
            name.rsplit("/", 1)[1]
            for name, repository in made.repositories.items()
            if repository.get("format") == "KFP"
        }

    templates = TemplateRegistry(
        standin, made.project, region, repositories=kfp_repositories, authorize=allowed
    )

    def template(uri: str) -> dict[str, Any] | None:
        repo, package, ref = uri.rstrip("/").split("/")[-3:]
        content = templates.template(repo, package, ref)
        return None if content is None else next(yaml.safe_load_all(content))

    pipelines = VertexPipelines(
        standin,
        made.project,
        region,
        authorize=allowed,
        image_exists=images.image_exists,
        service_accounts=_Accounts(made),
        templates=template,
    )
    return StrictCloud(
        standin=standin,
        project=made,
        region=region,
        images=images,
        templates=templates,
        pipelines=pipelines,
        schedules=VertexSchedules(standin, made.project, region, authorize=allowed),
        scheduler=CloudScheduler(
            standin,
            made.project,
            authorize=allowed,
            service_account_exists=lambda email: email in made.accounts,
        ),
        models=VertexModels(
            standin,
            location=f"projects/{made.project}/locations/{region}",
            image_exists=images.image_exists,
            authorize=allowed,
        ),
    )


class _Accounts:
    """The project's service accounts as they are now (setup makes them after this)."""

    def __init__(self, project: CloudProject) -> None:
        self.project = project

    def __contains__(self, email: object) -> bool:
        return email in self.project.accounts
