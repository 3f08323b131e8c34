"""`rollouts plan` and `rollouts status`: the path a Rollout spec will follow, and where a rollout is on it.

`timeline(plan)` is pure: it walks the compiled Plan the way decide() will, step by step. A
setWeight step (capped by maxTrafficWeight) first scales the canary to ceil(replicas * weight / 100)
and then shifts the weight; pause and analysis steps leave weight and replicas as they are; the
stable revision keeps its full size until the end, when the canary is scaled to full size, becomes
stable, and the old stable is scaled down after scaleDownDelaySeconds. Only timed pauses count
towards the minimum time; an indefinite pause (or spec.paused) makes it "∞ (manual)".
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec

from services.planner.basic_canary import desired_counts
from services.planner.decide import canary_size
from services.planner.state import (
    AnalysisStep,
    CanaryScaleStep,
    ExperimentStep,
    HeaderRouteStep,
    MirrorRouteStep,
    PauseStep,
    Plan,
    SetWeightStep,
)
from shared.durations import format_duration
from shared.messages import ArgValue, TemplateRef

MANUAL = "∞ (manual)"


class TimelineEntry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, rename="camel"):
    """One step of the timeline (or the final promotion, `kind == "promote"`, `step is None`)."""

    step: int | None  # 1-based, as Argo counts steps in messages; None for the final promotion
    kind: str  # setWeight | pause | analysis | promote
    set_weight: int  # share of traffic on the canary while at this step
    canary_replicas: int
    stable_replicas: int
    min_seconds: float  # sum of the timed pauses up to and including this step
    manual: bool  # an indefinite pause (or spec.paused) stands at or before this step
    min_time: str  # min_seconds formatted, or "∞ (manual)"
    description: str
    requested_weight: int | None = None  # the setWeight as written, when maxTrafficWeight capped it
    pause_seconds: float | None = None
    until_promoted: bool = False
    templates: tuple[TemplateRef, ...] = ()
    args: tuple[ArgValue, ...] = ()
    scale_down_delay_seconds: float | None = None  # promote: when the old stable is scaled down


def timeline(plan: Plan) -> list[TimelineEntry]:
    """The steps an update of the rollout goes through, then its promotion (pure)."""
    replicas = plan.replicas
    scale: CanaryScaleStep | None = None  # the setCanaryScale in force, as decide() tracks it
    weight = 0
    canary = 0
    stable = replicas
    basic = plan.routing is None and plan.strategy == "canary"  # the pod counts carry the split
    elapsed = 0.0
    manual = plan.paused  # spec.paused holds the update before its first step
    out: list[TimelineEntry] = []

    def add(step: int | None, kind: str, description: str, **extra: Any) -> None:
        """An entry with the weight, replica counts and minimum time as they stand now."""
        out.append(
            TimelineEntry(
                step=step,
                kind=kind,
                set_weight=extra.pop("set_weight", weight),
                canary_replicas=extra.pop("canary_replicas", canary),
                stable_replicas=extra.pop("stable_replicas", stable),
                min_seconds=elapsed,
                manual=manual,
                min_time=MANUAL if manual else format_duration(elapsed),
                description=description,
                **extra,
            )
        )

    for i, step in enumerate(plan.steps, start=1):
        match step:
            case SetWeightStep(weight=requested):
                weight = min(requested, plan.max_traffic_weight)
                capped = weight != requested
                if basic:
                    canary, stable = desired_counts(replicas, weight)
                    how = (
                        f": {canary} canary and {stable} stable pods (no traffic router: the pod counts "
                        f"carry the split; maxSurge {plan.max_surge}, maxUnavailable {plan.max_unavailable})"
                    )
                else:
                    canary = canary_size(plan, weight, scale)
                    how = f": canary scaled to {canary} of {replicas} first"
                add(
                    i,
                    "setWeight",
                    f"set weight {weight}"
                    + (f" (setWeight {requested} capped by maxTrafficWeight)" if capped else "")
                    + how,
                    requested_weight=requested if capped else None,
                )
            case PauseStep(seconds=seconds):
                if seconds is None:
                    manual = True
                    what = "pause until promoted"
                elif seconds <= 0:
                    what = "pause 0s (skipped)"
                else:
                    elapsed += seconds
                    what = f"pause {format_duration(seconds)}"
                add(
                    i,
                    "pause",
                    what,
                    pause_seconds=None if seconds is None else max(seconds, 0.0),
                    until_promoted=seconds is None,
                )
            case AnalysisStep(templates=templates, args=args):
                add(
                    i,
                    "analysis",
                    f"analysis {describe_analysis(templates, args)}",
                    templates=templates,
                    args=args,
                )
            case CanaryScaleStep(replicas=fixed, weight=scale_weight):
                scale = step if (fixed is not None or scale_weight is not None) else None
                canary = canary_size(plan, weight, scale)
                if fixed is not None:
                    what = f"canary scale fixed at {canary} replica(s)"
                elif scale_weight is not None:
                    what = f"canary scaled to {scale_weight}% of replicas ({canary})"
                else:
                    what = "canary scale matches the traffic weight"
                add(i, "setCanaryScale", what)
            case HeaderRouteStep(route=route):
                suffix = " removed" if not route.match else ": matching requests to the canary"
                add(i, "setHeaderRoute", f"header route {route.name}{suffix}")
            case MirrorRouteStep(route=route):
                suffix = (
                    " removed"
                    if not route.match
                    else f": {route.percentage}% of matching requests copied to the canary"
                )
                add(i, "setMirrorRoute", f"mirror route {route.name}{suffix}")
            case ExperimentStep(templates=ex_templates, seconds=ex_seconds, analyses=ex_analyses):
                if ex_seconds is not None:
                    elapsed += ex_seconds
                sets = ", ".join(
                    f"{t.name} ({t.spec_ref}, {t.replicas}"
                    + (f", {t.weight}% of traffic)" if t.weight else ")")
                    for t in ex_templates
                )
                runs = ", ".join(a.name for a in ex_analyses) or "no analysis"
                how = (
                    f"for {format_duration(ex_seconds)}"
                    if ex_seconds is not None
                    else "until its required analyses end"
                )
                add(i, "experiment", f"experiment {how}: {sets}; analyses {runs}")
    delay = plan.scale_down_delay_seconds
    add(
        None,
        "promote",
        f"promote: canary scaled to {replicas}, becomes stable; old stable scaled down after {format_duration(delay)}",
        set_weight=100,
        canary_replicas=replicas,
        scale_down_delay_seconds=delay,
    )
    return out


def describe_analysis(templates: tuple[TemplateRef, ...], args: tuple[ArgValue, ...]) -> str:
    names = ", ".join(t.template_name + (" (cluster)" if t.cluster_scope else "") for t in templates)
    return names + (f" ({describe_args(args)})" if args else "")


def describe_args(args: tuple[ArgValue, ...]) -> str:
    parts = []
    for a in args:
        if a.value_from is not None:
            parts.append(f"{a.name}=<{a.value_from}>")
        else:
            parts.append(f"{a.name}={a.value if a.value is not None else ''}")
    return ", ".join(parts)


def notes(plan: Plan) -> list[str]:
    """Header lines: what the timeline does not show by itself."""
    lines = [
        f"First deploy skips the steps: revision 1 goes straight to {plan.replicas} stable replica(s); "
        "the timeline below is what each later update follows."
    ]
    if plan.paused:
        lines.append("spec.paused is set: an update waits for `rollouts resume` before step 1.")
    if plan.max_traffic_weight != 100:
        lines.append(f"maxTrafficWeight {plan.max_traffic_weight}: setWeight steps are capped to it.")
    lines.append("Minimum times count timed pauses only; readiness, traffic shifts and analysis add to them.")
    return lines


def timeline_document(name: str, namespace: str, plan: Plan) -> dict[str, Any]:
    """The `-o json` form of one Rollout's timeline."""
    return {
        "name": name,
        "namespace": namespace,
        "replicas": plan.replicas,
        "maxTrafficWeight": plan.max_traffic_weight,
        "scaleDownDelaySeconds": plan.scale_down_delay_seconds,
        "firstDeploySkipsSteps": True,
        "notes": notes(plan),
        "timeline": msgspec.json.decode(msgspec.json.encode(timeline(plan))),
    }


