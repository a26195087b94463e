"""Alias of `components.model.calibration`: models pickled before issue 17's move name their
classes here (`components.calibration.…`), and unpickling imports this module to find them.
tests/test_layout.py scores such a model bit for bit."""

from components.model.calibration import CalibratedModel, ProbabilityCalibrator

__all__ = ["CalibratedModel", "ProbabilityCalibrator"]
