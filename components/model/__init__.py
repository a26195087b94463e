"""The churn model: features, calibration, candidate search and training, the compiled
tree kernel, evaluation and registration (training's steps 4 to 6).

May import: monitoring (the reference profile registered with a model), reports, the
registry (where models are saved and the champion read), data, the warehouse and the
shared modules. Knows nothing of scoring or serving.

Pickled models name classes in `features` and `calibration`: they move only behind an alias
(`components.features`, `components.calibration`).
"""
