"""The data contract: the one declared place for the customer table's schema.

A team whose warehouse has other columns changes this file and nothing else: validation,
feature engineering, serving and drift reports all read their column lists from here.
The reference schema is the public IBM "Telco Customer Churn" data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["id", "label", "categorical", "numeric"]

YES_NO = ("Yes", "No")
NO_INTERNET = ("Yes", "No", "No internet service")


@dataclass(frozen=True)
class Column:
    """One column of the customer table.

    `nullable` numeric columns may be blank (the model imputes them); `min_value`/`max_value`
    bound plausible values so that out-of-range rows are set aside rather than learned from.
    """

    name: str
    kind: ColumnKind
    categories: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    nullable: bool = False


@dataclass(frozen=True)
class DataContract:
    """The customer table's columns, with lookups the stages need."""

    columns: tuple[Column, ...]
    positive_label: str = "Yes"
    negative_label: str = "No"

    @property
    def id_column(self) -> str:
        return next(c.name for c in self.columns if c.kind == "id")

    @property
    def label_column(self) -> str:
        return next(c.name for c in self.columns if c.kind == "label")

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def feature_names(self) -> list[str]:
        """Model inputs, in a fixed order: numeric first, then categorical."""
        return [c.name for c in self.numeric] + [c.name for c in self.categorical]

    def required(self, *, with_label: bool) -> list[Column]:
        """Columns a table must have: features and id, plus the label when training."""
        return [c for c in self.columns if c.kind != "label" or with_label]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def column_key(name: object) -> str:
    """How a source's column name is matched to the contract's: stripped, any case."""
    return str(name).strip().casefold()


TELCO_CHURN = DataContract(
    columns=(
        Column("customerID", "id"),
        Column("gender", "categorical", ("Female", "Male")),
        Column("SeniorCitizen", "numeric", min_value=0, max_value=1),
        Column("Partner", "categorical", YES_NO),
        Column("Dependents", "categorical", YES_NO),
        Column("tenure", "numeric", min_value=0, max_value=120),
        Column("PhoneService", "categorical", YES_NO),
        Column("MultipleLines", "categorical", ("Yes", "No", "No phone service")),
        Column("InternetService", "categorical", ("DSL", "Fiber optic", "No")),
        Column("OnlineSecurity", "categorical", NO_INTERNET),
        Column("OnlineBackup", "categorical", NO_INTERNET),
        Column("DeviceProtection", "categorical", NO_INTERNET),
        Column("TechSupport", "categorical", NO_INTERNET),
        Column("StreamingTV", "categorical", NO_INTERNET),
        Column("StreamingMovies", "categorical", NO_INTERNET),
        Column("Contract", "categorical", ("Month-to-month", "One year", "Two year")),
        Column("PaperlessBilling", "categorical", YES_NO),
        Column(
            "PaymentMethod",
            "categorical",
            (
                "Electronic check",
                "Mailed check",
                "Bank transfer (automatic)",
                "Credit card (automatic)",
            ),
        ),
        Column("MonthlyCharges", "numeric", min_value=0, max_value=1_000),
        # Blank for brand-new customers (tenure 0) in the source data.
        Column("TotalCharges", "numeric", min_value=0, max_value=200_000, nullable=True),
        Column("Churn", "label", YES_NO),
    )
)

# The outcomes table the monitoring pipeline reads (issue 20): one row per churn observed,
# or per sighting of a customer still there, on `observed_date`.
OUTCOME_COLUMNS = ("customer_id", "churned", "observed_date")
