"""Who may do what in a Google Cloud project: the one table `setup` grants, `check` checks,
the README prints and the tests hold against Google's role definitions.

Two lists. `GRANTS`: for each principal (the three service accounts, the viewers' group,
GitHub Actions through Workload Identity Federation) the roles granted, on which resource,
and why. `NEEDS`: the permissions each pipeline step or journey uses, on which resource.
The roles must cover the needs (tests/test_check.py checks it against the roles'
`includedPermissions` as Google publishes them), and nothing broader than a need is
granted: no Owner, Editor or admin role where a narrower one does.

Resources are named by key (`project`, `bucket`, `source_dataset` and `output_dataset` (the
datasets of the customer and predictions tables: one, `churn`, by default), `repository:<id>`,
`account:<principal>`, `prediction_datasets`: any dataset named prediction_*) and resolved
for a project by `resource_name`. A grant on the project reaches every resource in it, as
IAM inherits.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.errors import ChurnError
from components.settings import Settings
from components.warehouse import parse_uri

DOCKER_REPOSITORY = "churn"
"""Artifact Registry repository of the component and serving images."""
TEMPLATE_REPOSITORY = "churn-pipelines"
"""Artifact Registry (KFP) repository of the pipeline templates."""
WIF_POOL = "github"
"""Workload Identity Federation pool (and its OIDC provider) GitHub Actions signs in through."""

APIS = (
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "bigquerystorage.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
)
"""Every API the pipelines, the schedules, CI, setup and check call."""


@dataclass(frozen=True)
class Grant:
    """`role` granted to `principal` on `resource`, for `reason`."""

    principal: str
    role: str
    resource: str
    reason: str
    condition: str = ""
    """An IAM condition (CEL) limiting a project grant to some resources; "" for none."""


@dataclass(frozen=True)
class Need:
    """`permissions` that `principal` uses on `resource` when it does `what`."""

    principal: str
    what: str
    resource: str
    permissions: tuple[str, ...]


PROJECT_NUMBER = "PROJECT_NUMBER"
"""Stands for the project's number in a member until it is known (a dry run never asks)."""

PRINCIPALS = ("pipelines", "scheduler", "ci", "submitters", "viewers", "github")

_PREDICTION_DATASETS = 'resource.name.startsWith("projects/{project}/datasets/prediction_")'

GRANTS: tuple[Grant, ...] = (
    # churn-pipelines: what the steps do.
    Grant("pipelines", "roles/aiplatform.user", "project",
          "register models and evaluations, run batch prediction, deploy an endpoint"),
    Grant("pipelines", "roles/bigquery.user", "project",
          "run BigQuery jobs, open Storage Read sessions (roles/bigquery.jobUser cannot) "
          "and create the dataset a batch prediction job writes"),
    Grant("pipelines", "roles/bigquery.dataViewer", "source_dataset", "read the customer table"),
    Grant("pipelines", "roles/bigquery.dataEditor", "output_dataset",
          "write the predictions and rejects tables"),
    Grant("pipelines", "roles/bigquery.dataOwner", "project",
          "read and delete the prediction_* dataset a batch prediction job leaves",
          condition=_PREDICTION_DATASETS),
    Grant("pipelines", "roles/storage.objectUser", "bucket",
          "pipeline artifacts, model directories and CSV exports"),
    Grant("pipelines", "roles/logging.logWriter", "project", "step logs"),
    Grant("pipelines", "roles/iam.serviceAccountUser", "account:pipelines",
          "a scheduled monitoring run starts its retraining run as churn-pipelines"),
    Grant("pipelines", "roles/artifactregistry.reader", f"repository:{TEMPLATE_REPOSITORY}",
          "read the training template a monitoring run's retraining starts from"),
    # churn-scheduler: start runs as churn-pipelines from the pinned templates, nothing else.
    Grant("scheduler", "roles/aiplatform.user", "project", "create pipeline runs"),
    Grant("scheduler", "roles/iam.serviceAccountUser", "account:pipelines",
          "the runs it starts run as churn-pipelines"),
    Grant("scheduler", "roles/artifactregistry.reader", f"repository:{TEMPLATE_REPOSITORY}",
          "read the pipeline templates its runs start from"),
    # churn-ci: push images and templates, create and update the schedules.
    Grant("ci", "roles/artifactregistry.writer", f"repository:{DOCKER_REPOSITORY}",
          "push the component and serving images"),
    Grant("ci", "roles/artifactregistry.writer", f"repository:{TEMPLATE_REPOSITORY}",
          "publish the pipeline templates"),
    Grant("ci", "roles/storage.objectViewer", "bucket",
          "read the source `build` uploads: Cloud Build builds the images as churn-ci"),
    Grant("ci", "roles/logging.logWriter", "project", "build logs"),
    Grant("ci", "roles/cloudscheduler.admin", "project",
          "create and update the Cloud Scheduler jobs (the narrowest role that can)"),
    Grant("ci", "roles/aiplatform.user", "project", "submit runs and manage Vertex schedules"),
    Grant("ci", "roles/iam.serviceAccountUser", "account:pipelines",
          "runs and Vertex schedules it makes run as churn-pipelines"),
    Grant("ci", "roles/iam.serviceAccountUser", "account:scheduler",
          "Cloud Scheduler jobs it makes call Vertex AI as churn-scheduler"),
    # The people who submit runs, build images and follow runs from their laptops.
    Grant("submitters", "roles/aiplatform.user", "project", "submit, follow and list runs"),
    Grant("submitters", "roles/iam.serviceAccountUser", "account:pipelines",
          "the runs they submit run as churn-pipelines"),
    Grant("submitters", "roles/artifactregistry.reader", f"repository:{DOCKER_REPOSITORY}",
          "look up the images by digest before submitting"),
    Grant("submitters", "roles/cloudbuild.builds.editor", "project",
          "start `build` with Cloud Build and follow it"),
    Grant("submitters", "roles/iam.serviceAccountUser", "account:ci",
          "the builds they start run as churn-ci"),
    Grant("submitters", "roles/storage.objectCreator", "bucket",
          "upload the source `build` sends to Cloud Build"),
    Grant("submitters", "roles/logging.viewer", "project",
          "read a failed step's own error line"),
    # The people who inspect runs.
    Grant("viewers", "roles/aiplatform.viewer", "project", "see runs, models and schedules"),
    Grant("viewers", "roles/storage.objectViewer", "bucket",
          "open a run's HTML report and artifacts (GCS objects)"),
    Grant("viewers", "roles/logging.viewer", "project", "read step logs"),
    # GitHub Actions of one repository, through Workload Identity Federation: no key exists.
    Grant("github", "roles/iam.workloadIdentityUser", "account:ci", "act as churn-ci"),
)  # fmt: skip

