"""Fault injection (tests and demos): a fraction of scoring requests fail on purpose."""

from __future__ import annotations

import random

FAULT_RATE_VAR = "CHURN_FAULT_RATE"
FAULT_SEED_VAR = "CHURN_FAULT_SEED"


class FaultInjector:
    """Fails ``rate`` of the requests it is asked about; ``seed`` fixes the sequence.

    An injected fault is answered as a 500 and counted as 5xx like a real failure, after
    the request's input passed validation.
    """

    def __init__(self, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be a fraction in [0, 1], got {rate!r}")
        self.rate = rate
        self._rng = random.Random(seed)

    def fault(self) -> str | None:
        """The error of an injected fault for this request, or None to score it."""
        if self.rate and self._rng.random() < self.rate:
            return f"injected fault ({FAULT_RATE_VAR}={self.rate})"
        return None
