"""Churn probability from a saved model: the one place scoring, serving and evaluation ask.

Most models answer through their own `predict_proba`. Gradient-boosted trees
(`HistGradientBoostingClassifier`, the usual champion) are evaluated here instead, by a
compiled kernel over the same fitted trees, because scikit-learn's evaluator is
memory-bound: it walks all rows once per tree, so with one scoring process per core the
processes starve each other of memory bandwidth (measured on a 2-core VM: 0.34 s per 100k
rows alone, 0.91 s with a second process doing the same). The kernel takes eight rows at a
time through every tree while those rows sit in L1 cache: about 2x faster than
`predict_proba` on one process, 6-7x with one process per core.

Its results are identical to `predict_proba`, bit for bit: it makes the same comparisons
(`value <= threshold` goes left; a missing value goes where the split sent missing values
in training) and adds the leaf values in the same order. That is checked when a model is
first used, on probe rows built from the model's own thresholds; a model that fails the
check, or one with splits the kernel doesn't handle (categorical splits, more than two
classes), is scored by `predict_proba`.

A calibrated model (`components.model.calibration.CalibratedModel`, the last step of the saved
pipeline) is scored the same way: the kernel (or `predict_proba`) gives its estimator's
probability, and its calibrator, a cheap one-dimensional map, is applied after.
"""

import logging
import weakref
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN, DataContract
from components.model.calibration import CalibratedModel
from components.model.features import SMALL_FRAME_ROWS, SmallFramePreprocessor

log = logging.getLogger(__name__)

_BLOCK_ROWS = 8  # rows taken through a tree together; 4 and 16 measured slower
_PROBE_ROWS = 512
_FEATURE_BITS = (1 << 31) - 1
_MISSING_RIGHT_BIT = 1 << 31


def predict_probability(
    model: Pipeline,
    frame: pd.DataFrame,
    contract: DataContract = TELCO_CHURN,
    *,
    calibrated: bool = True,
    preprocessed: np.ndarray | pd.DataFrame | None = None,
) -> np.ndarray:
    """Churn probability per row of a validated frame; with `calibrated=False`, the score
    of a calibrated model's estimator before its calibrator (for the report's comparison).
    `preprocessed`: the frame's rows through `preprocess` already (reason codes need them
    too), so they are not transformed twice."""
    small = small_frame_path(model) if calibrated and len(frame) <= SMALL_FRAME_ROWS else None
    if small is not None and preprocessed is None:
        return small.probability(frame)
    features = frame[contract.feature_names]
    x = preprocessed
    final = model[-1]
    calibration = final if isinstance(final, CalibratedModel) else None
    estimator = calibration.estimator if calibration else final
    trees = compiled_trees(estimator)
    if trees is not None:
        raw = trees.probability(model[:-1].transform(features) if x is None else x)
    elif calibration is not None:
        raw = estimator.predict_proba(model[:-1].transform(features) if x is None else x)[:, 1]
    else:
        return (model.predict_proba(features) if x is None else final.predict_proba(x))[:, 1]
    return calibration.calibrate(raw) if calibration and calibrated else raw


def preprocess(
    model: Pipeline, frame: pd.DataFrame, contract: DataContract = TELCO_CHURN
) -> np.ndarray | pd.DataFrame:
    """The rows of a validated frame as the model's estimator takes them: its pipeline's
    steps before the last (for a few rows, their numpy form, proven equal at load); a
    pipeline of one step takes the frame's feature columns as they are."""
    if len(model) == 1:
        return frame[contract.feature_names]
    small = small_frame_path(model) if len(frame) <= SMALL_FRAME_ROWS else None
    if small is None:
        return np.asarray(model[:-1].transform(frame[contract.feature_names]), dtype=np.float64)
    columns = small.preprocess.transform(frame)
    return small.rest[:-1].transform(columns) if len(small.rest) > 1 else columns


def tree_kernel(model: Pipeline) -> "CompiledTrees | None":
    """The compiled kernel that scores `model`'s trees (behind its calibrator, if it has
    one), or None when `predict_proba` must. Call it before forking workers, so they
    inherit the kernel, or when a server starts, not on its first request."""
    final = model[-1]
    return compiled_trees(final.estimator if isinstance(final, CalibratedModel) else final)


@dataclass(frozen=True)
class SmallFramePath:
    """A model's probabilities for a few rows without `ColumnTransformer`'s pandas work:
    its first step redone by `SmallFramePreprocessor`, then the rest of the pipeline
    (an estimator, a calibrated one, any further steps) on the feature matrix."""

    preprocess: SmallFramePreprocessor
    rest: Pipeline

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        features = self.preprocess.transform(frame)
        trees = compiled_trees(self.rest[-1])
        if trees is None:
            return self.rest.predict_proba(features)[:, 1]
        if len(self.rest) > 1:
            features = self.rest[:-1].transform(features)
        return trees.probability(features)