NEEDS: tuple[Need, ...] = (
    Need("pipelines", "every step: artifacts in the pipeline root", "bucket",
         ("storage.objects.create", "storage.objects.get", "storage.objects.list",
          "storage.objects.delete")),
    Need("pipelines", "every step: logs", "project", ("logging.logEntries.create",)),
    Need("pipelines", "training 1 / scoring 2: read the customer table (Storage Read)",
         "project", ("bigquery.readsessions.create", "bigquery.readsessions.getData",
                     "bigquery.jobs.create")),
    Need("pipelines", "training 1 / scoring 2: read the customer table (Storage Read)",
         "source_dataset", ("bigquery.tables.get", "bigquery.tables.getData")),
    Need("pipelines", "training 6: register and promote a model version", "project",
         ("aiplatform.models.upload", "aiplatform.models.get", "aiplatform.models.update",
          "aiplatform.modelEvaluations.import")),
    Need("pipelines", "training 8: deploy the champion to an endpoint", "project",
         ("aiplatform.endpoints.create", "aiplatform.endpoints.get",
          "aiplatform.endpoints.deploy", "aiplatform.endpoints.undeploy")),
    Need("pipelines", "scoring 1: load the champion", "project", ("aiplatform.models.get",)),
    Need("pipelines", "scoring 2b: Vertex batch prediction", "project",
         ("aiplatform.batchPredictionJobs.create", "aiplatform.batchPredictionJobs.get",
          "bigquery.datasets.create")),
    Need("pipelines", "scoring 2c: read and delete the batch prediction dataset",
         "prediction_datasets", ("bigquery.datasets.get", "bigquery.tables.get",
                                 "bigquery.tables.getData", "bigquery.tables.list",
                                 "bigquery.tables.delete", "bigquery.datasets.delete")),
    Need("pipelines", "scoring 3: publish predictions (stage, replace in a transaction)",
         "output_dataset", ("bigquery.tables.create", "bigquery.tables.get",
                     "bigquery.tables.getData", "bigquery.tables.updateData",
                     "bigquery.tables.update", "bigquery.tables.delete")),
    Need("pipelines", "monitoring 1: the champion's profile and test ROC-AUC", "project",
         ("aiplatform.models.get",)),
    Need("pipelines", "monitoring 1, 3: read predictions and outcomes (in the predictions' "
         "dataset), replace churn_performance and churn_alerts rows", "output_dataset",
         ("bigquery.tables.create", "bigquery.tables.get", "bigquery.tables.getData",
          "bigquery.tables.updateData", "bigquery.tables.update", "bigquery.tables.delete")),
    Need("pipelines", "monitoring 4: start a retraining run as churn-pipelines", "project",
         ("aiplatform.pipelineJobs.create",)),
    Need("pipelines", "monitoring 4: start a retraining run as churn-pipelines",
         "account:pipelines", ("iam.serviceAccounts.actAs",)),
    Need("pipelines", "monitoring 4: start a retraining run as churn-pipelines",
         f"repository:{TEMPLATE_REPOSITORY}", ("artifactregistry.repositories.downloadArtifacts",)),
    Need("scheduler", "a schedule starts a run as churn-pipelines", "project",
         ("aiplatform.pipelineJobs.create",)),
    Need("scheduler", "a schedule starts a run as churn-pipelines", "account:pipelines",
         ("iam.serviceAccounts.actAs",)),
    Need("scheduler", "a schedule starts a run as churn-pipelines",
         f"repository:{TEMPLATE_REPOSITORY}", ("artifactregistry.repositories.downloadArtifacts",)),
    Need("ci", "push images", f"repository:{DOCKER_REPOSITORY}",
         ("artifactregistry.repositories.uploadArtifacts",
          "artifactregistry.repositories.downloadArtifacts", "artifactregistry.tags.create",
          "artifactregistry.tags.update")),
    Need("ci", "build images with Cloud Build (as churn-ci)", "bucket",
         ("storage.objects.get",)),
    Need("ci", "build images with Cloud Build (as churn-ci)", "project",
         ("logging.logEntries.create",)),
    Need("ci", "publish templates", f"repository:{TEMPLATE_REPOSITORY}",
         ("artifactregistry.repositories.uploadArtifacts", "artifactregistry.kfpartifacts.create",
          "artifactregistry.tags.create", "artifactregistry.tags.update")),
    Need("ci", "create and update the schedules", "project",
         ("cloudscheduler.jobs.create", "cloudscheduler.jobs.update", "cloudscheduler.jobs.get",
          "aiplatform.schedules.create", "aiplatform.schedules.update",
          "aiplatform.pipelineJobs.create")),
    Need("ci", "create and update the schedules", "account:pipelines",
         ("iam.serviceAccounts.actAs",)),
    Need("ci", "create and update the schedules", "account:scheduler",
         ("iam.serviceAccounts.actAs",)),
    Need("submitters", "submit and follow a run (train, score --wait)", "project",
         ("aiplatform.pipelineJobs.create", "aiplatform.pipelineJobs.get",
          "aiplatform.pipelineJobs.list", "logging.logEntries.list")),
    Need("submitters", "submit and follow a run (train, score --wait)", "account:pipelines",
         ("iam.serviceAccounts.actAs",)),
    Need("submitters", "submit and follow a run (train, score --wait)",
         f"repository:{DOCKER_REPOSITORY}",
         ("artifactregistry.tags.get", "artifactregistry.dockerimages.get")),
    Need("submitters", "build the images with Cloud Build", "project",
         ("cloudbuild.builds.create", "cloudbuild.builds.get")),
    Need("submitters", "build the images with Cloud Build", "account:ci",
         ("iam.serviceAccounts.actAs",)),
    Need("submitters", "build the images with Cloud Build", "bucket",
         ("storage.objects.create",)),
    Need("viewers", "inspect runs in the console", "project",
         ("aiplatform.pipelineJobs.get", "aiplatform.pipelineJobs.list",
          "aiplatform.models.get")),
    Need("viewers", "open a run's HTML report", "bucket", ("storage.objects.get",)),
    Need("viewers", "read step logs", "project", ("logging.logEntries.list",)),
    Need("github", "GitHub Actions signs in as churn-ci", "account:ci",
         ("iam.serviceAccounts.getAccessToken",)),
)  # fmt: skip


