"""The fixed holdout: rows chosen by a stable hash of ``customer_id``.

A customer's bucket depends only on its id and the salt, never on the snapshot,
the row order or the process, so a customer never moves between training and
holdout across snapshots. Changing ``salt`` or ``fraction`` is the only way to
change the selection ("changes only when asked").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churn_platform.core.spec import Spec

_BUCKETS = 10_000
DEFAULT_FRACTION = 0.2
DEFAULT_SALT = "churn-holdout-v1"


@dataclass(frozen=True)
class HoldoutConfig:
    """Which customers are held out, and when the holdout is big and balanced enough."""

    fraction: float = field(
        default=DEFAULT_FRACTION,
        metadata={
            "description": "Share of customers held out, in (0, 1). Changing it re-draws "
            "the holdout: do it only on purpose."
        },
    )
    salt: str = field(
        default=DEFAULT_SALT,
        metadata={
            "description": "Salt of the customer_id hash. Changing it re-draws the "
            "holdout: do it only on purpose."
        },
    )
    min_rows: int = field(
        default=200,
        metadata={"description": "Fewest holdout rows that measure an AUC (holdout_size check)."},
    )
    min_positive_rate: float = field(
        default=0.02,
        metadata={
            "description": "Each class must make up at least this share of the holdout "
            "(holdout_class_balance check)."
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"HoldoutConfig.fraction must be in (0, 1), got {self.fraction!r}")
        if not 0.0 <= self.min_positive_rate < 0.5:
            raise ValueError(
                "HoldoutConfig.min_positive_rate must be in [0, 0.5), got "
                f"{self.min_positive_rate!r}"
            )


def holdout_mask(
    customer_ids: pd.Series, fraction: float = DEFAULT_FRACTION, salt: str = DEFAULT_SALT
) -> np.ndarray:
    """True for ids in the holdout. ``fraction`` in (0, 1); the same id always gets the same answer."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    key = hashlib.sha256(salt.encode()).digest()[:16].hex()[:16]
    hashes = pd.util.hash_pandas_object(customer_ids.astype("string"), index=False, hash_key=key)
    return (hashes.to_numpy() % _BUCKETS) < int(round(fraction * _BUCKETS))


def split(
    frame: pd.DataFrame,
    fraction: float = DEFAULT_FRACTION,
    salt: str = DEFAULT_SALT,
    *,
    spec: Spec,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of a validated frame, by the hash of ``spec``'s entity id."""
    mask = holdout_mask(frame[spec.id_column], fraction, salt)
    return frame.loc[~mask].reset_index(drop=True), frame.loc[mask].reset_index(drop=True)
