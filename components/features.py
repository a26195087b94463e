"""Feature preprocessing shared by every model family: the first step of each saved model.

Scoring runs this on every customer every day, so its cost is per row: numbers are imputed
and scaled; categories are one-hot encoded by `CategoryEncoder`, which gives
`OneHotEncoder`'s output with pandas' hash tables instead of a Python lookup per value.
"""

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from components.contract import TELCO_CHURN, DataContract


class CategoryEncoder(OneHotEncoder):
    """`OneHotEncoder` with a dense transform about ten times faster on text columns.

    Fitting is `OneHotEncoder`'s own, so the learned categories (a missing value among
    them, when training saw one) and the output columns are the same. Values not seen in
    training encode as all zeros, as `handle_unknown="ignore"` does; other settings
    (sparse output, dropping or grouping categories) use `OneHotEncoder.transform`.
    """

    def transform(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """One column per learned category, 1 where a row holds it (`X` named as in
        scikit-learn)."""
        check_is_fitted(self)
        if (
            self.sparse_output
            or self.drop is not None
            or self.handle_unknown != "ignore"
            or self._infrequent_enabled
        ):
            return super().transform(X)
        validate_data(self, X=X, reset=False, skip_check_array=True)
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(check_array(X, dtype=None, ensure_all_finite="allow-nan"))
        width = sum(len(c) for c in self.categories_)
        encoded = np.zeros((len(X), width), dtype=self.dtype)
        cells = encoded.reshape(-1)  # a view: row r, column c is cell r * width + c
        offset = 0
        for position, categories in enumerate(self.categories_):
            values = X.iloc[:, position]
            known = categories[~pd.isna(categories)]
            codes = pd.Index(known).get_indexer(values)  # -1: unseen or missing
            if len(known) < len(categories):  # training saw missing values: their column
                codes[values.isna().to_numpy()] = len(known)
            rows = np.flatnonzero(codes >= 0)
            cells[rows * width + offset + codes[rows]] = 1.0
            offset += len(categories)
        return encoded


def build_preprocessor(contract: DataContract = TELCO_CHURN) -> ColumnTransformer:
    """Impute and scale numbers; one-hot encode categories, a missing value being one more
    category and values never seen in training ignored (so serving can score them)."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = CategoryEncoder(handle_unknown="ignore", sparse_output=False)
    return ColumnTransformer(
        [
            ("numeric", numeric, [c.name for c in contract.numeric]),
            ("categorical", categorical, [c.name for c in contract.categorical]),
        ]
    )
