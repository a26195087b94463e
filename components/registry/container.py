"""What a registered model version promises of the container that serves it: the routes
Vertex AI calls and the variable that pins the model file's SHA-256. The model server
(`components.serving.server`) answers on these; the Vertex registry registers them."""

HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"
# The model file's SHA-256 as the registry records it, set in the server's environment by
# whoever starts it from the registry (a Vertex model's container spec, `submit.py serve`).
MODEL_SHA256_VARIABLE = "CHURN_MODEL_SHA256"
