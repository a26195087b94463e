"""churn-pipelines stages: plain functions that do the work, thin KFP wrappers over them."""
