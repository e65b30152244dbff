"""The spec's optional ``serving:`` section: how strict a model's server is with requests.

By default a server is lenient where MLflow's scoring server and the model are: a value of
a categorical feature outside its ``allowed`` list is scored as the model's pipeline
handles it (the platform's encoders treat it as unknown: one-hot all zero, frequency 0,
native code missing) and a field the spec does not declare is ignored; both are counted
per field. A spec can make either strict::

    serving:
      unseen_categories: refuse   # score (default) | refuse: a 4xx naming the field
      unknown_fields: refuse      # ignore (default) | refuse: a 4xx naming the field

The section travels with the model (it is part of the logged spec). A spec without it, or
with only the defaults, has the same hash as before the section existed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Names a served prediction carries beside its inputs (answers, inference log): no feature
#: or target may take one.
RESERVED_NAMES = frozenset(
    {"entity_id", "request_id", "probability", "model_version", "ts"}
    | {"unseen_fields", "ignored_fields"}  # a lenient server's notes on a logged line
)


class ServingRules(BaseModel):
    """How a model server treats values and fields the spec does not declare."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unseen_categories: Literal["score", "refuse"] = Field(
        default="score",
        description="a categorical value outside 'allowed': score it as the model handles "
        "unknown values (counted), or refuse the request naming the field",
    )
    unknown_fields: Literal["ignore", "refuse"] = Field(
        default="ignore",
        description="a record field the spec does not declare: ignore it (counted), or "
        "refuse the request naming the field",
    )

    @property
    def refuses_unseen(self) -> bool:
        """Whether a categorical value outside ``allowed`` is a 4xx."""
        return self.unseen_categories == "refuse"

    @property
    def refuses_unknown(self) -> bool:
        """Whether an undeclared field is a 4xx."""
        return self.unknown_fields == "refuse"


DEFAULT_SERVING_RULES = ServingRules()
