"""Compile every pipeline to KFP YAML for Vertex AI Pipelines.

    python compile.py [--output-dir compiled] [--config churn.toml]

Writes `<output-dir>/<name>.yaml` per pipeline (training.py -> training.yaml). The settings
(`--config` or `CHURN_CONFIG`, else ./churn.toml when there, then `CHURN_*` environment)
decide the component image the YAML names (`component_image`, else with a project its
Artifact Registry image) and each step's CPU and memory (`training_cpu`, `scoring_memory`, ...).
"""

import argparse
import sys
from pathlib import Path

from components.errors import ChurnError
from components.settings import Settings, load_settings
from pipelines.compiling import PIPELINES, compile_pipeline


def compile_all(output_dir: Path, settings: Settings) -> list[Path]:
    """Compile each pipeline in PIPELINES into `output_dir`; return the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return [compile_pipeline(name, output_dir / f"{name}.yaml", settings) for name in PIPELINES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("compiled"))
    parser.add_argument("--config", type=Path, help="TOML settings file (default churn.toml)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
    except ChurnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in compile_all(args.output_dir, settings):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
