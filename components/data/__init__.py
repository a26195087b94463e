"""The customer data: validation against the contract, the train/test split, ingest and
generated sample data.

May import: the warehouse and the shared modules (settings, errors, contract, stage).
Knows nothing of models, the registry, scoring or serving.
"""
