"""Seeded generator of realistic telco customers in the IBM "Telco Customer Churn" schema.

No real customer data can be fetched in this project's environments, yet every stage (and its
tests, benchmarks and demos) needs data whose shape and difficulty match the public data set:
same columns, same string encodings (``TotalCharges`` is text with a blank for new customers),
similar marginal shares and churn rates, and a churn signal that honest models learn to the
published ROC-AUC of about 0.84, never to a suspiciously perfect score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from components.contract import TELCO_CHURN

__all__ = ["COLUMNS", "churn_probabilities", "generate_customers"]

# The generator draws every column of the declared contract, in its order.
COLUMNS: tuple[str, ...] = tuple(column.name for column in TELCO_CHURN.columns)

_MAX_TENURE = 72
_NO_INTERNET = "No internet service"
_ADD_ONS = (
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)

# Category orders: the integer codes drawn below index into these.
_GENDER = ("Female", "Male")
_YES_NO = ("No", "Yes")
_LINES = ("No", "Yes", "No phone service")
_INTERNET = ("DSL", "Fiber optic", "No")
_SERVICE = ("No", "Yes", _NO_INTERNET)
_CONTRACT = ("Month-to-month", "One year", "Two year")
_PAYMENT = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)

# Seniors take fiber far more often, which is part of why their churn is high.
_INTERNET_GIVEN_SENIOR = np.array([[0.365, 0.385, 0.250], [0.21, 0.73, 0.06]])
# Rows: DSL, fiber, none. Customers without internet sign long contracts most often.
_CONTRACT_GIVEN_INTERNET = np.array([[0.51, 0.23, 0.26], [0.69, 0.18, 0.13], [0.34, 0.23, 0.43]])
# Multipliers of the month-to-month share for single and partnered customers: couples commit
# to long contracts far more often. They average to 1 over the 52/48 split, keeping the shares
# above.
_MONTH_TO_MONTH_FACTOR = np.array([1.32, 0.65])
# Rows: contract. Electronic check concentrates on month-to-month, autopay on long contracts.
_PAYMENT_GIVEN_CONTRACT = np.array(
    [[0.48, 0.22, 0.15, 0.15], [0.18, 0.23, 0.29, 0.30], [0.09, 0.23, 0.34, 0.34]]
)
# Tenure = ceil(72 * Beta(a, b)) per contract: month-to-month piles up at the first months,
# two-year at the maximum, which gives the U shape of the real data.
_TENURE_BETA = np.array([[0.55, 1.6], [1.4, 1.0], [2.2, 0.55]])
_NEW_CUSTOMER_SHARE = 0.0016  # real data: 11 of 7,043 customers with tenure 0

# Add-on uptake (at the mean tenure) for DSL and fiber customers; uptake grows with tenure.
_ADD_ON_SHARE = {
    "OnlineSecurity": (0.48, 0.28),
    "OnlineBackup": (0.45, 0.45),
    "DeviceProtection": (0.40, 0.50),
    "TechSupport": (0.48, 0.28),
    "StreamingTV": (0.33, 0.64),
    "StreamingMovies": (0.34, 0.64),
}
_ADD_ON_PRICE = {
    "OnlineSecurity": 5.0,
    "OnlineBackup": 5.0,
    "DeviceProtection": 5.0,
    "TechSupport": 5.0,
    "StreamingTV": 10.0,
    "StreamingMovies": 10.0,
}

# Churn log-odds; tuned so that overall churn is ~26.5% and the per-group rates and the
# reachable ROC-AUC (~0.84) match the public data.
_CHURN_INTERCEPT = 0.55
_CHURN_CONTRACT = np.array([0.0, -0.5, -1.4])
_CHURN_INTERNET = np.array([0.0, 0.7, -0.6])
_CHURN_PAYMENT = np.array([0.6, -0.25, -0.1, -0.15])
_CHURN_LOG_TENURE = -0.6
_CHURN_PER_DOLLAR = 0.008
_CHURN_SENIOR = 0.4
_CHURN_PAPERLESS = 0.3
_CHURN_PARTNER = -0.1
_CHURN_DEPENDENTS = -0.35
_CHURN_ADD_ON = {"OnlineSecurity": -0.35, "TechSupport": -0.35, "OnlineBackup": -0.1}
_CHURN_NOISE_SD = 0.25

# Share of rows hit by each kind of data-quality problem when ``messy=True``.
_MESS_DUPLICATE = 0.004
_MESS_BLANK_ID = 0.002
_MESS_BAD_TOTAL = 0.002
_MESS_NEGATIVE_TENURE = 0.002
_MESS_ODD_CATEGORY = 0.004
_BAD_TOTAL_TOKENS = np.array(["#VALUE!", "n/a", "?"])
# Churn is the label: leaving it clean keeps mess confined to what cleaning is meant to fix.
_ODD_CATEGORY_COLUMNS = (
    "gender",
    "Partner",
    "Dependents",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    *_ADD_ONS,
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
)

# The key under which `_draw_customers` keeps each row's true churn probability.
_PROBABILITY = "_churn_probability"

_ID_DIGITS = 10_000
_ID_LETTERS = 26**5


def generate_customers(n_rows: int = 21_096, seed: int = 42, messy: bool = True) -> pd.DataFrame:
    """Return ``n_rows`` synthetic customers in the Telco Customer Churn schema.

    The same ``(n_rows, seed, messy)`` always gives the same frame, so tests, benchmarks and
    pipeline runs can be reproduced exactly. Columns and encodings are those of the public CSV
    (see ``COLUMNS``): categories and ``customerID`` are ``str`` columns, ``SeniorCitizen`` and
    ``tenure`` ints, ``MonthlyCharges`` float, and ``TotalCharges`` text ("1889.5", "97"), a
    single space for tenure-0 customers, because that is what loaders must cope with.

    With ``messy=False`` every row is valid: unique ``customerID``, tenure within 0-72,
    parseable ``TotalCharges`` (blank exactly when tenure is 0), canonical category spellings.

    With ``messy=True`` the same clean frame is drawn first and then about 1.4% of rows are
    damaged the way warehouse extracts are, so that validation and cleaning have something real
    to do while a 5% invalid-row tolerance still passes. Shares of ``n_rows`` (rounded down to
    whole rows; every damaged row gets exactly one problem, and ``Churn`` is never touched):

    - 0.4% duplicates: a row is overwritten by an exact copy of another, clean row, so the
      copy shares its ``customerID`` and sits at a different position.
    - 0.2% blank ``customerID``: alternately missing (null) and the empty string "".
    - 0.2% unparseable ``TotalCharges`` ("#VALUE!", "n/a" or "?"), only where tenure > 0.
    - 0.2% out-of-range ``tenure`` of -1, only where tenure was > 0.
    - 0.4% odd spellings of one categorical value (not ``Churn``): lower- or upper-cased, or
      padded with spaces (e.g. "yes", "NO", " No "), always different from the canonical one.

    Args:
        n_rows: Number of rows to return, at least 1.
        seed: Seed for every random draw.
        messy: Whether to inject the data-quality problems listed above.

    Raises:
        ValueError: If ``n_rows`` is not a positive integer within the customerID space.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    if n_rows > _ID_DIGITS * _ID_LETTERS:
        raise ValueError(
            f"n_rows must be at most {_ID_DIGITS * _ID_LETTERS:,} (the number of distinct "
            f"customerIDs), got {n_rows:,}"
        )
    n = int(n_rows)
    # Independent streams, so the clean rows are identical with and without mess.
    id_seq, data_seq, mess_seq = np.random.SeedSequence(seed).spawn(3)
    columns = _draw_customers(np.random.default_rng(data_seq), n)
    columns["customerID"] = _customer_ids(np.random.default_rng(id_seq), n)
    if messy:
        _inject_mess(columns, np.random.default_rng(mess_seq))
    return pd.DataFrame(
        {
            name: columns[name].to_pandas() if isinstance(columns[name], _Text) else columns[name]
            for name in COLUMNS
        },
        copy=False,
    )


