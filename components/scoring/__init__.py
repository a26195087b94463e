"""Batch scoring: risk tiers (`tiers`), chunked scoring and its worker pool (`chunked`),
what a run stages (`staged`, `staging`), capacity tiers (`capacity`), Vertex AI batch
prediction (`batch_prediction`), loading the champion (`champion`), publishing
(`publish`) and the scoring summary (`summary`).

May import: model, monitoring, reports, the registry, data, the warehouse and the shared
modules. Serving builds on it; nothing else does.
"""
