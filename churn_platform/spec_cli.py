"""``python -m churn_platform spec infer|check``: write a starter spec from a table; validate one.

``spec infer DATA --target COL --id COL [-o spec.yaml]`` profiles DATA (a CSV/Parquet file or
folder, or a SQLAlchemy URL with ``--table``/``--query``, read exactly as the pipeline's data
source reads it) and writes a commented spec a person edits (``core.spec_infer`` infers it,
``core.spec_starter`` writes it).

``spec check [DATA] [--spec PATH]`` validates the spec in effect (``--spec``, else
``CHURN_SPEC``, else the shipped one) and prints what it declares; given DATA, it maps the
rows through the spec and runs the data contract, listing every rule the data would fail.
Exit codes: 0 fine, 1 the data fails a blocking rule or lacks a column the spec needs,
2 the spec, the options or the data source are unusable (the message names the key or file).
Nothing else runs: no Dagster instance, no MLflow, no server.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HELP = "infer a starter table spec from your data, or check a spec (and data against it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spec`` subcommand group: ``infer`` and ``check``."""
    sub = parser.add_subparsers(dest="spec_command", required=True)
    infer = sub.add_parser("infer", help="write a commented starter spec from a table")
    _data_arguments(infer, required=True)
    infer.add_argument("--target", required=True, help="the label column (churned or not)")
    infer.add_argument("--id", dest="id_column", required=True, help="the customer id column")
    infer.add_argument("-o", "--output", help="write the spec here (default: print it)")
    infer.add_argument("--force", action="store_true", help="overwrite an existing --output")
    infer.add_argument("--name", help="the spec's name (default: the file or table name)")
    infer.add_argument(
        "--margin", type=float, default=0.10, help="widen observed ranges by this share (0.1)"
    )
    infer.add_argument(
        "--max-levels",
        type=int,
        default=50,
        help="text with at most this many distinct values is categorical (50)",
    )
    check = sub.add_parser("check", help="validate a spec; given DATA, run its contract on it")
    _data_arguments(check, required=False)
    check.add_argument("--spec", help="the spec file (default: CHURN_SPEC, else the shipped one)")
    check.add_argument("--model", help="check this platform-file model's spec (CHURN_PLATFORM)")


def _data_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "data",
        nargs=None if required else "?",
        metavar="DATA",
        help="a .csv/.parquet file or folder, or a SQLAlchemy URL (with --table or --query)",
    )
    parser.add_argument("--table", help="SQL source: the table to read")
    parser.add_argument("--query", help="SQL source: a query to run instead of a table")
    parser.add_argument("--sep", help="CSV source: the field separator (default ',')")


def load_data(
    data: str, table: str | None = None, query: str | None = None, sep: str | None = None
) -> Any:
    """The raw rows of DATA exactly as the pipeline's data source reads them (``RawSnapshot``)."""
    from churn_platform.resources.data_source import DataSourceError, FileSource, SqlSource

    if "://" in data or data.startswith("sqlite:"):
        if not (table or query):
            raise DataSourceError(
                f"{data.split('://')[0]} URL given: add --table NAME or --query SQL"
            )
        return SqlSource(data, table or None, query or None).load()
    if table or query:
        raise DataSourceError(f"--table/--query are for SQL URLs; {data!r} is read as a file")
    return FileSource(data, {"sep": sep} if sep else {}).load()


def _data_name(data: str, table: str | None) -> str:
    if table:
        return table
    if "://" in data:
        return "churn"
    return Path(data).stem or "churn"


def infer(args: argparse.Namespace) -> int:
    """``spec infer``: write the starter spec; 2 with the reason when it cannot."""
    from churn_platform.core.mapping import DataSourceError
    from churn_platform.core.spec_infer import InferOptions, SpecInferError
    from churn_platform.core.spec_starter import infer_spec_text

    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        print(
            f"{out} exists; a spec you edited would be lost: choose another -o or add --force",
            file=sys.stderr,
        )
        return 2
    try:
        options = InferOptions(margin=args.margin, max_levels=args.max_levels)
        raw = load_data(args.data, args.table, args.query, args.sep)
        text, spec = infer_spec_text(
            raw.frame,
            target=args.target,
            id_column=args.id_column,
            name=args.name or _data_name(args.data, args.table),
            origin=str(raw.description.get("location", args.data)),
            options=options,
        )
    except (DataSourceError, SpecInferError) as exc:
        print(f"spec infer: {exc}", file=sys.stderr)
        return 2
    kinds = Counter(f.kind for f in spec.features.values())
    summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        where = f"{args.data}" + (f" --table {args.table}" if args.table else "")
        print(f"wrote {out}: {len(spec.features)} features ({summary})")
        print(f"edit it, then: python -m churn_platform spec check {where} --spec {out}")
        print("\n".join(run_hint(args, out, spec.name)))
    return 0


