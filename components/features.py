"""Alias of `components.model.features`: models pickled before issue 17's move name their
classes here (`components.features.…`), and unpickling imports this module to find them.
tests/test_layout.py scores such a model bit for bit."""

from components.model.features import CategoryEncoder, SmallFramePreprocessor

__all__ = ["CategoryEncoder", "SmallFramePreprocessor"]