def churn_probabilities(n_rows: int = 21_096, seed: int = 42) -> np.ndarray:
    """The probability each row of ``generate_customers(n_rows, seed)`` had of churning when
    its ``Churn`` label was drawn (0 for tenure-0 customers), in row order: the ground truth
    a calibrated model estimates, from which outcomes after scoring can be drawn. Rows that
    ``messy=True`` damages keep the probability of the row as drawn."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    _, data_seq, _ = np.random.SeedSequence(seed).spawn(3)
    return _draw_customers(np.random.default_rng(data_seq), int(n_rows))[_PROBABILITY]


class _Text(NamedTuple):
    """A string column kept as integer codes into its labels until the frame is built.

    Copying a row or giving one an odd value is then integer work, and the strings are made
    once, by Arrow (pandas' own ``str`` storage), about ten times faster than Python objects.
    """

    codes: np.ndarray
    labels: pa.LargeStringArray

    @classmethod
    def of(cls, codes: np.ndarray, labels: Sequence[str]) -> _Text:
        return cls(codes, pa.array(labels, type=pa.large_string()))

    @classmethod
    def verbatim(cls, labels: pa.LargeStringArray) -> _Text:
        return cls(np.arange(len(labels)), labels)

    def values(self, rows: np.ndarray) -> np.ndarray:
        return self.labels.take(pa.array(self.codes[rows])).to_numpy(zero_copy_only=False)

    def with_values(self, rows: np.ndarray, values: Sequence[str | None] | np.ndarray) -> _Text:
        """Point ``rows`` at new labels ``values``; the codes are changed in place."""
        self.codes[rows] = len(self.labels) + np.arange(len(rows))
        extra = pa.array(values, type=pa.large_string(), from_pandas=False)
        return _Text(self.codes, pa.concat_arrays([self.labels, extra]))

    def to_pandas(self) -> pd.Series:
        """The column in pandas' default string dtype (``str`` from pandas 3, else object)."""
        n = len(self.codes)
        verbatim = len(self.labels) == n and np.array_equal(self.codes, np.arange(n))
        strings = self.labels if verbatim else self.labels.take(pa.array(self.codes))
        return strings.to_pandas()


def _draw_customers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray | _Text]:
    """Draw every column but the ID, each conditioned on the ones it depends on in reality."""
    gender = rng.integers(0, 2, n)
    senior = (rng.random(n) < 0.16).astype(np.int64)
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.52, 0.10)

    internet = _pick(rng, _INTERNET_GIVEN_SENIOR, senior)
    contract = _pick(rng, _contract_given_internet_and_partner(), 2 * internet + partner)
    payment = _pick(rng, _PAYMENT_GIVEN_CONTRACT, contract)

    a, b = _TENURE_BETA[contract].T
    tenure = np.clip(np.ceil(_MAX_TENURE * rng.beta(a, b)).astype(np.int64), 1, _MAX_TENURE)
    # Brand-new customers have signed but not yet been billed; in the real data none of them
    # is on month-to-month, and long contracts are 45% of customers.
    new = (rng.random(n) < _NEW_CUSTOMER_SHARE / 0.45) & (contract > 0)
    tenure[new] = 0

    has_internet = internet != 2
    fiber = internet == 1
    phone = ~((internet == 0) & (rng.random(n) < 0.28))
    multiple = phone & (rng.random(n) < np.select([fiber, has_internet], [0.63, 0.34], 0.22))
    paperless = rng.random(n) < np.array([0.58, 0.72, 0.32])[internet]

    # Long-standing customers have accumulated more services.
    tenure_lift = 0.025 * (tenure - 32)
    add_ons: dict[str, np.ndarray] = {}
    for name, (dsl_share, fiber_share) in _ADD_ON_SHARE.items():
        share = np.where(fiber, fiber_share, dsl_share)
        logit = np.log(share / (1 - share)) + tenure_lift
        if name == "StreamingMovies":
            # People who stream TV mostly stream movies too.
            logit = logit + 1.2 * (add_ons["StreamingTV"] - share)
        add_ons[name] = has_internet & (rng.random(n) < _sigmoid(logit))

    monthly = (
        20.0 * phone
        + 5.0 * multiple
        + np.array([25.0, 50.0, 0.0])[internet]
        + sum(_ADD_ON_PRICE[name] * add_ons[name] for name in _ADD_ONS)
        + rng.normal(0.0, 1.5, n)
    )
    # Real tariffs come in steps of 5 cents.
    monthly = np.round(np.clip(monthly, 18.25, 118.75) * 20) / 20
    # Prices change over a customer's life, so the total drifts from tenure x current price.
    drift = np.where(tenure > 1, rng.normal(0.0, 0.05, n).clip(-0.2, 0.2), 0.0)
    total_cents = 5 * np.round(tenure * monthly * (1.0 + drift) * 20).astype(np.int64)

    logit = (
        _CHURN_INTERCEPT
        + _CHURN_CONTRACT[contract]
        + _CHURN_INTERNET[internet]
        + _CHURN_PAYMENT[payment]
        + _CHURN_LOG_TENURE * np.log1p(tenure)
        + _CHURN_PER_DOLLAR * (monthly - 65.0)
        + _CHURN_SENIOR * senior
        + _CHURN_PAPERLESS * paperless
        + _CHURN_PARTNER * partner
        + _CHURN_DEPENDENTS * dependents
        + sum(weight * add_ons[name] for name, weight in _CHURN_ADD_ON.items())
        + rng.normal(0.0, _CHURN_NOISE_SD, n)
    )
    # Nobody can have left before their first bill.
    probability = np.where(tenure > 0, _sigmoid(logit), 0.0)
    churn = (rng.random(n) < _sigmoid(logit)) & (tenure > 0)

    columns: dict[str, np.ndarray | _Text] = {
        "gender": _Text.of(gender, _GENDER),
        "SeniorCitizen": senior,
        "Partner": _Text.of(partner.astype(np.int64), _YES_NO),
        "Dependents": _Text.of(dependents.astype(np.int64), _YES_NO),
        "tenure": tenure,
        "PhoneService": _Text.of(phone.astype(np.int64), _YES_NO),
        "MultipleLines": _Text.of(np.where(phone, multiple, 2), _LINES),
        "InternetService": _Text.of(internet, _INTERNET),
        "Contract": _Text.of(contract, _CONTRACT),
        "PaperlessBilling": _Text.of(paperless.astype(np.int64), _YES_NO),
        "PaymentMethod": _Text.of(payment, _PAYMENT),
        "MonthlyCharges": monthly,
        "TotalCharges": _Text.verbatim(_format_charges(total_cents, blank=tenure == 0)),
        "Churn": _Text.of(churn.astype(np.int64), _YES_NO),
        # Not a column of the frame: what `churn_probabilities` returns.
        _PROBABILITY: probability,
    }
    for name in _ADD_ONS:
        columns[name] = _Text.of(np.where(has_internet, add_ons[name], 2), _SERVICE)
    return columns


