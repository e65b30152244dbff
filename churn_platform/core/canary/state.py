"""Where a rollout is: the states of the canary state machine."""

from __future__ import annotations

import enum


class CanaryState(enum.StrEnum):
    """Where a rollout is. The last three are terminal."""

    PENDING = "pending"
    SHADOWING = "shadowing"
    PROGRESSING = "progressing"
    ANALYSING = "analysing"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """True for ``succeeded``, ``rolled_back`` and ``aborted``."""
        return self in (CanaryState.SUCCEEDED, CanaryState.ROLLED_BACK, CanaryState.ABORTED)
