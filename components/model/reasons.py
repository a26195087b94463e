"""Why a customer's score is what it is: per-feature contributions that add up exactly.

For each customer and each original feature of the data contract (one-hot columns summed
back to their feature), a contribution in probability, such that

    baseline_probability + sum of the contributions == the published probability

(to rounding, far inside 1e-6). The published probability is the calibrated one, so the
attributions are made on the estimator's raw score and carried through the calibrator:

1. Raw attributions, additive on the estimator's raw score `r` (log-odds for gradient
   boosting and logistic regression, probability for forests and neighbours):
   `r(x) = r0 + sum_j a_j(x)`, with `r0` a constant of the model.
   - Tree families (gradient boosting, random and extra trees): path attributions (Saabas)
     on the project's compiled tree kernel (`components.model.predict.CompiledTrees`).
     Each node's expected value is the training-cover-weighted mean of its leaves; each
     split on a row's path credits its feature with the change in expected value from the
     node to the child the row takes. Along a path these telescope to the leaf's value, so
     the sum over trees is the raw score exactly; `r0` is the sum of the roots' expected
     values (the ensemble's mean training score). These are not Shapley values: a split's
     credit depends on where it sits in the tree. `shap`'s TreeExplainer (path-dependent
     Shapley values) was weighed against them (`bench/bench_reasons.py`): both add up
     exactly, they mostly name the same strongest feature, and the kernel is fast enough
     for reasons on every scoring run where shap's tree walker is not, so the kernel is
     kept and shap is not a dependency.
   - Logistic regression: its linear terms, `w_i * (x_i - ref_i)` on the preprocessed
     columns, against a reference customer: numbers at their training mean (0 after the
     scaler), each category column at 1/k (the mean of its k categories' weights, as the
     model keeps no category frequencies). `r0` is the margin at that reference.
   - k-nearest neighbours (and any estimator not above): a bounded model-agnostic method,
     Shapley permutation sampling against one reference customer (numbers at the mean and
     each category at its most common value among the model's stored training rows), with
     one fixed permutation of the features and its reverse: 2 x (features) model calls per
     customer, whatever the data. Each permutation's changes telescope from `r(ref)` to
     `r(x)`, so the average is exactly additive; the antithetic pair makes it exact Shapley
     values for models whose features interact at most in pairs.
2. Through the calibrator: with `p = calibrate(link(r))` the published probability and
   `p0 = calibrate(link(r0))` the baseline, each raw attribution is scaled by the same
   factor `(p - p0) / (r - r0)`, the calibrated change per unit of raw score along the
   straight line from the baseline to the customer. Because the link and the calibrator are
   monotone, every contribution keeps its sign, their ranking is the raw ranking, and the
   contributions add up to `p - p0` by construction. (A customer whose raw score is the
   baseline's gets no contributions: nothing moved the score.)

Scoring, serving and Vertex batch prediction all call `explain` on the same validated rows
and the same saved model, so they give the same numbers.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN, DataContract
from components.model.calibration import CalibratedModel
from components.model.predict import (
    _BLOCK_ROWS,
    _FEATURE_BITS,
    _MISSING_RIGHT_BIT,
    CompiledTrees,
    compiled_trees,
    predict_probability,
    preprocess,
    probe_frame,
)

log = logging.getLogger(__name__)

# The largest gap allowed, on probe rows, between the score an attribution method explains
# and the model's own: past it the method does not describe this model and the sampler is
# used instead.
_AGREEMENT = 1e-9


@dataclass(frozen=True)
class Attributions:
    """Contributions of each original feature to each row's published probability."""

    features: list[str]
    baseline: float  # the published (calibrated) probability of the reference
    probability: np.ndarray  # per row: the published probability explained
    effects: np.ndarray  # rows x features, in probability; rows add up to probability - baseline


@dataclass(frozen=True)
class _Explainer:
    """How one saved model's raw score is split over its preprocessed columns."""

    method: str  # "tree paths", "linear terms" or "permutation sampling"
    raw: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # x -> (raw, feature effects)
    raw_baseline: float
    link: Callable[[np.ndarray], np.ndarray]  # raw score -> the estimator's probability