def timeline_view(name: str, namespace: str, plan: Plan) -> str:
    """The human form of one Rollout's timeline (pure)."""
    entries = timeline(plan)
    steps = len(plan.steps)
    lines = [f"Rollout {namespace}/{name}: {plan.replicas} replica(s), {steps} step(s)"]
    lines += [f"  {n}" for n in notes(plan)]
    head = ("STEP", "KIND", "WEIGHT", "CANARY", "STABLE", "MIN TIME", "WHAT")
    rows = [
        (
            str(e.step) if e.step is not None else "-",
            e.kind,
            str(e.set_weight),
            str(e.canary_replicas),
            str(e.stable_replicas),
            e.min_time,
            e.description,
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    right = {2, 3, 4}
    lines.append("")
    for r in (head, *rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(lines)


def plan_command(docs: list[Any], filename: str, output: str | None) -> int:
    """Print the timeline of every Rollout in the (already loaded and validated) documents."""
    from services.cli.client import CliError
    from services.planner.plan import compile_plan
    from shared.specs import Rollout

    rollouts = [d for d in docs if isinstance(d, Rollout)]
    if not rollouts:
        raise CliError(f"{filename}: no Rollout in the file")
    items = []
    for r in rollouts:
        name = (r.metadata.name if r.metadata else None) or "?"
        ns = (r.metadata.namespace if r.metadata else None) or "default"
        items.append((name, ns, compile_plan(r)))
    if output == "json":
        print(json.dumps({"items": [timeline_document(n, ns, p) for n, ns, p in items]}, indent=2))
    else:
        print("\n\n".join(timeline_view(n, ns, p) for n, ns, p in items))
    return 0


# --- status ------------------------------------------------------------------------------------


def status_line(phase: str, message: str) -> str:
    """As `kubectl argo rollouts status`: "Healthy", "Paused - CanaryPauseStep", "Degraded - ..."."""
    return f"{phase} - {message}" if message else phase


def status_exit_code(phase: str) -> int:
    return 1 if phase == "Degraded" else 0


async def status_command(
    client: Any, namespace: str, name: str, *, watch: bool, timeout: float | None
) -> int:
    """Print the rollout's status; with `watch`, follow it until Healthy (0), Degraded (1) or the
    timeout (CliError, exit 1). `timeout` None or 0: wait forever (as Argo's --timeout 0)."""
    from services.cli.client import CliError
    from shared import subjects

    subjects.check_token(namespace, "namespace")
    subjects.check_token(name, "name")
    if not watch:
        state = await client.state(namespace, name)
        print(status_line(state.phase, state.message))
        return status_exit_code(state.phase)
    # Subscribe before the first read, so no change between the read and the subscription is lost.
    feed = await client.feed(namespace, name, history=False)
    deadline = time.monotonic() + timeout if timeout else None
    last = ""
    try:
        while True:
            state = await client.state(namespace, name)
            line = status_line(state.phase, state.message)
            if line != last:
                print(line, flush=True)
                last = line
            if state.phase in ("Healthy", "Degraded"):
                return status_exit_code(state.phase)
            wait = 1.0  # re-read now and then even without events
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CliError(
                        f"rollout {namespace}/{name}: timed out after {timeout:g}s waiting for the rollout "
                        f"to be Healthy (status: {line})"
                    )
                wait = min(wait, left)
            await feed.get(timeout=wait)
            while not feed.queue.empty():  # one re-read covers a burst of events
                feed.queue.get_nowait()
    finally:
        await feed.close()
