"""Resolving an analysis run's templates: composition, argument merging and {{args.name}} substitution (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from shared.messages import ArgValue, TemplateRef

_PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")

# (namespace or None for cluster scope, name) -> the template document as builtins, or None
TemplateLookup = Callable[[str | None, str], Mapping[str, Any] | None]


class ResolveError(ValueError):
    """The run cannot start; the message names the template or argument at fault."""


class ResolvedRun:
    def __init__(
        self,
        metrics: list[dict[str, Any]],
        dry_run: set[str],
        *,
        retention: dict[str, int] | None = None,
        secrets: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.dry_run = dry_run
        self.retention = retention or {}
        # Arguments whose value is a secret stay {{args.name}} placeholders in the metrics: they are
        # filled in only by the worker taking the measurement, so secrets never travel or get stored.
        self.secrets = secrets or {}


def resolve(
    namespace: str,
    refs: tuple[TemplateRef, ...],
    run_args: tuple[ArgValue, ...],
    lookup: TemplateLookup,
    *,
    dry_run: tuple[str, ...] = (),
    retention: dict[str, int] | None = None,
) -> ResolvedRun:
    """Metrics of every referenced template (recursively), with arguments substituted."""
    metrics: list[dict[str, Any]] = []
    declared: dict[str, str | None] = {}
    dry: set[str] = set(dry_run)
    kept: dict[str, int] = {}
    secrets: dict[str, tuple[str, str]] = {}
    seen: set[tuple[bool, str]] = set()

    def visit(ref: TemplateRef, depth: int) -> None:
        if depth > 10:
            raise ResolveError(f"template {ref.template_name}: templates nest more than 10 levels deep")
        ident = (ref.cluster_scope, ref.template_name)
        if ident in seen:
            return
        seen.add(ident)
        kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
        doc = lookup(None if ref.cluster_scope else namespace, ref.template_name)
        if doc is None:
            where = "" if ref.cluster_scope else f" in namespace {namespace}"
            raise ResolveError(f"{kind} {ref.template_name!r} not found{where}")
        spec = doc.get("spec") or {}
        for arg in spec.get("args") or []:
            name = arg.get("name")
            secret_ref = (arg.get("valueFrom") or {}).get("secretKeyRef")
            if secret_ref is not None:
                secrets[name] = (str(secret_ref.get("name", "")), str(secret_ref.get("key", "")))
                declared.setdefault(name, None)
            elif name not in declared or declared[name] is None:
                declared[name] = arg.get("value")
        for r in spec.get("measurementRetention") or []:
            kept.setdefault(str(r.get("metricName", "")), int(r.get("limit", 0)))
        for m in spec.get("metrics") or []:
            if any(existing.get("name") == m.get("name") for existing in metrics):
                raise ResolveError(
                    f"{kind} {ref.template_name}: metric {m.get('name')!r} is defined twice in the run"
                )
            metrics.append(m)
        for d in spec.get("dryRun") or []:
            dry.add(d.get("metricName", ""))
        for nested in spec.get("templates") or []:
            visit(
                TemplateRef(
                    template_name=nested.get("templateName", ""),
                    cluster_scope=bool(nested.get("clusterScope")),
                ),
                depth + 1,
            )

    for ref in refs:
        visit(ref, 0)
    values: dict[str, str] = {}
    given = {a.name: a.value for a in run_args}
    for name, default in declared.items():
        if name in secrets and given.get(name) is None:
            continue
        value = given.get(name, default)
        if value is None:
            raise ResolveError(f"args.{name}: no value given by the rollout and no default in the template")
        values[name] = value
    for name, value in given.items():
        if value is not None:
            values.setdefault(name, value)
    secret_only = {n: r for n, r in secrets.items() if n not in values}
    substituted = [substitute(m, values, keep=set(secret_only)) for m in metrics]
    if "*" in dry:
        dry = {m.get("name", "") for m in substituted}
    kept.update(retention or {})
    return ResolvedRun(substituted, dry, retention=kept, secrets=secret_only)


def substitute(value: Any, args: Mapping[str, str], *, keep: set[str] | None = None) -> Any:
    """Replace {{args.name}} in every string of a metric; an unknown argument is an error;
    names in `keep` (secrets) are left as placeholders."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if keep and name in keep:
                return m.group(0)
            if name not in args:
                raise ResolveError(f"args.{name}: used in the template but not declared or given")
            return args[name]

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, list):
        return [substitute(v, args, keep=keep) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, args, keep=keep) for k, v in value.items()}
    return value