def explain(
    model: Pipeline,
    frame: pd.DataFrame,
    contract: DataContract = TELCO_CHURN,
    *,
    probability: np.ndarray | None = None,
    preprocessed: np.ndarray | None = None,
) -> Attributions:
    """Attributions for each row of a validated frame; `probability` is its published
    probability and `preprocessed` its rows through `predict.preprocess`, when the caller
    has them already."""
    if preprocessed is None:
        preprocessed = preprocess(model, frame, contract)
    if probability is None:
        probability = predict_probability(model, frame, contract)
    explainer = _explainer(model)
    raw, raw_effects = explainer.raw(np.asarray(preprocessed, dtype=np.float64))
    features = _column_groups(model)[1]
    baseline = float(_calibrated(model, explainer.link(np.array([explainer.raw_baseline])))[0])
    moved = raw - explainer.raw_baseline
    scale = np.divide(
        probability - baseline, moved, out=np.zeros_like(moved), where=np.abs(moved) > 1e-12
    )
    return Attributions(features, baseline, probability, raw_effects * scale[:, None])


def method(model: Pipeline) -> str:
    """How `model`'s scores are explained (for reports): see the module docstring."""
    return _explainer(model).method


def prepare(model: Pipeline) -> None:
    """Build and check `model`'s explainer now (at load, before forking workers); a model
    of a shape it does not know (not `Pipeline(ColumnTransformer, estimator)`) fails
    when it is asked for reasons, not here."""
    try:
        _explainer(model)
    except Exception as error:
        log.info("no explainer for this model: %s", error)


def _estimator(model: Pipeline) -> object:
    final = model[-1]
    return final.estimator if isinstance(final, CalibratedModel) else final


def _calibrated(model: Pipeline, estimator_probability: np.ndarray) -> np.ndarray:
    final = model[-1]
    if isinstance(final, CalibratedModel):
        return final.calibrate(estimator_probability)
    return estimator_probability


def _column_groups(model: Pipeline) -> tuple[np.ndarray, list[str]]:
    """For the fitted `ColumnTransformer` first step: each output column's input feature."""
    step = model[0]
    features: list[str] = []
    groups: list[int] = []
    for _, transformer, names in step.transformers_:
        if transformer == "drop" or not len(names):
            continue
        categories = getattr(transformer, "categories_", None)
        for j, name in enumerate(names):
            features.append(name)
            width = 1 if categories is None else len(categories[j])
            groups += [len(features) - 1] * width
    return np.array(groups, dtype=np.int64), features


_EXPLAINERS: weakref.WeakKeyDictionary[object, _Explainer] = weakref.WeakKeyDictionary()


def _explainer(model: Pipeline) -> _Explainer:
    if model in _EXPLAINERS:
        return _EXPLAINERS[model]
    estimator = _estimator(model)
    explainer = None
    try:
        probe = np.asarray(model[:-1].transform(probe_frame(model[0])), dtype=np.float64)
        explainer = _exact_explainer(model, estimator)
        if explainer is not None:
            raw, effects = explainer.raw(probe)
            expected = estimator.predict_proba(probe)[:, 1]
            agree = np.allclose(explainer.link(raw), expected, rtol=0, atol=_AGREEMENT)
            adds_up = np.allclose(
                effects.sum(axis=1), raw - explainer.raw_baseline, rtol=0, atol=_AGREEMENT
            )
            if not (agree and adds_up):
                log.warning(
                    "%s attributions do not reproduce this %s's scores; explaining by "
                    "permutation sampling",
                    explainer.method,
                    type(estimator).__name__,
                )
                explainer = None
    except Exception as error:  # whatever fails here, the sampler still explains
        log.info("scores explained by permutation sampling: %s", error)
        explainer = None
    if explainer is None:
        explainer = _sampling_explainer(model, estimator)
    _EXPLAINERS[model] = explainer
    return explainer


