"""Fault injection (tests and demos): a fraction of scoring requests fail on purpose, or
(mode ``shuffle``) are answered with other requests' scores."""

from __future__ import annotations

import random
from collections import deque

import numpy as np

FAULT_RATE_VAR = "CHURN_FAULT_RATE"
FAULT_SEED_VAR = "CHURN_FAULT_SEED"
FAULT_MODE_VAR = "CHURN_FAULT_MODE"
FAULT_MODES = ("error", "shuffle")
SHUFFLE_POOL = 1000  # recent scores a shuffled answer is drawn from


class FaultInjector:
    """Fails ``rate`` of the requests it is asked about; ``seed`` fixes the sequence.

    Mode ``error`` (default): an injected fault is answered as a 500 and counted as 5xx
    like a real failure, after the request's input passed validation. Mode ``shuffle``:
    nothing fails, but ``rate`` of the scores are swapped for scores the server gave
    other records recently, so the scores keep their distribution and lose their order
    (what a model with misaligned columns looks like from outside).
    """

    def __init__(self, rate: float, seed: int | None = None, mode: str = "error") -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be a fraction in [0, 1], got {rate!r}")
        if mode not in FAULT_MODES:
            raise ValueError(f"{FAULT_MODE_VAR} must be one of {FAULT_MODES}, got {mode!r}")
        self.rate = rate
        self.mode = mode
        self._rng = random.Random(seed)
        self._pool: deque[float] = deque(maxlen=SHUFFLE_POOL)

    def fault(self) -> str | None:
        """The error of an injected fault for this request, or None to score it."""
        if self.mode == "error" and self.rate and self._rng.random() < self.rate:
            return f"injected fault ({FAULT_RATE_VAR}={self.rate})"
        return None

    def shuffle(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` as answered: in mode ``shuffle`` each one is, with chance ``rate``,
        replaced by a score drawn from the recent ones (these included)."""
        if self.mode != "shuffle" or not self.rate:
            return scores
        self._pool.extend(float(s) for s in scores)
        out = np.array(scores, dtype=float)
        for i in range(len(out)):
            if self._rng.random() < self.rate:
                out[i] = self._pool[self._rng.randrange(len(self._pool))]
        return out
