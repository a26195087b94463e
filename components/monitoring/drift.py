"""Input drift: how far today's customers have moved from those the champion learned from.

A model is only as good as the resemblance between the customers it scores and the ones it
was trained on. This module measures that resemblance per feature with the population
stability index (PSI) and flags features (and the score distribution) that moved further
than the `drift_threshold` setting.

The reference side is a compact **profile** saved next to the model when it is registered:
bucket edges and shares per feature plus a small sample for plots. Scoring never needs the
training table itself (which may be gone, or in another project), and the profile is a few
hundred kilobytes of JSON, not a pickle.

The current side is a `DriftTally`: bucket counts added chunk by chunk while scoring
streams, so it costs no memory however many customers are scored, and tallies of separate
chunks merge exactly.
"""

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.contract import TELCO_CHURN, DataContract

PROFILE_FILE = "reference_profile.json"
SCORE = "churn_probability"
UNSEEN = "(unseen)"
MISSING = "(missing)"
# An empty bucket would make PSI infinite; this floor (0.01% of rows) keeps one new
# category or one empty decile from dominating every other feature.
SHARE_FLOOR = 1e-4


@dataclass(frozen=True)
class Buckets:
    """How one feature is bucketed: numeric values by `edges` (from the reference deciles),
    categories by name; then, for categories, an `(unseen)` bucket; always a `(missing)` one.
    """

    name: str
    kind: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        if self.kind == "numeric":
            return len(self.edges) + 2  # below/between/above the edges, then missing
        return len(self.categories) + 2  # categories, unseen, missing

    def labels(self) -> list[str]:
        if self.kind == "categorical":
            return [*self.categories, UNSEEN, MISSING]
        if not self.edges:
            return ["all values", MISSING]
        bounds = [f"{e:g}" for e in self.edges]
        inner = [f"[{low}, {high})" for low, high in itertools.pairwise(bounds)]
        return [f"< {bounds[0]}", *inner, f">= {bounds[-1]}", MISSING]

    def count(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Rows per bucket."""
        if self.kind == "numeric":
            if pd.api.types.is_float_dtype(getattr(values, "dtype", None)):
                numbers = np.asarray(values, dtype=float)  # validated: already numbers
            else:
                numbers = np.asarray(pd.to_numeric(values, errors="coerce"), dtype=float)
            missing = np.isnan(numbers)
            index = np.searchsorted(np.asarray(self.edges), numbers, side="right")
            index[missing] = self.size - 1
            return np.bincount(index, minlength=self.size)
        # Count each distinct value once (by its code, when the column is categorical),
        # then place the few distinct ones in Python.
        counts = np.zeros(self.size, dtype=np.int64)
        position = {category: i for i, category in enumerate(self.categories)}
        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
        if isinstance(series.dtype, pd.CategoricalDtype):  # rows per code, -1 (missing) first
            categories = [None, *series.cat.categories]
            per_code = np.bincount(series.cat.codes.to_numpy() + 1, minlength=len(categories))
            distinct = zip(categories, per_code, strict=True)
        else:
            distinct = series.value_counts(dropna=False).items()
        for value, count in distinct:
            if _is_missing(value):
                counts[-1] += count
            else:
                counts[position.get(value, len(self.categories))] += count
        return counts


@dataclass
class ReferenceProfile:
    """The champion's training data in summary: bucket shares per feature and of its scores,
    plus a small sample of rows for the report's plots."""

    buckets: list[Buckets]
    shares: dict[str, list[float]]
    rows: int
    sample: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "buckets": [asdict(b) for b in self.buckets],
                "shares": self.shares,
                "rows": self.rows,
                "sample": self.sample,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "ReferenceProfile":
        data = json.loads(text)
        buckets = [
            Buckets(b["name"], b["kind"], tuple(b["edges"]), tuple(b["categories"]))
            for b in data["buckets"]
        ]
        return cls(buckets, data["shares"], int(data["rows"]), data.get("sample", {}))


def reference_profile(
    features: pd.DataFrame,
    scores: np.ndarray,
    *,
    contract: DataContract = TELCO_CHURN,
    n_bins: int = 10,
    sample_rows: int = 2_000,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile validated training rows (`features`, contract column names) and the model's
    churn probabilities on held-out rows (`scores`: training-set scores of a flexible model
    are over-confident, so they would make every honest scoring day look drifted)."""
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    scores = np.asarray(scores, dtype=float)
    buckets = [
        Buckets(column.name, "numeric", edges=_decile_edges(features[column.name], quantiles))
        for column in contract.numeric
    ]
    buckets += [
        Buckets(column.name, "categorical", categories=column.categories)
        for column in contract.categorical
    ]
    buckets.append(Buckets(SCORE, "numeric", edges=_decile_edges(scores, quantiles)))
    shares = {}
    for bucket in buckets:
        counts = bucket.count(scores if bucket.name == SCORE else features[bucket.name])
        shares[bucket.name] = (counts / max(counts.sum(), 1)).tolist()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(features), size=min(sample_rows, len(features)), replace=False)
    sample = _sample_lists(features.iloc[np.sort(rows)][contract.feature_names])
    sample[SCORE] = rng.choice(scores, size=min(sample_rows, len(scores)), replace=False).tolist()
    return ReferenceProfile(buckets, shares, len(features), sample)


def _decile_edges(values: pd.Series | np.ndarray, quantiles: np.ndarray) -> tuple[float, ...]:
    """Bucket edges at the reference quantiles; repeated edges (a 0/1 flag, a popular
    value) collapse into one, so no bucket is empty by construction."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(float)
    if not len(numbers):
        return ()
    return tuple(float(e) for e in np.unique(np.quantile(numbers, quantiles)))


def _sample_lists(sample: pd.DataFrame) -> dict[str, list]:
    """JSON-ready columns, with None for missing values (JSON has no NaN)."""
    return {
        name: [None if _is_missing(v) else v for v in sample[name].tolist()]
        for name in sample.columns
    }


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def save_profile(profile: ReferenceProfile, model_directory: Path) -> Path:
    """Write the profile beside a model file (a registry version's directory)."""
    path = Path(model_directory) / PROFILE_FILE
    path.write_text(profile.to_json(), encoding="utf-8")
    return path


def load_profile(model_directory: Path) -> ReferenceProfile | None:
    """The profile saved beside a model, or None for models registered without one; a
    damaged one is refused naming the file and the field (RegistryError)."""
    from components.registry.model_files import read_json

    path = Path(model_directory) / PROFILE_FILE
    if not path.exists():
        return None
    data = read_json(path, "reference profile")
    _check_profile(data, path)
    return ReferenceProfile.from_json(path.read_text(encoding="utf-8"))


def _check_profile(data: Any, path: Path) -> None:
    """Refuse a profile that is not what `ReferenceProfile.to_json` writes."""
    from components.errors import RegistryError
    from components.registry.model_files import json_value_shown

    def number(value: Any) -> bool:
        return type(value) in (int, float) and math.isfinite(value)

    def require(ok: bool, field: str, value: Any, expected: str) -> None:
        if not ok:
            raise RegistryError(
                f"{path}: field `{field}` is {json_value_shown(value)}, expected {expected}: "
                "the reference profile is damaged"
            )

    require(isinstance(data, dict), "(the whole file)", data, "an object")
    buckets, shares = data.get("buckets"), data.get("shares")
    require(isinstance(buckets, list) and bool(buckets), "buckets", buckets, "a list")
    require(isinstance(shares, dict), "shares", shares, "an object")
    rows = data.get("rows")
    require(type(rows) is int and rows > 0, "rows", rows, "a whole number above 0")
    require(isinstance(data.get("sample", {}), dict), "sample", data.get("sample"), "an object")
    for i, bucket in enumerate(buckets):
        where = f"buckets[{i}]"
        require(isinstance(bucket, dict), where, bucket, "an object")
        name, kind = bucket.get("name"), bucket.get("kind")
        require(isinstance(name, str), f"{where}.name", name, "text")
        require(kind in ("numeric", "categorical"), f"{where}.kind", kind, "numeric|categorical")
        edges, categories = bucket.get("edges"), bucket.get("categories")
        require(
            isinstance(edges, list) and all(map(number, edges)) and edges == sorted(edges),
            f"{where}.edges",
            edges,
            "a list of numbers in order",
        )
        require(
            isinstance(categories, list) and all(isinstance(c, str) for c in categories),
            f"{where}.categories",
            categories,
            "a list of texts",
        )
        size = Buckets(name, kind, tuple(edges), tuple(categories)).size
        share = shares.get(name)
        require(
            isinstance(share, list) and len(share) == size and all(map(number, share)),
            f"shares.{name}",
            share,
            f"a list of {size} numbers (one per bucket)",
        )


@dataclass
class DriftTally:
    """Bucket counts of the scored customers, plus a uniform random sample of them for
    the report's plots, built chunk by chunk in bounded memory."""

    buckets: list[Buckets]
    counts: dict[str, np.ndarray]
    sample: pd.DataFrame
    sample_rows: int = 2_000

    @classmethod
    def empty(cls, profile: ReferenceProfile, sample_rows: int = 2_000) -> "DriftTally":
        counts = {b.name: np.zeros(b.size, dtype=np.int64) for b in profile.buckets}
        return cls(profile.buckets, counts, pd.DataFrame(), sample_rows)

    def add(self, features: pd.DataFrame, scores: np.ndarray, rng: np.random.Generator) -> None:
        """Count one chunk of validated rows and their scores."""
        for bucket in self.buckets:
            values = scores if bucket.name == SCORE else features[bucket.name]
            self.counts[bucket.name] += bucket.count(values)
        # Sampling by random keys: the rows with the smallest keys over all chunks are a
        # uniform sample of the whole stream, and two such samples merge into a third.
        keys = rng.random(len(features))
        if len(keys) > self.sample_rows:
            keep = np.argpartition(keys, self.sample_rows)[: self.sample_rows]
        else:
            keep = np.arange(len(keys))
        names = [b.name for b in self.buckets if b.name != SCORE]
        chunk = features.iloc[keep][names].assign(**{SCORE: scores[keep], "_key": keys[keep]})
        # Plain values: merging categoricals whose categories differ between chunks would
        # re-encode both sides on every merge (the sample is written as JSON lists anyway).
        categorical = [n for n in names if isinstance(chunk[n].dtype, pd.CategoricalDtype)]
        chunk = chunk.astype(dict.fromkeys(categorical, object))
        self._keep_smallest(chunk.reset_index(drop=True))

    def merge(self, other: "DriftTally") -> None:
        """Add another tally's counts and sample (of other rows of the same input)."""
        for name, counts in other.counts.items():
            self.counts[name] += counts
        self._keep_smallest(other.sample)

    def _keep_smallest(self, rows: pd.DataFrame) -> None:
        if rows.empty:  # a chunk with no valid row has no sample (not even its columns)
            return
        if len(self.sample) >= self.sample_rows:  # full: only smaller keys can get in
            rows = rows[rows["_key"].to_numpy() < self.sample["_key"].max()]
            if rows.empty:
                return
        combined = rows if self.sample.empty else pd.concat([self.sample, rows])
        keys = combined["_key"].to_numpy()
        keep = np.argsort(keys, kind="stable")[: self.sample_rows]
        self.sample = combined.iloc[keep].reset_index(drop=True)

    def to_json(self) -> str:
        sample = _sample_lists(self.sample.drop(columns="_key", errors="ignore"))
        counts = {name: c.tolist() for name, c in self.counts.items()}
        return json.dumps({"counts": counts, "sample": sample})


def read_tally(text: str) -> tuple[dict[str, list[int]], dict[str, list]]:
    """(counts, sample columns) of a tally written with `DriftTally.to_json`."""
    data = json.loads(text)
    return data["counts"], data["sample"]


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI between two bucket distributions (shares or counts; each is normalised):
    sum((current - reference) * ln(current / reference)). Rules of thumb: below 0.1
    stable, 0.1-0.2 a moderate shift, above 0.2 a shift worth acting on."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan
    ref = np.maximum(ref / ref.sum(), SHARE_FLOOR)
    cur = np.maximum(cur / cur.sum(), SHARE_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def drift_rows(
    profile: ReferenceProfile, counts: dict[str, list[int]], threshold: float
) -> list[dict[str, Any]]:
    """One row per feature and one for the score: PSI, whether it is over `threshold`,
    the bucket whose share moved most, and missing/unseen shares today."""
    rows = []
    for bucket in profile.buckets:
        reference = np.asarray(profile.shares[bucket.name], dtype=float)
        current = np.asarray(counts[bucket.name], dtype=float)
        psi = population_stability_index(reference, current)
        current_share = current / max(current.sum(), 1)
        moved = int(np.argmax(np.abs(current_share - reference)))
        row = {
            "feature": bucket.name,
            "kind": "numeric" if bucket.kind == "numeric" else "categorical",
            "psi": round(psi, 4),
            "drifted": bool(psi > threshold),
            "largest move": (
                f"{bucket.labels()[moved]}: {reference[moved]:.1%} -> {current_share[moved]:.1%}"
            ),
            "missing today": f"{current_share[-1]:.2%}",
        }
        if bucket.kind == "categorical":
            row["unseen today"] = f"{current_share[-2]:.2%}"
        rows.append(row)
    return rows


def drift_summary(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The headline of `drift_rows`: which features drifted and how the score moved."""
    features = [r for r in rows if r["feature"] != SCORE]
    score = next(r for r in rows if r["feature"] == SCORE)
    return {
        "threshold": threshold,
        "drifted_features": [r["feature"] for r in features if r["drifted"]],
        "max_feature_psi": max((r["psi"] for r in features), default=math.nan),
        "score_psi": score["psi"],
        "score_drifted": score["drifted"],
    }
