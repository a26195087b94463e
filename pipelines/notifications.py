"""On Vertex AI, a failed training or scoring run e-mails `alert_email_to` through Google's
notification component (GCPC's `VertexNotificationEmailOp`) in a `dsl.ExitHandler`.

The exit task runs whether the run succeeded or failed, so it also tells of a run that
failed before any of our steps could say so (a missing image, a refused permission).
Vertex sends the e-mail itself: no SMTP server or password is involved.

kfp.local cannot run Google's components ("SubprocessRunner only supports running
Lightweight Python Components") and an exit task cannot sit behind a `dsl.If`, so the
handler is added only when the pipeline is built for Vertex AI (settings with a project)
and someone is to be told; a local run's failure goes through the monitoring alert path
instead (`submit.py` sends it). KFP takes no pipeline output from inside an exit handler:
the wrapped pipeline returns nothing, and `submit.py --wait` reads the run summary from the
summary step's metadata, as it always has.
"""

import inspect

from google_cloud_pipeline_components.v1.vertex_notification_email import (
    VertexNotificationEmailOp,
)
from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

# The pipelines whose failures are e-mailed on Vertex AI.
NOTIFIED = ("training", "scoring")


def with_failure_email(pipeline: GraphComponent, recipients: list[str]) -> GraphComponent:
    """`pipeline` (same name, parameters and steps) run inside an exit handler whose exit
    task e-mails `recipients` the run's final state on Vertex AI."""
    names = list(inspect.signature(pipeline.pipeline_func).parameters)

    def notified(*args):  # KFP passes the parameters positionally, in signature order
        notify = VertexNotificationEmailOp(recipients=recipients)
        notify.set_display_name("E-mail the run's outcome")
        with dsl.ExitHandler(notify, name="notify-on-exit"):
            pipeline(**dict(zip(names, args, strict=True))).set_display_name(pipeline.name)

    signature = inspect.signature(pipeline.pipeline_func)
    notified.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)
    notified.__annotations__ = {
        k: v for k, v in pipeline.pipeline_func.__annotations__.items() if k != "return"
    }
    notified.__name__ = pipeline.pipeline_func.__name__
    return dsl.pipeline(name=pipeline.name, description=pipeline.description)(notified)
