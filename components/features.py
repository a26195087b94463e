"""The name model files record for the classes of `components.model.features` (their
`__module__` is this module's): models pickled before issue 17's move and after it name
`components.features.…`, so either loads in an image built before or after the move.
tests/test_layout.py scores a model made before the move bit for bit."""

from components.model.features import CategoryEncoder, SmallFramePreprocessor

__all__ = ["CategoryEncoder", "SmallFramePreprocessor"]