def principal_member(
    principal: str, settings: Settings, github_repository: str = "", project_number: str = ""
) -> str | None:
    """The IAM member of `principal` in `settings`'s project, or None when it is not
    configured (no submitter or viewer group, no GitHub repository)."""
    if principal == "pipelines":
        return f"serviceAccount:{settings.pipeline_service_account}"
    if principal == "scheduler":
        return f"serviceAccount:{settings.scheduler_account}"
    if principal == "ci":
        return f"serviceAccount:{settings.ci_account}"
    if principal == "viewers":
        return f"group:{settings.viewer_group}" if settings.viewer_group else None
    if principal == "submitters":
        return f"group:{settings.submitter_group}" if settings.submitter_group else None
    if principal == "github":
        if not github_repository:
            return None
        return (
            f"principalSet://iam.googleapis.com/projects/{project_number or PROJECT_NUMBER}"
            f"/locations/global/workloadIdentityPools/{WIF_POOL}/attribute.repository/"
            f"{github_repository}"
        )
    raise ValueError(f"unknown principal {principal!r}; known: {', '.join(PRINCIPALS)}")


def account_email(principal: str, settings: Settings) -> str:
    return {
        "pipelines": settings.pipeline_service_account,
        "scheduler": settings.scheduler_account,
        "ci": settings.ci_account,
    }[principal]


