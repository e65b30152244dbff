"""The fixed holdout: rows chosen by a stable hash of ``customer_id``.

A customer's bucket depends only on its id and the salt, never on the snapshot,
the row order or the process, so a customer never moves between training and
holdout across snapshots. Changing ``salt`` or ``fraction`` is the only way to
change the selection ("changes only when asked").
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from churn_platform.core import schema as s

_BUCKETS = 10_000


def holdout_mask(
    customer_ids: pd.Series, fraction: float = 0.2, salt: str = "churn-holdout-v1"
) -> np.ndarray:
    """True for ids in the holdout. ``fraction`` in (0, 1); the same id always gets the same answer."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    key = hashlib.sha256(salt.encode()).digest()[:16].hex()[:16]
    hashes = pd.util.hash_pandas_object(customer_ids.astype("string"), index=False, hash_key=key)
    return (hashes.to_numpy() % _BUCKETS) < int(round(fraction * _BUCKETS))


def split(
    frame: pd.DataFrame, fraction: float = 0.2, salt: str = "churn-holdout-v1"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of a canonical frame."""
    mask = holdout_mask(frame[s.CUSTOMER_ID], fraction, salt)
    return frame.loc[~mask].reset_index(drop=True), frame.loc[mask].reset_index(drop=True)
