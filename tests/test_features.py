import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import OneHotEncoder

from components.data.sample_data import generate_customers
from components.data.validate import validate
from components.model.features import CategoryEncoder, build_preprocessor


def _messy_categories(rng: np.random.Generator, n: int, missing: bool) -> pd.DataFrame:
    def column(values: list) -> np.ndarray:
        drawn = rng.choice(np.array(values, dtype=object), size=n)
        if missing:
            drawn[rng.random(n) < 0.1] = np.nan
        return drawn

    return pd.DataFrame(
        {
            "plan": column(["basic", "plus", "premium"]),
            "region": column(["north", "south"]),
            "code": column([3, 1, 2]),
        }
    )


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("missing_in_training", [False, True])
def test_category_encoder_matches_one_hot_encoder(missing_in_training):
    rng = np.random.default_rng(7)
    train = _messy_categories(rng, 500, missing=missing_in_training)
    serve = _messy_categories(rng, 300, missing=True)
    serve.loc[::7, "plan"] = "never seen"
    serve.loc[::11, "code"] = 9

    reference = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(train)
    fast = CategoryEncoder(handle_unknown="ignore", sparse_output=False).fit(train)

    expected = reference.transform(serve)
    assert expected[::7].sum() < 3 * len(expected[::7])  # unseen values encode as zeros
    np.testing.assert_array_equal(fast.transform(serve), expected)
    np.testing.assert_array_equal(
        fast.transform(serve.to_numpy()), reference.transform(serve.to_numpy())
    )
    assert list(fast.get_feature_names_out()) == list(reference.get_feature_names_out())


def test_category_encoder_checks_columns_like_one_hot_encoder():
    frame = _messy_categories(np.random.default_rng(1), 50, missing=False)
    fast = CategoryEncoder(handle_unknown="ignore", sparse_output=False).fit(frame)
    with pytest.raises(ValueError, match="missing:\\n- code"):
        fast.transform(frame[["plan", "region"]])


def test_preprocessor_scores_unseen_and_missing_categories():
    clean = validate(generate_customers(400, seed=3), source="generated").clean
    preprocess = build_preprocessor().fit(clean)
    odd = clean.head(3).astype({"Contract": object})
    odd.loc[0, "Contract"] = "Three year"
    odd.loc[1, "Contract"] = np.nan
    encoded = preprocess.transform(odd)
    assert np.isfinite(encoded).all()
    names = list(preprocess.get_feature_names_out())
    contract = [i for i, name in enumerate(names) if name.startswith("categorical__Contract_")]
    assert encoded[0, contract].sum() == 0
    assert encoded[2, contract].sum() == 1