def run_hint(args: argparse.Namespace, out: Path, name: str) -> list[str]:
    """How to run the pipeline on DATA with the spec at ``out``: the source settings (the
    default source is the synthetic example, which has none of this table's columns) and
    the same in a platform file."""
    if args.table or args.query or "://" in args.data:
        what = f"CHURN_SOURCE_TABLE={args.table}" if args.table else "CHURN_SOURCE_QUERY='...'"
        env = f"CHURN_SOURCE=sql CHURN_SOURCE_URL='<the URL>' {what}"
        pick = f"table: {args.table}" if args.table else "query: '...'"
        source = f"{{kind: sql, url_env: CHURN_SOURCE_URL, {pick}}}"
    else:
        env = f"CHURN_SOURCE=file CHURN_SOURCE_PATH={args.data}"
        source = f"{{kind: file, path: {args.data}}}"
    return [
        f"and run with it on your data: {env} CHURN_SPEC={out} python -m churn_platform run",
        f"or in a platform file (CHURN_PLATFORM=platform.yaml): models: [{{name: {name}, "
        f"spec: {out}, source: {source}}}]",
    ]


def describe_spec(spec: Any) -> list[str]:
    """What a spec declares, one line per part (``spec check`` prints it)."""
    kinds = Counter(f.kind for f in spec.features.values())
    lines = [
        f"spec {spec.name!r} (hash {spec.short_hash}): valid",
        f"  entity id: {spec.id_column}" + _from(spec, spec.id_column),
        f"  target: {spec.target_column}{_from(spec, spec.target_column)}; churned = "
        f"{list(spec.target.positive)}, stayed = {list(spec.target.negative)}",
        f"  features ({len(spec.features)}: "
        + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        + "):",
    ]
    for name, feature in spec.features.items():
        detail = feature.kind
        if feature.range is not None:
            low, high = ("open" if b is None else f"{b:g}" for b in feature.range)
            detail += f" in [{low}, {high}]"
        if feature.allowed is not None:
            detail += f" of {list(feature.allowed)}"
        if feature.period is not None:
            detail += f" period {feature.period:g}"
        lines.append(
            f"    {name}{_from(spec, name)}: {detail}; nulls <= {spec.null_rate_limit(name):g}"
        )
    lines.append(
        f"  dataset: at least {spec.dataset.min_rows} row(s); nulls <= {spec.dataset.max_null_rate:g} by default"
    )
    lines.append(
        f"  model: AUC >= {spec.model.min_auc}, slice AUC >= {spec.model.min_slice_auc} "
        f"(slices with >= {spec.model.min_slice_rows} holdout rows)"
    )
    lines.append(f"  slices: {', '.join(spec.slice_names()) or 'none'}")
    invariances = [
        f"{i.name} ({i.feature} "
        + (f"{i.from_} -> {i.to}" if i.step is None else f"+{i.step:g}")
        + f" must {i.direction} churn for > {i.min_fraction:.0%} of rows)"
        for i in spec.invariances
    ]
    lines.append(f"  invariances: {'; '.join(invariances) or 'none'}")
    lines.append(
        f"  drift: PSI > {spec.drift.threshold:g} on any of {', '.join(spec.drift_features()) or 'none'}"
    )
    lines.append(f"  holdout: {spec.holdout.fraction:.0%} of ids (salt {spec.holdout.salt!r})")
    return lines


def _from(spec: Any, column: str) -> str:
    source = spec.source_of(column)
    return "" if source == column else f" (from column {source!r})"


