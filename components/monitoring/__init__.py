"""Monitoring: input drift (PSI per feature and of the scores) against the reference
profile a model is registered with.

May import: data, the warehouse and the shared modules. Knows nothing of models,
the registry, scoring or serving: scoring tallies what it scores into a `DriftTally`.
"""