def _pick(rng: np.random.Generator, table: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Draw one category per row from the probabilities in the ``table`` row of its group.

    Looping over the few categories (never rows) keeps every temporary one column long.
    """
    cumulative = np.cumsum(table, axis=1)
    u = rng.random(len(group))
    codes = np.zeros(len(group), dtype=np.int64)
    for k in range(table.shape[1] - 1):
        codes += u >= cumulative[group, k]
    return codes


def _contract_given_internet_and_partner() -> np.ndarray:
    """Contract probabilities for group ``2 * internet + partner``, from the tables above."""
    base = _CONTRACT_GIVEN_INTERNET[:, None, :]
    month_to_month = base[..., :1] * _MONTH_TO_MONTH_FACTOR[None, :, None]
    longer = base[..., 1:] * (1 - month_to_month) / (1 - base[..., :1])
    return np.concatenate([month_to_month, longer], axis=2).reshape(-1, 3)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _customer_ids(rng: np.random.Generator, n: int) -> _Text:
    """Unique IDs like "7590-VHVEG" that look random, in O(n) with no uniqueness check.

    Sampling and then deduplicating needs a sort that dominates the run time at 10M rows.
    Instead the row numbers 0..n-1 go through a seeded bijection of the whole ID space (four
    Feistel rounds over its digit and letter halves), so distinct rows get distinct IDs.
    """
    keys = rng.integers(0, 2**63, 4, dtype=np.uint64)
    rows = np.arange(n, dtype=np.uint64)
    digits = rows % np.uint64(_ID_DIGITS)
    letters = rows // np.uint64(_ID_DIGITS)
    for round_no, key in enumerate(keys):
        if round_no % 2 == 0:
            letters = (letters + _mix(digits, key)) % np.uint64(_ID_LETTERS)
        else:
            digits = (digits + _mix(letters, key)) % np.uint64(_ID_DIGITS)

    chars = np.empty((n, 10), dtype=np.uint8)
    for pos in range(3, -1, -1):
        chars[:, pos] = ord("0") + (digits % np.uint64(10)).astype(np.uint8)
        digits //= np.uint64(10)
    chars[:, 4] = ord("-")
    for pos in range(9, 4, -1):
        chars[:, pos] = ord("A") + (letters % np.uint64(26)).astype(np.uint8)
        letters //= np.uint64(26)
    offsets = np.arange(0, 10 * n + 1, 10, dtype=np.int64)
    labels = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))
    return _Text.verbatim(labels)


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """SplitMix64 finaliser: a cheap, well-spread hash for the Feistel rounds."""
    with np.errstate(over="ignore"):
        z = x ^ key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _format_charges(cents: np.ndarray, blank: np.ndarray) -> pa.LargeStringArray:
    """Render amounts as the CSV does ("1889.5", "29.85", "97"), ``blank`` rows as " ".

    Formatting floats through Python costs about 1 s per million values; writing the digits
    of integer cents straight into an Arrow buffer is an order of magnitude faster.
    """
    whole, frac = np.divmod(cents, 100)
    int_width = len(str(max(int(whole.max(initial=0)), 0)))
    n_digits = np.ones(len(cents), dtype=np.int64)
    for power in range(1, int_width):
        n_digits += whole >= 10**power

    # Fixed-width "DDDDD.CC" per row, then keep only what the CSV shows: no leading zeros,
    # no ".00", no trailing zero cent.
    chars = np.empty((len(cents), int_width + 3), dtype=np.uint8)
    keep = np.empty(chars.shape, dtype=bool)
    rest = whole.copy()
    for col in range(int_width - 1, -1, -1):
        chars[:, col] = ord("0") + rest % 10
        keep[:, col] = n_digits >= int_width - col
        rest //= 10
    chars[:, int_width] = ord(".")
    chars[:, int_width + 1] = ord("0") + frac // 10
    chars[:, int_width + 2] = ord("0") + frac % 10
    keep[:, int_width] = keep[:, int_width + 1] = frac > 0
    keep[:, int_width + 2] = frac % 10 > 0
    chars[blank, 0] = ord(" ")
    keep[blank] = False
    keep[blank, 0] = True

    lengths = keep.sum(axis=1)
    offsets = np.zeros(len(cents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = chars[keep]
    return pa.LargeStringArray.from_buffers(len(cents), pa.py_buffer(offsets), pa.py_buffer(data))


def _inject_mess(columns: dict[str, np.ndarray | _Text], rng: np.random.Generator) -> None:
    """Damage a few rows in place; ``generate_customers`` documents what and how many."""
    tenure = columns["tenure"]
    n = len(tenure)
    n_bad_total = int(n * _MESS_BAD_TOTAL)
    n_negative = int(n * _MESS_NEGATIVE_TENURE)
    n_blank_id = int(n * _MESS_BLANK_ID)
    n_odd = int(n * _MESS_ODD_CATEGORY)
    n_dup = int(n * _MESS_DUPLICATE)

    # One sample of distinct rows is handed out in slices, so each damaged row has one problem
    # and duplicates copy rows that stay clean. Sampling (not shuffling all rows) keeps this
    # cheap at 10M rows; the 10% spare covers the tenure-0 rows skipped below.
    needed = n_bad_total + n_negative + n_blank_id + n_odd + 2 * n_dup
    picked = rng.choice(n, size=min(n, needed + needed // 10 + 10), replace=False)
    billed = picked[tenure[picked] > 0]
    bad_total = billed[:n_bad_total]
    negative = billed[n_bad_total : n_bad_total + n_negative]
    rest = np.setdiff1d(picked, np.concatenate([bad_total, negative]), assume_unique=True)
    rest = rng.permutation(rest)
    blank_id, rest = rest[:n_blank_id], rest[n_blank_id:]
    odd, rest = rest[:n_odd], rest[n_odd:]
    n_dup = min(n_dup, len(rest) // 2)
    dup_target, dup_source = rest[:n_dup], rest[n_dup : 2 * n_dup]

    total = columns["TotalCharges"]
    columns["TotalCharges"] = total.with_values(
        bad_total, rng.choice(_BAD_TOTAL_TOKENS, len(bad_total))
    )
    tenure[negative] = -1
    blanks = [None if i % 2 == 0 else "" for i in range(len(blank_id))]
    columns["customerID"] = columns["customerID"].with_values(blank_id, blanks)

    which = rng.integers(0, len(_ODD_CATEGORY_COLUMNS), len(odd))
    style = rng.integers(0, 4, len(odd))
    for c, name in enumerate(_ODD_CATEGORY_COLUMNS):
        rows = odd[which == c]
        canonical = pd.Series(columns[name].values(rows), dtype=object)
        padded = " " + canonical + " "
        variants = [canonical.str.lower(), canonical.str.upper(), padded, canonical + " "]
        picked = style[which == c]
        odd_value = np.select([picked == k for k in range(len(variants))], variants)
        # Upper-casing "DSL" changes nothing: pad those instead, so every hit is visible.
        odd_value = np.where(odd_value == canonical, padded, odd_value)
        columns[name] = columns[name].with_values(rows, odd_value)

    for column in columns.values():
        values = column.codes if isinstance(column, _Text) else column
        values[dup_target] = values[dup_source]