def unmapped_target_values(spec: Any, frame: Any) -> list[str]:
    """Distinct values of the source target column that the spec maps to neither 1 nor 0."""
    from churn_platform.core.mapping import NULL_TOKENS

    source = spec.source_of(spec.target_column)
    known = set(spec.target.value_map())
    values = frame[source].dropna().unique()
    return sorted(
        str(v)
        for v in values
        if str(v) not in known
        and str(v).strip().lower() not in NULL_TOKENS
        and not (isinstance(v, float) and float(v).is_integer() and str(int(v)) in known)
    )


def check_data(spec: Any, raw: Any) -> tuple[list[str], bool]:
    """Map ``raw`` through ``spec`` and run its contract: report lines and whether it passes."""
    from churn_platform.core import contract
    from churn_platform.core.mapping import apply_mapping
    from churn_platform.core.spec import columns_missing

    frame = raw.frame
    location = raw.description.get("location", "the data")
    lines = [f"data: {location} ({len(frame):,} rows, {len(frame.columns)} columns)"]
    missing = columns_missing(spec, [str(c) for c in frame.columns])
    if missing:
        for source in missing:
            owner = next(c for c in spec.all_columns if spec.source_of(c) == source)
            role = (
                "the entity id"
                if owner == spec.id_column
                else "the target"
                if owner == spec.target_column
                else f"spec feature {owner!r}"
            )
            via = "" if owner == source else f" (source: {source!r})"
            lines.append(
                f"  MISSING: {role}{via} is not a column of {location}; fix its 'source' or "
                f"remove it from the spec (features.{owner})"
                if role.startswith("spec feature")
                else f"  MISSING: {role} column {source!r} is not in {location}; fix the spec's "
                f"{'entity_id' if owner == spec.id_column else 'target'}.column/source"
            )
        lines.append(f"  columns there: {[str(c) for c in frame.columns]}")
        return lines, False
    unmapped = unmapped_target_values(spec, frame)
    if unmapped:
        lines.append(
            f"  target {spec.target_column!r} holds value(s) {unmapped[:10]} that the spec maps "
            f"to neither churned {list(spec.target.positive)} nor stayed "
            f"{list(spec.target.negative)}: add them to target.positive or target.negative"
        )
    ignored = [
        str(c)
        for c in frame.columns
        if str(c) not in {spec.source_of(c2) for c2 in spec.all_columns}
    ]
    if ignored:
        lines.append(f"  columns the spec does not use (ignored): {', '.join(ignored)}")
    mapped = apply_mapping(frame, required=(), spec=spec)
    results = contract.evaluate_contract(mapped, spec=spec)
    failed = [r for r in results if not r.passed]
    blocking = contract.blocking_failures(results)
    lines.append(
        f"  contract: {len(results) - len(failed)} of {len(results)} rules pass"
        + (f"; {len(blocking)} blocking failure(s)" if blocking else "")
    )
    for result in failed:
        level = "FAIL" if result.blocking else "warn"
        text = result.message.removeprefix("FAILED: ") or (
            f"{result.description}; observed {result.observed}, bound {result.bound}, "
            f"{result.failing_rows:,} row(s)"
        )
        lines.append(f"  {level} {result.name}: {text}")
    return lines, not blocking and not unmapped


def check(args: argparse.Namespace) -> int:
    """``spec check``: 0 valid (and the data passes), 1 the data fails, 2 the spec is invalid."""
    from churn_platform import settings
    from churn_platform.config import load_config
    from churn_platform.core.mapping import DataSourceError
    from churn_platform.core.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec) if args.spec else load_config().model(args.model).spec
    except (SpecError, settings.SettingsError) as exc:
        print(f"spec check: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe_spec(spec)))
    if not args.data:
        return 0
    try:
        raw = load_data(args.data, args.table, args.query, args.sep)
    except DataSourceError as exc:
        print(f"spec check: {exc}", file=sys.stderr)
        return 2
    lines, ok = check_data(spec, raw)
    print("\n".join(lines))
    print("the data passes the spec's contract" if ok else "the data FAILS the spec (see above)")
    return 0 if ok else 1


def run_from_args(args: argparse.Namespace) -> int:
    """Dispatch ``spec infer`` / ``spec check``. A reader that stops early (``| head``) ends
    the command quietly, with the shell's code for a closed pipe (141), not a traceback."""
    try:
        code = infer(args) if args.spec_command == "infer" else check(args)
        sys.stdout.flush()  # a closed pipe shows here when the last lines were buffered
    except BrokenPipeError:
        # whatever is still buffered would fail again at exit: send it nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code
