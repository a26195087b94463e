"""`python compile.py` writes YAML that the real KFP protos accept as a PipelineSpec."""

import subprocess
import sys
from pathlib import Path

import yaml
from google.protobuf import json_format
from google_cloud_pipeline_components import __version__ as gcpc_version
from kfp.pipeline_spec import pipeline_spec_pb2

ROOT = Path(__file__).resolve().parents[1]
GCPC_IMAGE = f"gcr.io/ml-pipeline/google-cloud-pipeline-components:{gcpc_version}"


def test_compiled_pipelines_are_valid_pipeline_specs(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "compile.py", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env={"CHURN_COMPONENT_IMAGE": "example.com/churn/components:test", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    written = [Path(line) for line in out.stdout.split()]
    assert {p.name for p in written} == {"training.yaml", "scoring.yaml", "monitoring.yaml"}
    for path in written:
        document = yaml.safe_load(path.read_text())
        spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
        assert spec.pipeline_info.name.startswith("churn-")
        images = {
            executor["container"]["image"]
            for executor in document["deploymentSpec"]["executors"].values()
            if "container" in executor
        }
        # Every project step runs in our image; Google's own ops (batch prediction) in
        # Google's image.
        assert images - {GCPC_IMAGE} == {"example.com/churn/components:test"}
        # No step installs packages at run time: the image has everything.
        assert "pip install" not in path.read_text()
        display_names = [
            task["taskInfo"]["name"]
            for task in document["root"]["dag"]["tasks"].values()
            if not task["componentRef"]["name"].startswith("comp-condition-")  # dsl.If groups
        ]
        assert all(name[0].isdigit() for name in display_names)