def _exact_explainer(model: Pipeline, estimator: object) -> _Explainer | None:
    groups, _ = _column_groups(model)
    if isinstance(estimator, LogisticRegression):
        return _linear_explainer(estimator, _reference(model, estimator), groups)
    trees = compiled_trees(estimator)
    if trees is not None:
        return _tree_explainer(trees, expit, groups)
    if isinstance(estimator, RandomForestClassifier | ExtraTreesClassifier):
        # scikit-learn's trees compare float32 values: round the features as they do.
        forest = forest_trees(estimator)
        explainer = _tree_explainer(forest, lambda raw: raw, groups)
        return _Explainer(
            explainer.method,
            lambda x: explainer.raw(x.astype(np.float32).astype(np.float64)),
            explainer.raw_baseline,
            explainer.link,
        )
    return None


def _tree_explainer(
    trees: CompiledTrees, link: Callable[[np.ndarray], np.ndarray], groups: np.ndarray
) -> _Explainer:
    """Path attributions; `groups[c]`: the feature column `c` of the trees' input belongs to."""
    expected = node_expectations(trees)
    leaf_row, paths = _leaf_paths(trees, expected, groups)

    def raw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        return _path_attributions(
            x,
            bool(np.isnan(x).any()),
            trees.baseline,
            trees.split,
            trees.threshold,
            trees.value,
            leaf_row,
            paths,
            trees.root,
            trees.depth,
        )

    return _Explainer("tree paths", raw, trees.baseline + float(expected[trees.root].sum()), link)


