"""Step start-up benchmark: what each pipeline step pays before it does any work.

    python bench/bench_step_startup.py              # every step, best of 5
    python bench/bench_step_startup.py --repeat 9
    cd OTHER_CHECKOUT && PYTHONPATH=. python /path/to/bench/bench_step_startup.py  # another commit

Under kfp.local and on Vertex AI alike, every step is a fresh Python process that imports
KFP's executor and then whatever its body imports. For each step of both pipelines (each
`@stage` component) this starts a process that imports exactly that (the `import`
statements of the step's body, read from its source) and reports the best wall time of
`--repeat` rounds, beside the baseline: a process that imports the executor alone, which no
step can avoid. The ratio is the step's start-up over the baseline's; what is above 1.0 is
the step's own imports. Work a step does after its imports (unpickling a model imports
scikit-learn) is not counted.
"""

import argparse
import ast
import importlib
import inspect
import pkgutil
import random
import subprocess
import sys
import textwrap
import time

from kfp.dsl.python_component import PythonComponent

import components

BASELINE = "import kfp.dsl.executor_main"


def step_imports() -> dict[str, str]:
    """Each pipeline step (every `@stage` component of the project) -> the import
    statements of its body."""
    steps: dict[str, str] = {}
    names = sorted(m.name for m in pkgutil.walk_packages(components.__path__, "components."))
    for name in names:
        for value in vars(importlib.import_module(name)).values():
            if not isinstance(value, PythonComponent) or value.name in steps:
                continue
            body = ast.parse(textwrap.dedent(inspect.getsource(value.python_func)))
            imports = [
                ast.unparse(node)
                for node in ast.walk(body)
                if isinstance(node, ast.Import | ast.ImportFrom)
            ]
            steps[value.name] = "; ".join(imports)
    return steps


def startup_seconds(imports: str) -> float:
    """The wall time of one process that imports the executor, then `imports`."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"{BASELINE}; {imports}"], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the best counts)")
    args = parser.parse_args(argv)
    # The baseline and every step once per round, in a new order each round, so a slow
    # spell of the machine, or the process just after a heavy one, costs all of them alike
    # rather than skewing the ratios.
    steps = {"(executor alone: baseline)": "pass"} | step_imports()
    best = dict.fromkeys(steps, float("inf"))
    order = list(steps)
    for round_number in range(args.repeat):
        random.Random(round_number).shuffle(order)
        for name in order:
            best[name] = min(best[name], startup_seconds(steps[name]))
    baseline = best["(executor alone: baseline)"]
    print(f"{'step':32} {'seconds':>8} {'x baseline':>11}")
    for name, seconds in best.items():
        print(f"{name:32} {seconds:8.2f} {seconds / baseline:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
