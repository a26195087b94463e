"""The generated customers stand in for the real Telco data everywhere: in the default run, in
tests and in benchmarks. They must have its schema, its shape, its few kinds of dirt, and a
churn signal that honest models learn only as well as on the real data."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from components.contract import TELCO_CHURN
from components.data.sample_data import COLUMNS, generate_customers
from components.data.validate import validate

# The contract's add-on services: the columns that read "No internet service".
ADD_ONS = [c.name for c in TELCO_CHURN.categorical if "No internet service" in c.categories]


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_customers(21_096, seed=42, messy=False)


@pytest.fixture(scope="module")
def messy() -> pd.DataFrame:
    return generate_customers(21_096, seed=42)


def churned(frame: pd.DataFrame) -> pd.Series:
    return frame["Churn"] == "Yes"


def test_columns_follow_the_data_contract_in_order(clean: pd.DataFrame) -> None:
    assert list(clean.columns) == list(COLUMNS)
    assert len(clean) == 21_096


def test_values_have_the_real_csv_types_and_categories(clean: pd.DataFrame) -> None:
    assert clean["SeniorCitizen"].dtype == np.int64
    assert clean["tenure"].dtype == np.int64
    assert clean["MonthlyCharges"].dtype == np.float64
    for column in [*TELCO_CHURN.categorical, TELCO_CHURN.column("Churn")]:
        assert pd.api.types.is_string_dtype(clean[column.name]), column.name
        assert set(clean[column.name]) <= set(column.categories), column.name
    assert pd.api.types.is_string_dtype(clean["TotalCharges"])
    assert set(clean["SeniorCitizen"]) == {0, 1}
    assert clean["tenure"].between(0, 72).all()
    assert clean["MonthlyCharges"].between(18.25, 118.75).all()
    # Tariffs come in steps of 5 cents, as in the real data.
    assert np.allclose(clean["MonthlyCharges"] * 20, np.round(clean["MonthlyCharges"] * 20))


def test_customer_ids_look_real_and_are_unique() -> None:
    ids = generate_customers(200_000, seed=3, messy=False)["customerID"]
    assert ids.str.fullmatch(r"\d{4}-[A-Z]{5}").all()
    assert ids.is_unique


def test_same_seed_gives_the_same_frame_and_another_seed_another() -> None:
    first = generate_customers(3_000, seed=5)
    pd.testing.assert_frame_equal(first, generate_customers(3_000, seed=5))
    other = generate_customers(3_000, seed=6)
    assert not first["customerID"].equals(other["customerID"])
    assert not first["tenure"].equals(other["tenure"])


@pytest.mark.parametrize("seed", [42, 1, 7])
def test_churn_rate_is_that_of_the_public_data(seed: int) -> None:
    rate = churned(generate_customers(21_096, seed=seed, messy=False)).mean()
    assert 0.20 <= rate <= 0.30


def test_total_charges_is_blank_exactly_for_new_customers(clean: pd.DataFrame) -> None:
    new = clean["tenure"] == 0
    assert new.any()
    assert (clean.loc[new, "TotalCharges"] == " ").all()
    billed = clean.loc[~new]
    total = pd.to_numeric(billed["TotalCharges"], errors="raise")
    expected = billed["tenure"] * billed["MonthlyCharges"]
    assert ((total / expected).between(0.8, 1.2)).all()
    # Written as in the CSV: "1889.5", never "1889.50" or "97.0".
    assert not billed["TotalCharges"].str.contains(r"\.\d0$|\.$|\.0$").any()


def test_new_customers_have_not_churned(clean: pd.DataFrame) -> None:
    assert not churned(clean[clean["tenure"] == 0]).any()


def test_add_ons_say_no_internet_service_exactly_without_internet(clean: pd.DataFrame) -> None:
    no_internet = clean["InternetService"] == "No"
    for column in ADD_ONS:
        assert ((clean[column] == "No internet service") == no_internet).all(), column
    no_phone = clean["PhoneService"] == "No"
    assert ((clean["MultipleLines"] == "No phone service") == no_phone).all()


def test_shares_and_churn_rates_follow_the_public_data(clean: pd.DataFrame) -> None:
    def share_and_churn(column: str) -> pd.DataFrame:
        groups = churned(clean).groupby(clean[column])
        return pd.DataFrame({"share": groups.size() / len(clean), "churn": groups.mean()})

    contract = share_and_churn("Contract")
    assert contract.loc["Month-to-month", "share"] == pytest.approx(0.55, abs=0.04)
    assert contract.loc["Month-to-month", "churn"] == pytest.approx(0.43, abs=0.05)
    assert contract.loc["One year", "churn"] == pytest.approx(0.11, abs=0.04)
    assert contract.loc["Two year", "churn"] == pytest.approx(0.03, abs=0.03)
    internet = share_and_churn("InternetService")
    assert internet.loc["Fiber optic", "share"] == pytest.approx(0.44, abs=0.04)
    assert internet.loc["Fiber optic", "churn"] == pytest.approx(0.42, abs=0.05)
    assert internet.loc["DSL", "churn"] == pytest.approx(0.19, abs=0.04)
    assert internet.loc["No", "churn"] == pytest.approx(0.07, abs=0.03)
    payment = share_and_churn("PaymentMethod")
    assert payment["churn"].idxmax() == "Electronic check"
    assert share_and_churn("SeniorCitizen").loc[1, "churn"] == pytest.approx(0.40, abs=0.05)

    tenure = clean["tenure"]
    assert tenure.mean() == pytest.approx(32, abs=3)
    assert churned(clean[tenure.between(1, 6)]).mean() == pytest.approx(0.54, abs=0.06)
    assert churned(clean[tenure > 48]).mean() == pytest.approx(0.09, abs=0.04)
    assert clean["MonthlyCharges"].mean() == pytest.approx(65, abs=3)
    by_internet = clean.groupby("InternetService")["MonthlyCharges"].mean()
    assert by_internet["Fiber optic"] > by_internet["DSL"] > by_internet["No"]


def test_honest_models_land_in_the_published_range(clean: pd.DataFrame) -> None:
    features = clean.drop(columns=["customerID", "Churn"])
    features["TotalCharges"] = pd.to_numeric(features["TotalCharges"], errors="coerce")
    for column in TELCO_CHURN.categorical:
        features[column.name] = features[column.name].astype("category")
    y = churned(clean).astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, y, test_size=0.2, stratify=y, random_state=0
    )
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    # One thread: on a busy two-core runner OpenMP's spinning threads make this fit 10-30x
    # slower (1 s becomes 30 s), and the result does not depend on the thread count.
    with threadpool_limits(limits=1):
        scores = model.fit(x_train, y_train).predict_proba(x_test)[:, 1]

    assert 0.78 <= roc_auc_score(y_test, scores) <= 0.90
    precision, recall, _ = precision_recall_curve(y_test, scores)
    best_f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert 0.55 <= best_f1 <= 0.70


def test_messy_rows_are_few_and_of_each_documented_kind(
    clean: pd.DataFrame, messy: pd.DataFrame
) -> None:
    assert messy.shape == clean.shape
    assert list(messy.dtypes) == list(clean.dtypes)
    changed = (messy.fillna("<NA>") != clean.fillna("<NA>")).any(axis=1)
    assert 0.01 <= changed.mean() < 0.02

    ids = messy["customerID"]
    blank_id = ids.isna() | (ids == "")
    assert ids.isna().any() and (ids == "").any()
    duplicates = ids[~blank_id].duplicated(keep=False)
    assert duplicates.any()
    copies = messy[~blank_id][duplicates].drop_duplicates()
    assert copies["customerID"].is_unique  # copies are exact, not just same ID

    total_text = messy["TotalCharges"].str.strip()
    unparseable = pd.to_numeric(total_text, errors="coerce").isna() & (total_text != "")
    assert unparseable.any()
    assert (messy.loc[unparseable, "tenure"] > 0).all()
    assert (messy["tenure"] < 0).any()

    odd = pd.Series(False, index=messy.index)
    for column in TELCO_CHURN.categorical:
        odd |= ~messy[column.name].isin(column.categories)
        normalised = messy[column.name].str.strip().str.casefold()
        assert normalised.isin([c.casefold() for c in column.categories]).all(), column.name
    assert odd.any()
    assert messy["Churn"].isin(["Yes", "No"]).all()


def test_clean_rows_are_the_same_with_and_without_mess(
    clean: pd.DataFrame, messy: pd.DataFrame
) -> None:
    same = (messy.fillna("<NA>") == clean.fillna("<NA>")).all(axis=1)
    assert same.mean() > 0.98


def test_messy_data_passes_validation_within_tolerance(messy: pd.DataFrame) -> None:
    result = validate(messy, source="generated", tolerance=0.05)
    assert 0 < result.rows_rejected < 0.02 * len(messy)
    assert result.duplicates > 0
    assert len(result.clean) == len(messy) - result.rows_rejected


@pytest.mark.parametrize("n_rows", [1, 2, 10, 499])
def test_tiny_tables_work(n_rows: int) -> None:
    for messy in (False, True):
        frame = generate_customers(n_rows, seed=0, messy=messy)
        assert list(frame.columns) == list(COLUMNS)
        assert len(frame) == n_rows


@pytest.mark.parametrize("n_rows", [0, -5, 2.5, True, "100"])
def test_bad_row_counts_are_rejected_naming_the_parameter(n_rows: object) -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate_customers(n_rows)  # type: ignore[arg-type]
