"""Issue 17's promises to users: a model registered before components/ moved still loads and
scores, and the settings in use (not those found when a module was imported) shape what is
compiled, so a broken ./churn.toml matters only when it is the file in use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.predict import predict_probability, tree_kernel
from components.registry.model_files import load_model_file
from components.scoring.tiers import score_frame
from components.settings import Settings
from pipelines.compiling import compile_pipeline

ROOT = Path(__file__).resolve().parents[1]
# Made by the code before the move (commit 0f86830), with the probabilities it gave for the
# 300 customers below; its pickle names components.features and components.calibration.
OLD_MODEL = Path(__file__).parent / "data" / "model_before_layout"
OLD_MODEL_SHA256 = "dff1bee8c36d14af0643cc81962de9cd23483cb2e1dbac10dc5c87437ff230f9"


def test_a_model_pickled_before_the_move_scores_bit_for_bit():
    pickled = (OLD_MODEL / "model.joblib").read_bytes()
    assert b"components.features" in pickled and b"components.calibration" in pickled
    model = load_model_file(OLD_MODEL / "model.joblib", OLD_MODEL_SHA256)
    customers = validate(generate_customers(300, seed=8), source="generated").clean
    expected = np.load(OLD_MODEL / "expected_probability.npy")

    assert tree_kernel(model) is not None  # scored by the compiled kernel, as it was then
    assert predict_probability(model, customers).tobytes() == expected.tobytes()
    scored = score_frame(model, customers, threshold=0.5, high=0.7, medium=0.4)
    assert scored["churn_probability"].to_numpy().tobytes() == expected.tobytes()


def _resources(path: Path) -> list[dict]:
    executors = yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    return [e["container"]["resources"] for e in executors if "resources" in e["container"]]


def test_a_model_pickled_now_names_the_classes_where_older_images_find_them():
    """A champion trained after the move is scored by a pipeline pinned to an older
    template and image (until `schedule` republishes): its pickle names the paths that
    existed before the move."""
    import pickle

    from components.model.calibration import CalibratedModel
    from components.model.features import CategoryEncoder, build_preprocessor

    pickled = pickle.dumps((build_preprocessor(), CategoryEncoder(), CalibratedModel))
    assert b"components.model" not in pickled
    assert b"components.features" in pickled and b"components.calibration" in pickled


def test_compiling_takes_the_cpu_memory_and_image_of_the_settings_it_is_given(tmp_path: Path):
    settings = Settings(
        training_cpu="8",
        training_memory="32G",
        scoring_cpu="2",
        scoring_memory="6G",
        component_image="example.com/churn/components:given",
    )
    for name, (cpu, memory) in {"training": ("8", "32G"), "scoring": ("2", "6G")}.items():
        path = compile_pipeline(name, tmp_path / f"{name}.yaml", settings)
        ((resources),) = _resources(path)
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (cpu, memory)
        assert "image: example.com/churn/components:given\n" in path.read_text()
        assert "us-docker.pkg.dev/churn-pipelines" not in path.read_text()


def test_the_config_file_in_use_reaches_the_compiled_steps_a_broken_one_elsewhere_does_not(
    tmp_path: Path,
):
    (tmp_path / "churn.toml").write_text("this is = = not toml\n")  # ./churn.toml, not in use
    (tmp_path / "given.toml").write_text('scoring_cpu = "2"\ntraining_memory = "24G"\n')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no credentials, no CHURN_*

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / script), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    run("compile.py", "--output-dir", "out", "--config", "given.toml")
    ((scoring),) = _resources(tmp_path / "out" / "scoring.yaml")
    ((training),) = _resources(tmp_path / "out" / "training.yaml")
    assert (scoring["resourceCpuLimit"], scoring["resourceMemoryLimit"]) == ("2", "16G")
    assert (training["resourceCpuLimit"], training["resourceMemoryLimit"]) == ("4", "24G")

    # submit.py compiles what it submits the same way: --config and the flags reach it.
    dry = run("submit.py", "train", "--dry-run", "--project", "p", "--region", "R",
              "--config", "given.toml")  # fmt: skip
    (request,) = [json.loads(line) for line in dry.stdout.splitlines()]
    executors = request["body"]["pipelineSpec"]["deploymentSpec"]["executors"].values()
    (resources,) = [e["container"]["resources"] for e in executors if "resources" in e["container"]]
    assert resources["resourceMemoryLimit"] == "24G"

    # The broken file is still refused when it is the one in use, in one line.
    refused = subprocess.run(
        [sys.executable, str(ROOT / "compile.py"), "--output-dir", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: config file churn.toml is not valid TOML")
    assert "Traceback" not in refused.stderr
