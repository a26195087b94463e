"""Compile every pipeline to KFP YAML for Vertex AI Pipelines.

    python compile.py [--output-dir compiled]

Writes `<output-dir>/<name>.yaml` per pipeline (training.py -> training.yaml). The component
image the YAML names comes from the settings at compile time (`component_image` in churn.toml
or `CHURN_COMPONENT_IMAGE`; with a project, its Artifact Registry image by default).
"""

import argparse
import importlib
import sys
from pathlib import Path

from kfp import compiler

# name -> "module:function"; the YAML is named after the module, as in pipelines/.
PIPELINES = {
    "training": "pipelines.training:training_pipeline",
    "scoring": "pipelines.scoring:scoring_pipeline",
}


def compile_all(output_dir: Path) -> list[Path]:
    """Compile each pipeline in PIPELINES into `output_dir`; return the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, target in PIPELINES.items():
        module_name, function_name = target.split(":")
        pipeline_func = getattr(importlib.import_module(module_name), function_name)
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func, str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("compiled"))
    args = parser.parse_args(argv)
    for path in compile_all(args.output_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
