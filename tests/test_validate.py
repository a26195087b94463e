"""Validation: every fatal problem stops with one line naming it; row problems are set
aside with reasons and counted, and no row is lost."""

import numpy as np
import pandas as pd
import pytest

from components.data.validate import validate
from components.errors import ContractError


def test_clean_data_passes_whole(customers):
    result = validate(customers, source="t.csv")
    assert len(result.clean) == len(customers)
    assert result.rows_rejected == 0
    assert set(result.clean["Churn"].unique()) == {0, 1}


def test_column_names_match_case_insensitively(customers):
    lowered = customers.rename(columns=str.lower)
    result = validate(lowered, source="t.csv")
    assert "MonthlyCharges" in result.clean.columns
    assert len(result.clean) == len(customers)


def test_missing_column_is_named(customers):
    with pytest.raises(ContractError, match=r"column `MonthlyCharges` missing from t\.csv"):
        validate(customers.drop(columns="MonthlyCharges"), source="t.csv")


def test_wrong_type_is_named(customers):
    broken = customers.assign(tenure="about a year")
    with pytest.raises(ContractError, match=r"column `tenure` has the wrong type: 100%"):
        validate(broken, source="t.csv")


def test_empty_table(customers):
    with pytest.raises(ContractError, match=r"t\.csv is empty"):
        validate(customers.iloc[:0], source="t.csv")


def test_single_class_label(customers):
    with pytest.raises(ContractError, match=r"label `Churn` has a single class \('No'\)"):
        validate(customers.assign(Churn="No"), source="t.csv")


def test_too_many_invalid_rows(customers):
    broken = customers.copy()
    broken.loc[: len(broken) // 10, "TotalCharges"] = "#VALUE!"
    with pytest.raises(ContractError, match=r"are invalid, over the 5% tolerance.*not a number"):
        validate(broken, source="t.csv", tolerance=0.05)


def test_invalid_rows_under_tolerance_are_set_aside_with_reasons(customers):
    broken = customers.copy()
    broken.loc[3, "TotalCharges"] = "#VALUE!"
    broken.loc[5, "tenure"] = -1
    broken.loc[8, "customerID"] = " "
    broken.loc[9, "Contract"] = "Weekly"
    broken.loc[11, "Churn"] = None
    broken.loc[13, "TotalCharges"] = " inf "
    result = validate(broken, source="t.csv")
    reasons = dict(zip(result.rejects["row_number"], result.rejects["reason"], strict=True))
    assert reasons == {
        4: "`TotalCharges` value #VALUE! is not a number",
        6: "`tenure` value -1.0 is outside 0..120",
        9: "`customerID` is blank",
        10: "`Contract` value Weekly is not one of Month-to-month, One year, Two year",
        12: "`Churn` is blank",
        14: "`TotalCharges` value inf is not a number",
    }
    assert len(result.clean) + result.rows_rejected == result.rows_read == len(customers)


def test_messy_values_are_normalised_not_rejected(customers):
    messy = customers.copy()
    messy.loc[0, "Partner"] = " yes "
    messy.loc[1, "Churn"] = "YES"
    result = validate(messy, source="t.csv")
    assert result.rows_rejected == 0
    assert result.clean.loc[0, "Partner"] == "Yes"
    assert result.clean.loc[1, "Churn"] == 1


def test_blank_total_charges_is_allowed_and_counted(customers):
    messy = customers.copy()
    messy.loc[:4, "TotalCharges"] = " "
    result = validate(messy, source="t.csv")
    assert result.rows_rejected == 0
    blanks = int((messy["TotalCharges"].str.strip() == "").sum())
    assert blanks >= 5
    assert result.missing_values["TotalCharges"] == blanks
    assert np.isnan(result.clean.loc[0, "TotalCharges"])


def test_duplicate_customers_are_reported_and_kept_once(customers):
    doubled = pd.concat([customers, customers.iloc[[10, 20]]], ignore_index=True)
    result = validate(doubled, source="t.csv")
    assert result.duplicates == 2
    assert result.clean["customerID"].is_unique
    duplicate_reasons = result.rejects["reason"].tolist()
    first_id = customers.loc[10, "customerID"]
    assert duplicate_reasons[0] == f"duplicate customerID {first_id} (first at row 11)"
    assert len(result.clean) + result.rows_rejected == len(doubled)


def test_serving_keeps_unseen_categories_and_counts_them(customers):
    frame = customers.drop(columns="Churn").copy()
    frame.loc[0, "PaymentMethod"] = "Crypto"
    frame.loc[1, "tenure"] = None
    result = validate(frame, source="t.csv", mode="serving")
    assert result.rows_rejected == 0
    assert result.clean.loc[0, "PaymentMethod"] == "Crypto"
    assert result.unseen_categories == {"PaymentMethod": 1}
    assert result.missing_values["tenure"] == 1


def test_a_single_bad_row_is_a_bad_row_not_a_wrong_type(customers):
    one = customers.drop(columns="Churn").head(1).assign(Contract="Weekly", tenure="soon")
    result = validate(one, source="request", mode="serving", tolerance=1.0)
    assert result.rows_rejected == 1
    assert result.rejects.loc[0, "reason"] == "`tenure` value soon is not a number"


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("tenure", "column 'tenure' appears twice"),
        ("TENURE", "columns 'tenure' and 'TENURE' differ only in case"),
    ],
)
def test_a_column_given_twice_is_named(customers, second: str, message: str):
    frame = customers.copy()
    frame.insert(len(frame.columns), "__extra", frame["tenure"])
    frame.columns = [*frame.columns[:-1], second]
    with pytest.raises(ContractError, match=f"t.csv: {message}"):
        validate(frame, source="t.csv")


HOSTILE_VALUES = [
    None,
    np.nan,
    "",
    "  ",
    " 42 ",
    "4e1",
    "+.5",
    "1.",
    "x",
    "١٢",
    "inf",
    "NaN",
    "\x1c5",
    "5\x0b",
    "\t7\r",
    "\xa05",
    " 1e400 ",
    "-0",
    "0x10",
    True,
    0,
    7,
    -3,
    1.5,
    10**30,
    " Yes",
    "yes",
    "NO ",
    "Fiber optic",
    "Nope",
    pd.NA,
]


@pytest.mark.parametrize("mode", ["training", "serving"])
def test_small_frames_are_validated_as_large_ones(
    customers, mode: str, monkeypatch: pytest.MonkeyPatch
):
    """Serving's few-row requests take a value-by-value path through the same checks: it
    gives the same rows, types, reasons and counts as the vectorised one."""
    import components.data.validate as validate_module

    rng = np.random.default_rng(3)
    raw = customers.head(validate_module.SMALL_ROWS).astype(object)
    for column in raw.columns:
        rows = rng.random(len(raw)) < 0.15
        raw.loc[rows, column] = rng.choice(np.array(HOSTILE_VALUES, dtype=object), rows.sum())
    raw.loc[5, "customerID"] = raw.loc[4, "customerID"]  # a repeat
    small = validate(raw, source="s", mode=mode, tolerance=1.0)
    monkeypatch.setattr(validate_module, "SMALL_ROWS", 0)
    large = validate(raw, source="s", mode=mode, tolerance=1.0)
    pd.testing.assert_frame_equal(small.clean, large.clean)
    pd.testing.assert_frame_equal(small.rejects, large.rejects)
    assert (small.missing_values, small.unseen_categories, small.duplicates) == (
        large.missing_values,
        large.unseen_categories,
        large.duplicates,
    )
