"""The decorator every pipeline step uses: a KFP lightweight component that runs in the
project's own image, which already has the project and KFP installed.

Lightweight (not containerized) components are what `kfp.local.SubprocessRunner` can run,
so the same step definitions work on a laptop and on Vertex AI Pipelines.

Inside a running step, KFP sets `_KFP_RUNTIME=true` and `kfp.dsl` no longer offers
`component`. A step's body imports its stage module for the plain functions, which also
defines the wrappers, so there the decorator leaves functions as they are.
"""

import os
from collections.abc import Callable

from kfp import dsl

from components.settings import DEFAULT_COMPONENT_IMAGE


def stage(func: Callable) -> Callable:
    """Make `func` a pipeline step in the project image (a plain function inside a step).

    The image named here is a placeholder: a step is defined when its module is imported,
    before anyone knows which settings are in use, so compiling sets the image the settings
    name (`pipelines.compiling.compile_pipeline`)."""
    if os.environ.get("_KFP_RUNTIME") == "true":
        return func
    return dsl.component(func, base_image=DEFAULT_COMPONENT_IMAGE, install_kfp_package=False)
