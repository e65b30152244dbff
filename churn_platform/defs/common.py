"""Small helpers shared by the asset modules: config from core dataclasses, check results,
markdown, upstream metadata."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, TypeVar

import dagster as dg
import pandas as pd
import pydantic

from churn_platform.config import ModelConfig
from churn_platform.core.markdown import markdown_table
from churn_platform.core.model_checks import CheckOutcome

OWNERS = ["team:ml-platform"]

T = TypeVar("T")


class CoreConfig(dg.Config):
    """A Dagster config whose fields are those of core dataclasses (see ``config_from``)."""

    def to_core(self, core: type[T]) -> T:
        """``core`` built from this config's fields of the same names (validated there)."""
        names = {f.name for f in dataclasses.fields(core)}  # type: ignore[arg-type]
        return core(**{k: v for k, v in self.model_dump().items() if k in names})


def field_descriptions(core: type) -> dict[str, str]:
    """Each field's description: its ``metadata={"description": ...}``, else the dataclass
    docstring's ``name: text`` line.

    A docstring description may continue on more-indented lines; the first line that is
    blank, not indented, or starts another field ends it.
    """
    names = {f.name for f in dataclasses.fields(core)}
    out: dict[str, str] = {}
    current: str | None = None
    for line in inspect.cleandoc(core.__doc__ or "").splitlines():
        entry = re.match(r"^(\w+): (.+)$", line)
        if entry and entry.group(1) in names:
            current = entry.group(1)
            out[current] = entry.group(2).strip()
        elif current and line.startswith((" ", "\t")) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    for f in dataclasses.fields(core):
        if f.metadata.get("description"):
            out[f.name] = str(f.metadata["description"])
    return out


def _config_type(hint: Any) -> Any:
    """Dagster config has lists, not tuples: ``tuple[int, ...]`` becomes ``list[int]``."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]  # type: ignore[misc]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_config_type(a) for a in typing.get_args(hint))]  # noqa: UP007
    return hint


def config_from(*cores: type, extra: dict[str, tuple[type, Any, str]] | None = None) -> Any:
    """A ``dg.Config`` base class with every field of the ``cores`` dataclasses.

    Subclass it (``class GateSettings(config_from(gate.GateConfig)): ...``) so each default
    is written once, in core. Type, default and description (from the dataclass docstring,
    see ``field_descriptions``) come from the dataclass; a field present in several cores
    appears once, with the first one's default, and feeds all of them. ``extra`` adds
    settings that belong to the asset, not to a core step: name -> (type, default,
    description). A field without a description is an error naming the class and field.
    """
    fields: dict[str, Any] = {}
    for core in cores:
        hints = typing.get_type_hints(core)
        described = field_descriptions(core)
        for f in dataclasses.fields(core):
            if f.name in fields:
                continue
            if f.name not in described:
                raise ValueError(
                    f"{core.__module__}.{core.__qualname__}.{f.name} has no description: give the "
                    "field metadata={'description': ...} or add a line "
                    f"'{f.name}: <what it means>' to the class docstring (the Dagster "
                    "launchpad shows it)"
                )
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = ... if f.default is dataclasses.MISSING else f.default  # ...: required
            if isinstance(default, tuple):
                default = list(default)
            fields[f.name] = (
                _config_type(hints[f.name]),
                pydantic.Field(default=default, description=described[f.name]),
            )
    for key, (kind, default, description) in (extra or {}).items():
        fields[key] = (kind, pydantic.Field(default=default, description=description))
    name = "".join(core.__name__ for core in cores) + "Fields"
    return pydantic.create_model(name, __base__=CoreConfig, __module__=__name__, **fields)


def md_table(frame: pd.DataFrame | None, max_rows: int = 20) -> str:
    """A markdown table of at most ``max_rows`` rows (empty string for nothing)."""
    if frame is None or frame.empty:
        return ""
    table = markdown_table(frame.head(max_rows))
    more = len(frame) - max_rows
    return table + (f"\n\n_{more} more rows not shown_" if more > 0 else "")


def metadata_value(value: Any) -> Any:
    """A plain value as Dagster metadata (None becomes the text 'n/a')."""
    if value is None:
        return "n/a"
    if isinstance(value, float | int | str | bool):
        return value
    return str(value)


def check_result(
    outcome: CheckOutcome,
    asset_key: str | dg.AssetKey,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """A core ``CheckOutcome`` as a Dagster check result with its evidence in metadata."""
    metadata: dict[str, Any] = {k: metadata_value(v) for k, v in outcome.metadata.items()}
    metadata["summary"] = outcome.description
    if outcome.table is not None and not outcome.table.empty:
        metadata["evidence"] = dg.MetadataValue.md(md_table(outcome.table))
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=severity,
        metadata=metadata,
        description=outcome.description,
    )


def asset_key(model: ModelConfig, asset: str) -> dg.AssetKey:
    """The key of ``asset`` of ``model`` (prefixed by the model's name in a platform file)."""
    return dg.AssetKey(list(model.key(asset)))


def asset_args(model: ModelConfig, name: str, *inputs: str, **extra: Any) -> dict[str, Any]:
    """The ``dg.asset`` arguments every asset of ``model`` shares: its name, key prefix, group
    and owners, and its upstream ``inputs`` (asset names) under the same prefix."""
    return {
        "name": name,
        "key_prefix": list(model.key_prefix) or None,
        "group_name": model.group,
        "owners": OWNERS,
        "ins": {i: dg.AssetIn(key=asset_key(model, i)) for i in inputs},
        **extra,
    }


def check_specs(
    model: ModelConfig, asset: str, checks: dict[str, str], blocking: bool = True
) -> list[dg.AssetCheckSpec]:
    """One check spec per ``name -> description`` of ``checks`` on ``model``'s ``asset``."""
    key = asset_key(model, asset)
    return [
        dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=text)
        for name, text in checks.items()
    ]


def model_resource(context: Any, model: ModelConfig, base: str) -> Any:
    """``model``'s own resource ``base`` (``data_source``, ``mlflow_registry``, ``deployment``,
    ``inference_log``) from a run's or a tick's resources."""
    return getattr(context.resources, model.resource_key(base))


def model_resource_keys(model: ModelConfig, *bases: str) -> set[str]:
    """The resource keys of ``model``'s ``bases`` (an asset's ``required_resource_keys``)."""
    return {model.resource_key(b) for b in bases}


def upstream_metadata(
    context: dg.AssetExecutionContext, asset: str | dg.AssetKey, key: str
) -> str | None:
    """A metadata entry of ``asset``'s materialization in this run, else its latest one (None
    when there is none). This run's first: a concurrent run may have materialised it since."""
    asset = asset if isinstance(asset, dg.AssetKey) else dg.AssetKey(asset)
    own = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    materialization = next(
        (
            m
            for m in (r.event_log_entry.asset_materialization for r in reversed(own))
            if m is not None and m.asset_key == asset
        ),
        None,
    )
    if materialization is None:
        event = context.instance.get_latest_materialization_event(asset)
        materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    entry = materialization.metadata.get(key)
    return str(entry.value) if entry is not None else None
