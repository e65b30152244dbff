"""The canonical churn schema: the one place that names columns, types and categories.

Every source is mapped onto these names (see ``core.mapping``); the data contract,
the feature pipeline, the model server and the drift profile all read them from here.
"""

from __future__ import annotations

CUSTOMER_ID = "customer_id"
SIGNUP_DATE = "signup_date"
TENURE_MONTHS = "tenure_months"
MONTHLY_SPEND = "monthly_spend"
CONTRACT_TYPE = "contract_type"
IS_ENTERPRISE = "is_enterprise"
REGION = "region"
SUPPORT_TICKETS = "support_tickets"
LAST_LOGIN_HOUR = "last_login_hour"
TARGET = "churned"

CONTRACT_TYPES: tuple[str, ...] = ("monthly", "annual", "multi-year")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")

NUMERIC_FEATURES: tuple[str, ...] = (
    TENURE_MONTHS,
    MONTHLY_SPEND,
    SUPPORT_TICKETS,
    LAST_LOGIN_HOUR,
)
CATEGORICAL_FEATURES: tuple[str, ...] = (CONTRACT_TYPE, REGION)
BOOLEAN_FEATURES: tuple[str, ...] = (IS_ENTERPRISE,)
DATE_FEATURES: tuple[str, ...] = (SIGNUP_DATE,)

# What the model (and so the model server) takes as input: everything but id and label.
MODEL_INPUT_COLUMNS: tuple[str, ...] = (
    SIGNUP_DATE,
    TENURE_MONTHS,
    MONTHLY_SPEND,
    CONTRACT_TYPE,
    IS_ENTERPRISE,
    REGION,
    SUPPORT_TICKETS,
    LAST_LOGIN_HOUR,
)

ALL_COLUMNS: tuple[str, ...] = (CUSTOMER_ID, *MODEL_INPUT_COLUMNS, TARGET)

# pandas dtypes of a validated frame. Nullable integer types keep a null countable
# instead of turning a column into float behind the user's back.
CANONICAL_DTYPES: dict[str, str] = {
    CUSTOMER_ID: "string",
    SIGNUP_DATE: "datetime64[ns]",
    TENURE_MONTHS: "Int64",
    MONTHLY_SPEND: "float64",
    CONTRACT_TYPE: "string",
    IS_ENTERPRISE: "boolean",
    REGION: "string",
    SUPPORT_TICKETS: "Int64",
    LAST_LOGIN_HOUR: "Int64",
    TARGET: "Int64",
}