_SMALL: "weakref.WeakKeyDictionary[object, SmallFramePath | None]" = weakref.WeakKeyDictionary()


def small_frame_path(model: Pipeline) -> SmallFramePath | None:
    """The fast path for few-row frames, or None when the pipeline is not one it knows (a
    preprocessor of another shape) or its output differs from the pipeline's own on probe
    rows. Built and checked once per model object: call it when the model is loaded."""
    if model in _SMALL:
        return _SMALL[model]
    path = None
    try:
        path = SmallFramePath(SmallFramePreprocessor.from_fitted(model[0]), model[1:])
        probe = probe_frame(model[0])
        agree = np.array_equal(
            path.preprocess.transform(probe), model[0].transform(probe)
        ) and np.array_equal(path.probability(probe), model.predict_proba(probe)[:, 1])
    except Exception as error:  # whatever fails here, the pipeline itself still scores
        log.info("few-row frames scored by the whole pipeline: %s", error)
        path = None
    else:
        if not agree:
            log.warning(
                "the few-row preprocessing disagrees with this scikit-learn's "
                "ColumnTransformer; scoring few-row frames with the whole pipeline"
            )
            path = None
    _SMALL[model] = path
    return path


def probe_frame(step: ColumnTransformer, rows: int = _PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like serving-mode `validate` output, for the fitted preprocessor `step`:
    numbers around each column's statistics with missing ones; every learned category, a
    missing value and an unseen one in each category column, as Categorical and as
    object columns (a frame concatenated from chunks holds the latter)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for _, transformer, names in step.transformers_:
        if transformer == "drop":
            continue
        categories = getattr(transformer, "categories_", None)
        for j, name in enumerate(names):
            if categories is None:
                values = rng.normal(size=rows) * 10.0 ** rng.integers(-2, 4, size=rows)
                values[rng.random(rows) < 0.1] = np.nan
                values[rng.random(rows) < 0.1] = 0.0
                columns[name] = values
                continue
            known = [c for c in categories[j] if not pd.isna(c)]
            choices = np.array([*known, None, "unseen probe value"], dtype=object)
            values = rng.choice(choices, size=rows)
            columns[name] = pd.Categorical(values) if j % 2 == 0 else values
    return pd.DataFrame(columns)[list(step.feature_names_in_)]


@dataclass(frozen=True)
class CompiledTrees:
    """A binary gradient-boosting ensemble as flat node arrays, all trees end to end.

    Nodes are renumbered so that a node's right child follows its left child, and each
    node's split is packed into one integer, `left << 32 | missing_right << 31 | feature`
    (one load per step instead of three). Node `i` sends a row to `left + 1` when its
    `feature` value is over `threshold[i]`, or is missing and `missing_right`; otherwise
    to `left`. Leaves point to themselves (threshold +inf), so every row takes exactly
    `depth[t]` steps through tree `t` and the kernel needs no branch to stop.
    """

    baseline: float
    split: np.ndarray  # int64 per node, packed as above
    threshold: np.ndarray  # float64 per node
    value: np.ndarray  # float64 per node (leaves' values are what counts)
    root: np.ndarray  # int64 per tree
    depth: np.ndarray  # int64 per tree
    # Training rows (weighted) that reached each node: what `components.model.reasons`
    # averages leaf values by, for the path attributions of each score.
    cover: np.ndarray | None = None

    @classmethod
    def from_estimator(cls, estimator: HistGradientBoostingClassifier) -> "CompiledTrees":
        """Flatten a fitted binary `HistGradientBoostingClassifier` (its `_predictors`, the
        one tree per boosting iteration that `predict_proba` walks)."""
        if estimator.n_trees_per_iteration_ != 1:
            raise ValueError("more than two classes")
        if estimator._preprocessor is not None:
            raise ValueError("categorical features encoded inside the estimator")
        trees = [predictors[0].nodes for predictors in estimator._predictors]
        if any(tree["is_categorical"].any() for tree in trees):
            raise ValueError("categorical splits")
        return cls.from_nodes(trees, float(np.ravel(estimator._baseline_prediction)[0]))

    @classmethod
    def from_nodes(cls, trees: list[np.ndarray], baseline: float) -> "CompiledTrees":
        """Flatten trees given as scikit-learn's gradient-boosting node records (fields
        `is_leaf`, `left`, `right`, `feature_idx`, `num_threshold`, `missing_go_to_left`,
        `value`, `count`, `depth`), whose leaf values add up, after `baseline`, to the
        raw score."""
        renumbered, left, root = [], [], []
        for tree in trees:
            root.append(len(left))
            position = {0: root[-1]}  # old node number -> new
            queue = [0]
            for old in queue:  # breadth first, siblings side by side
                if not tree[old]["is_leaf"]:
                    for child in (int(tree[old]["left"]), int(tree[old]["right"])):
                        position[child] = root[-1] + len(queue)
                        queue.append(child)
            renumbered.append(tree[queue])
            # A leaf's left child is itself, so rows stay on it.
            left += [position[int(tree[n]["left"]) if not tree[n]["is_leaf"] else n] for n in queue]
        flat = np.concatenate(renumbered)
        leaf = flat["is_leaf"].astype(bool)
        missing_right = ~leaf & ~flat["missing_go_to_left"].astype(bool)
        feature = np.where(leaf, 0, flat["feature_idx"]).astype(np.int64)
        return cls(
            baseline=baseline,
            split=(np.array(left, dtype=np.int64) << 32)
            | (missing_right.astype(np.int64) << 31)
            | feature,
            threshold=np.where(leaf, np.inf, flat["num_threshold"]),
            value=flat["value"].astype(np.float64),
            root=np.array(root, dtype=np.int64),
            depth=np.array([tree["depth"].max() for tree in trees], dtype=np.int64),
            cover=flat["count"].astype(np.float64),
        )

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(churn) for each row of the preprocessed feature matrix."""
        features = np.ascontiguousarray(features, dtype=np.float64)
        raw = _raw_scores(
            features,
            bool(np.isnan(features).any()),
            self.baseline,
            self.split,
            self.threshold,
            self.value,
            self.root,
            self.depth,
        )
        return expit(raw)

    def probe(self, n_features: int, seed: int = 0) -> np.ndarray:
        """Rows with values drawn from on, just under and just over the trees' own
        thresholds, and missing ones, so the comparisons' edge cases come up (a split that
        only separates missing values has threshold +inf)."""
        rng = np.random.default_rng(seed)
        is_split = (self.split >> 32) != np.arange(len(self.split))  # leaves point to themselves
        feature = self.split & _FEATURE_BITS
        probe = rng.normal(size=(_PROBE_ROWS, n_features))
        for column in np.unique(feature[is_split]):
            values = self.threshold[is_split & (feature == column)]
            values = np.concatenate(
                [values, np.nextafter(values, -np.inf), np.nextafter(values, np.inf), [np.nan]]
            )
            probe[:, column] = rng.choice(values, size=_PROBE_ROWS)
        return probe


_COMPILED: "weakref.WeakKeyDictionary[object, CompiledTrees | None]" = weakref.WeakKeyDictionary()


def compiled_trees(estimator: object) -> CompiledTrees | None:
    """The kernel's form of `estimator`, or None when `predict_proba` must score it.
    Built and checked once per estimator object; call it before forking workers so they
    inherit the compiled kernel."""
    if estimator in _COMPILED:
        return _COMPILED[estimator]
    trees = None
    if isinstance(estimator, HistGradientBoostingClassifier):
        try:
            trees = CompiledTrees.from_estimator(estimator)
            probe = trees.probe(estimator.n_features_in_)
            agree = np.array_equal(trees.probability(probe), estimator.predict_proba(probe)[:, 1])
        except Exception as error:  # whatever fails here, predict_proba still scores
            log.info("gradient boosting scored by scikit-learn's predict_proba: %s", error)
            trees = None
        else:
            if not agree:
                log.warning(
                    "compiled trees disagree with this scikit-learn's predict_proba; "
                    "scoring with predict_proba"
                )
                trees = None
    _COMPILED[estimator] = trees
    return trees


@numba.njit(nogil=True, cache=True)
def _raw_scores(x, has_missing, baseline, split, threshold, value, root, depth):
    n = x.shape[0]
    out = np.empty(n)
    node = np.empty(_BLOCK_ROWS, np.int64)
    total = np.empty(_BLOCK_ROWS)
    for start in range(0, n, _BLOCK_ROWS):
        count = min(_BLOCK_ROWS, n - start)
        total[:] = baseline
        for tree in range(root.shape[0]):
            node[:] = root[tree]
            for _ in range(depth[tree]):
                for j in range(_BLOCK_ROWS):
                    row = min(start + j, n - 1)  # a short last block repeats its last row
                    k = node[j]
                    packed = split[k]
                    v = x[row, packed & _FEATURE_BITS]
                    right = v > threshold[k]
                    if has_missing:  # loop-invariant: compiled as two loops, one without
                        right |= (v != v) & (packed & _MISSING_RIGHT_BIT != 0)
                    node[j] = (packed >> 32) + right
            for j in range(_BLOCK_ROWS):
                total[j] += value[node[j]]
        out[start : start + count] = total[:count]
    return out


if __name__ == "__main__":
    # `python -m components.model.predict`: compile the kernel into numba's cache (image builds).
    from sklearn.ensemble import HistGradientBoostingClassifier as _Trees

    _tiny = np.array([[0.0], [1.0], [2.0], [3.0]])
    if compiled_trees(_Trees(max_iter=2, min_samples_leaf=1).fit(_tiny, [0, 0, 1, 1])) is None:
        raise SystemExit("the tree kernel did not compile")
