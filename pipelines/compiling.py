"""Compiling a pipeline for the settings in use: the one way `compile.py` and the Vertex
runner turn a pipeline into KFP YAML.

Nothing here or in the pipeline modules reads settings when it is imported: the caller
passes the settings it loaded (config file, `CHURN_*` environment, CLI flags), so those
reach the compiled CPU, memory and component image, and a config file that is not the one
in use is never read.
"""

import functools
import importlib
from pathlib import Path

import yaml
from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

from components.settings import DEFAULT_COMPONENT_IMAGE, Settings, component_image

# name -> "module:builder"; the YAML is named after the module, as in pipelines/.
PIPELINES = {
    "training": "pipelines.training:build_training_pipeline",
    "scoring": "pipelines.scoring:build_scoring_pipeline",
    "monitoring": "pipelines.monitoring:build_monitoring_pipeline",
}


@functools.lru_cache(maxsize=8)
def build_pipeline(name: str, settings: Settings) -> GraphComponent:
    """The pipeline `name` (a key of PIPELINES) as `settings` shape it (built once per
    settings: submitting compiles it and reads its name and parameters)."""
    module_name, builder = PIPELINES[name].split(":")
    pipeline = getattr(importlib.import_module(module_name), builder)(settings)
    recipients = [a.strip() for a in settings.alert_email_to.split(",") if a.strip()]
    if settings.runs_on_vertex and recipients:
        from pipelines.notifications import NOTIFIED, with_failure_email

        if name in NOTIFIED:
            # Issue 20: on Vertex a failed run e-mails alert_email_to (exit handler).
            return with_failure_email(pipeline, recipients)
    return pipeline


def compile_pipeline(name: str, path: Path, settings: Settings) -> Path:
    """KFP's YAML of pipeline `name` at `path`, the template `compile.py` writes and
    `submit.py` submits and publishes: each step's CPU and memory from `settings`, the
    project's steps in `component_image(settings)` (Google's own ops keep theirs), every
    task's cache as `enable_caching` says (in the template itself, so scheduled runs, which
    only name the template, behave as submitted ones do), every group named. The same code
    and settings give byte-identical YAML, hence the same sha256 version."""
    compiler.Compiler().compile(build_pipeline(name, settings), str(path))
    image = component_image(settings)
    if image != DEFAULT_COMPONENT_IMAGE:
        # Steps are defined with the placeholder image (components.stage); only they name it.
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(f"image: {DEFAULT_COMPONENT_IMAGE}\n", f"image: {image}\n"),
            encoding="utf-8",
        )
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    components = document.get("components", {})
    dags = [document["root"]["dag"]] + [c["dag"] for c in components.values() if "dag" in c]
    for dag in dags:
        for key, task in dag["tasks"].items():
            task["cachingOptions"] = {"enableCache": True} if settings.enable_caching else {}
            # KFP cannot name the group holding an If/Elif/Else; the console shows what the
            # task is called: name it after its branches ("vertex-batch-prediction or ...").
            if task["taskInfo"]["name"] == key and key.startswith("condition-branches-"):
                branches = components[task["componentRef"]["name"]]["dag"]["tasks"]
                task["taskInfo"]["name"] = " or ".join(
                    branches[branch]["taskInfo"]["name"] for branch in sorted(branches)
                )
    path.write_text(yaml.safe_dump(document, sort_keys=True), encoding="utf-8")
    return path
