"""The name model files record for the classes of `components.model.calibration` (their
`__module__` is this module's): models pickled before issue 17's move and after it name
`components.calibration.…`, so either loads in an image built before or after the move.
tests/test_layout.py scores a model made before the move bit for bit."""

from components.model.calibration import CalibratedModel, ProbabilityCalibrator

__all__ = ["CalibratedModel", "ProbabilityCalibrator"]