def _leaf_paths(
    trees: CompiledTrees, expected: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each leaf's path attributions, the same for every row that reaches it: row
    `leaf_row[leaf]` of `paths` (leaves x features) holds, per feature, the changes in
    expected value the splits on its path credit to that feature. Adding a leaf's row
    costs the kernel less than crediting each step as it walks, for a table of leaves x
    features numbers kept with the explainer (`leaf_row` is -1 for splits)."""
    left = trees.split >> 32
    node = np.arange(len(left))
    split = left != node
    parent = np.full(len(left), -1, dtype=np.int64)
    parent[left[split]] = parent[left[split] + 1] = node[split]
    leaves = np.flatnonzero(~split)
    leaf_row = np.full(len(left), -1, dtype=np.int64)
    leaf_row[leaves] = np.arange(len(leaves))
    credited = groups[trees.split & _FEATURE_BITS]
    paths = np.zeros((len(leaves), int(groups.max()) + 1))
    rows, at = np.arange(len(leaves)), leaves
    while len(at):  # every leaf a step up at a time, to its tree's root
        above = parent[at]
        up = above >= 0
        rows, at, above = rows[up], at[up], above[up]
        # Each leaf is one row: no (row, feature) pair comes up twice in one step.
        paths[rows, credited[above]] += expected[at] - expected[above]
        at = above
    return leaf_row, paths


def node_expectations(trees: CompiledTrees) -> np.ndarray:
    """Each node's expected value: a leaf's value; a split's, its children's mean weighted
    by the training rows (cover) that reached each. Children follow their parents in the
    compiled order, so one backward pass fills them."""
    if trees.cover is None:
        raise ValueError("compiled trees without node cover")
    expected = trees.value.copy()
    left = trees.split >> 32
    for node in range(len(expected) - 1, -1, -1):
        child = left[node]
        if child != node:  # leaves point to themselves
            weight = trees.cover[child] + trees.cover[child + 1]
            if weight > 0:
                expected[node] = (
                    trees.cover[child] * expected[child]
                    + trees.cover[child + 1] * expected[child + 1]
                ) / weight
    return expected


_FOREST_NODE = np.dtype(
    [
        ("value", "<f8"),
        ("count", "<f8"),
        ("feature_idx", "<i8"),
        ("num_threshold", "<f8"),
        ("missing_go_to_left", "u1"),
        ("left", "<u4"),
        ("right", "<u4"),
        ("depth", "<u4"),
        ("is_leaf", "u1"),
    ]
)


def forest_trees(forest: RandomForestClassifier | ExtraTreesClassifier) -> CompiledTrees:
    """A binary random or extra-trees forest in the kernel's form: each tree's leaves hold
    their P(churn) divided by the number of trees, so the raw score is `predict_proba`'s
    average (the columns' values rounded to float32 first, as the trees compare them)."""
    if len(forest.classes_) != 2:
        raise ValueError("more than two classes")
    trees = []
    count = len(forest.estimators_)
    for member in forest.estimators_:
        tree = member.tree_
        nodes = np.zeros(tree.node_count, dtype=_FOREST_NODE)
        leaf = tree.children_left < 0
        value = tree.value[:, 0, :]
        nodes["value"] = value[:, 1] / value.sum(axis=1) / count
        nodes["count"] = tree.weighted_n_node_samples
        nodes["feature_idx"] = np.where(leaf, 0, tree.feature)
        nodes["num_threshold"] = tree.threshold
        missing_left = getattr(tree, "missing_go_to_left", np.ones(tree.node_count))
        nodes["missing_go_to_left"] = missing_left
        nodes["left"] = np.where(leaf, 0, tree.children_left)
        nodes["right"] = np.where(leaf, 0, tree.children_right)
        nodes["is_leaf"] = leaf
        depth = np.zeros(tree.node_count, dtype=np.int64)
        for node in range(tree.node_count):  # parents come before their children
            if not leaf[node]:
                depth[tree.children_left[node]] = depth[tree.children_right[node]] = depth[node] + 1
        nodes["depth"] = depth
        trees.append(nodes)
    return CompiledTrees.from_nodes(trees, 0.0)


def _linear_explainer(
    estimator: LogisticRegression, reference: np.ndarray, groups: np.ndarray
) -> _Explainer | None:
    if estimator.coef_.shape[0] != 1:
        return None
    weights = estimator.coef_[0].astype(np.float64)
    intercept = float(estimator.intercept_[0])
    membership = (groups[:, None] == np.arange(groups.max() + 1)).astype(np.float64)

    def raw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One-hot columns' terms summed back to their feature by the 0/1 membership matrix.
        return x @ weights + intercept, ((x - reference) * weights) @ membership

    return _Explainer("linear terms", raw, float(reference @ weights + intercept), expit)


def _reference(model: Pipeline, estimator: object) -> np.ndarray:
    """The reference customer in the estimator's columns: numbers at their training mean
    (the scaler's 0, or the mean of the rows a neighbours model stores) and each category
    at its most common value among stored rows, else at 1/k in each of its k columns."""
    groups, _ = _column_groups(model)
    categorical = _categorical_columns(model)
    stored = getattr(estimator, "_fit_X", None)
    reference = np.zeros(len(groups))
    if isinstance(stored, np.ndarray) and stored.shape[1] == len(groups):
        means = stored.mean(axis=0)
        reference[~categorical] = means[~categorical]
        for group in np.unique(groups[categorical]):
            columns = np.flatnonzero((groups == group) & categorical)
            reference[columns[np.argmax(means[columns])]] = 1.0
        return reference
    for group in np.unique(groups[categorical]):
        columns = np.flatnonzero((groups == group) & categorical)
        reference[columns] = 1.0 / len(columns)
    return reference


def _categorical_columns(model: Pipeline) -> np.ndarray:
    """Which of the preprocessed columns are one-hot category columns."""
    flags: list[bool] = []
    for _, transformer, names in model[0].transformers_:
        if transformer == "drop" or not len(names):
            continue
        categories = getattr(transformer, "categories_", None)
        for j in range(len(names)):
            flags += [False] if categories is None else [True] * len(categories[j])
    return np.array(flags, dtype=bool)


# Rows explained per call of the estimator by the sampler (each becomes 2 x features rows).
_SAMPLER_ROWS = 2_000


def _sampling_explainer(model: Pipeline, estimator: object) -> _Explainer:
    """Shapley permutation sampling with one fixed permutation and its reverse: see the
    module docstring."""
    reference = _reference(model, estimator)
    groups, features = _column_groups(model)
    order = np.random.default_rng(0).permutation(len(features))
    masks = []  # per permutation, per step: which columns come from the customer
    for permutation in (order, order[::-1]):
        taken = np.zeros(len(groups), dtype=bool)
        steps = []
        for feature in permutation:
            taken = taken | (groups == feature)
            steps.append(taken)
        masks.append((permutation, np.array(steps)))

    def score(x: np.ndarray) -> np.ndarray:
        return estimator.predict_proba(x)[:, 1]

    raw_baseline = float(score(reference[None, :])[0])

    def raw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, width = x.shape
        effects = np.zeros((n, len(features)))
        raw_score = np.empty(n)
        for start in range(0, n, _SAMPLER_ROWS):
            rows = x[start : start + _SAMPLER_ROWS]
            for permutation, steps in masks:
                # rows x steps x columns: step s has the first s+1 features of the customer.
                mixed = np.where(steps[None, :, :], rows[:, None, :], reference[None, None, :])
                scores = score(mixed.reshape(-1, width)).reshape(len(rows), len(steps))
                before = np.column_stack([np.full(len(rows), raw_baseline), scores[:, :-1]])
                change = (scores - before) / len(masks)
                effects[start : start + len(rows), permutation] += change
                raw_score[start : start + len(rows)] = scores[:, -1]
        return raw_score, effects

    return _Explainer("permutation sampling", raw, raw_baseline, lambda raw: raw)


@numba.njit(nogil=True, cache=True)
def _path_attributions(
    x, has_missing, baseline, split, threshold, value, leaf_row, paths, root, depth
):
    """Each row's raw score (the leaves' values added after `baseline`, in tree order, as
    `predict._raw_scores` adds them) and its path attributions per feature: the sum of the
    `paths` rows (`_leaf_paths`) of the leaves it reaches. Rows go through each tree a
    block at a time, as in `_raw_scores`, while the tree's nodes are in cache."""
    n = x.shape[0]
    width = paths.shape[1]
    raw = np.empty(n)
    effects = np.empty((n, width))
    node = np.empty(_BLOCK_ROWS, np.int64)
    total = np.empty(_BLOCK_ROWS)
    block = np.empty((_BLOCK_ROWS, width))  # the block's attributions, in L1 cache
    for start in range(0, n, _BLOCK_ROWS):
        count = min(_BLOCK_ROWS, n - start)
        total[:] = baseline
        block[:] = 0.0
        for tree in range(root.shape[0]):
            node[:] = root[tree]
            for _ in range(depth[tree]):
                for j in range(_BLOCK_ROWS):
                    row = min(start + j, n - 1)  # a short last block repeats its last row
                    k = node[j]
                    packed = split[k]
                    v = x[row, packed & _FEATURE_BITS]
                    right = v > threshold[k]
                    if has_missing:
                        right |= (v != v) & (packed & _MISSING_RIGHT_BIT != 0)
                    node[j] = (packed >> 32) + np.int64(right)
            for j in range(_BLOCK_ROWS):
                total[j] += value[node[j]]
                path = leaf_row[node[j]]
                for f in range(width):
                    block[j, f] += paths[path, f]
        raw[start : start + count] = total[:count]
        effects[start : start + count] = block[:count]
    return raw, effects


def global_importance(
    model: Pipeline, frame: pd.DataFrame, contract: DataContract = TELCO_CHURN
) -> dict[str, float]:
    """Each feature's mean absolute contribution to the published probability over the
    rows of `frame` (the same attributions as the reason codes), largest first."""
    explained = explain(model, frame, contract)
    mean = (
        np.abs(explained.effects).mean(axis=0) if len(frame) else np.zeros(len(explained.features))
    )
    ranked = sorted(zip(explained.features, mean, strict=True), key=lambda kv: -kv[1])
    return {name: round(float(value), 5) for name, value in ranked}