def source_table(settings: Settings) -> tuple[str, str, str]:
    """(project, dataset, table) of the BigQuery customer table."""
    return _bigquery_table("source", settings.source_uri)


def output_table(settings: Settings) -> tuple[str, str, str]:
    """(project, dataset, table) of the BigQuery predictions table."""
    return _bigquery_table("predictions", settings.predictions_uri)


DATASET_KEYS = ("source_dataset", "output_dataset")


def datasets(settings: Settings) -> dict[str, tuple[str, str]]:
    """Dataset key -> (project, dataset): the datasets setup makes and check reads."""
    source, output = source_table(settings), output_table(settings)
    return {"source_dataset": source[:2], "output_dataset": output[:2]}


def _bigquery_table(name: str, uri: str) -> tuple[str, str, str]:
    location = parse_uri(uri)
    if location.kind != "bigquery":
        raise ChurnError(
            f"{name} {uri} is not a BigQuery table; in a Google Cloud project it is "
            f"bq://PROJECT.DATASET.TABLE (see `{name}` in components/settings.py)"
        )
    project, dataset, table = location.bigquery_table.split(".")
    return project, dataset, table


def resource_name(key: str, settings: Settings) -> str:
    """The IAM resource name of a resource key for `settings`'s project."""
    project = settings.project
    if key == "project":
        return f"projects/{project}"
    if key == "bucket":
        return f"projects/_/buckets/{bucket_name(settings)}"
    if key in ("source_dataset", "output_dataset"):
        dataset_project, dataset = datasets(settings)[key]
        return f"projects/{dataset_project}/datasets/{dataset}"
    if key == "prediction_datasets":
        # Any dataset a batch prediction job names prediction_<model>_<time>; one stands for all.
        return f"projects/{project}/datasets/prediction_churn_2026_01_01T00_00_00"
    kind, _, name = key.partition(":")
    if kind == "repository":
        return f"projects/{project}/locations/{settings.region}/repositories/{name}"
    if kind == "account":
        return f"projects/{project}/serviceAccounts/{account_email(name, settings)}"
    raise ValueError(f"unknown resource {key!r}")


def bucket_name(settings: Settings) -> str:
    return settings.bucket_uri.removeprefix("gs://").split("/")[0]


def condition_expression(grant: Grant, settings: Settings) -> str:
    return grant.condition.format(project=settings.project)


def grants_for(principal: str) -> list[Grant]:
    return [grant for grant in GRANTS if grant.principal == principal]


_PRINCIPAL_NAMES = {
    "pipelines": "churn-pipelines",
    "scheduler": "churn-scheduler",
    "ci": "churn-ci",
    "submitters": "the submitter group (`--submitter-group`)",
    "viewers": "the viewer group (`--viewer-group`)",
    "github": "GitHub Actions of ORG/REPO (`--github-repository`)",
}


def _resource_label(grant: Grant) -> str:
    if grant.condition:
        return "project, datasets `prediction_*` only (IAM condition)"
    kind, _, name = grant.resource.partition(":")
    return {
        "project": "project",
        "bucket": "bucket (`gs://PROJECT-churn`)",
        "source_dataset": "dataset of the customer table (`churn`)",
        "output_dataset": "dataset of the predictions table (`churn`)",
        "repository": f"repository `{name}`",
        "account": f"account {_PRINCIPAL_NAMES.get(name, name)}",
    }[kind]


def markdown_table() -> str:
    """The grants as the README shows them (a test keeps the two the same)."""
    lines = ["| Who | Role | On | Why |", "| --- | --- | --- | --- |"]
    for grant in GRANTS:
        lines.append(
            f"| {_PRINCIPAL_NAMES[grant.principal]} | `{grant.role}` | {_resource_label(grant)} "
            f"| {grant.reason} |"
        )
    return "\n".join(lines)
