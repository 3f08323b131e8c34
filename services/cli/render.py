"""Human views of rollouts, in the spirit of `kubectl argo rollouts get rollout` (pure: state in, text out)."""

from __future__ import annotations

import json

from services.planner.decide import iso
from services.planner.state import RolloutState
from services.planner.status import status_of
from shared.analysis_runs import AnalysisRunRecord
from shared.messages import RolloutEvent

ICONS = {"Healthy": "✔", "Progressing": "◌", "Paused": "॥", "Degraded": "✖"}


def rollout_view(s: RolloutState) -> str:
    st = status_of(s)
    steps = len(s.plan.steps)
    lines = [
        f"Name:            {s.name}",
        f"Namespace:       {s.namespace}",
        f"Status:          {ICONS.get(s.phase, '?')} {s.phase}",
    ]
    if s.message:
        lines.append(f"Message:         {s.message}")
    if s.plan.strategy == "blueGreen":
        lines.append("Strategy:        BlueGreen")
    else:
        lines += [
            "Strategy:        Canary",
            f"  Step:          {min(s.step_index, steps)}/{steps}",
            f"  SetWeight:     {s.set_weight}",
            f"  ActualWeight:  {s.actual_weight}",
        ]
    images: list[str] = []
    for r in reversed(s.revisions):
        role = _role(s, r.hash)
        if role:
            images.extend(f"{img} ({role})" for img in r.images or (r.hash,))
    if images:
        lines.append(f"Images:          {images[0]}")
        lines.extend(f"                 {img}" for img in images[1:])
    desired = s.plan.replicas
    lines += [
        "Replicas:",
        f"  Desired:       {desired}",
        f"  Current:       {st['replicas']}",
        f"  Updated:       {st['updatedReplicas']}",
        f"  Ready:         {st['readyReplicas']}",
        "",
        f"{'REVISION':<9} {'HASH':<11} {'ROLE':<7} {'REPLICAS':>8} {'READY':>6}  IMAGES",
    ]
    for r in reversed(s.revisions):
        lines.append(
            f"{('#' + str(r.number)):<9} {r.hash:<11} {_role(s, r.hash) or '-':<7} "
            f"{s.replicas.get(r.hash, 0):>8} {s.ready.get(r.hash, 0):>6}  {', '.join(r.images)}"
        )
    for label, a in (("AnalysisRun:    ", s.analysis), ("Background run: ", s.background)):
        if a is None:
            continue
        lines += ["", f"{label} {a.run_id}  {a.phase}" + (f"  ({a.message})" if a.message else "")]
        for metric, phase in a.metric_phases.items():
            lines.append(f"  metric {metric}: {phase} ({a.metric_counts.get(metric, 0)} measurement(s))")
    lines += _experiment_lines(s)
    return "\n".join(lines)


def _experiment_lines(s: RolloutState) -> list[str]:
    """The running experiment: its replica sets (ready/desired, share of traffic) and analysis runs."""
    e = s.experiment
    if e is None:
        return []
    until = f", ends {iso(e.ends_at)}" if e.ends_at is not None else ""
    lines = ["", f"Experiment:      step {e.step_index + 1}" + ("" if e.started else " (starting)") + until]
    for key, want in sorted(e.sets.items()):
        weight = e.weights.get(key)
        share = f", {weight[1]}% of traffic" if weight and e.routed else ""
        lines.append(f"  replica set {key}: {s.ready.get(key, 0)}/{want} ready{share}")
    for name, run in sorted(e.runs.items()):
        lines.append(
            f"  analysis {name}: {run.run_id}  {run.phase}" + (f"  ({run.message})" if run.message else "")
        )
    return lines


def _role(s: RolloutState, h: str) -> str:
    if s.plan.strategy == "blueGreen":
        active = s.bg_active or s.stable_hash
        if h == active:
            return "stable, active" if h == s.stable_hash else "active"
        if h == s.current_hash:
            return "preview"
        return "stable" if h == s.stable_hash else ""
    if h == s.stable_hash:
        return "stable"
    if h == s.current_hash:
        return "canary"
    return ""


def runs_view(records: list[AnalysisRunRecord]) -> str:
    rows = [f"{'NAME':<44} {'ROLLOUT':<20} {'REV':>4} {'PHASE':<13} {'MEASUREMENTS':>12}  STARTED"]
    for r in records:
        n = sum(m.count + m.error for m in r.metrics)
        rows.append(
            f"{r.name:<44} {r.namespace + '/' + r.rollout:<20} {r.revision:>4} {r.phase:<13} {n:>12}  {iso(r.started_at)}"
        )
    return "\n".join(rows)


def run_view(r: AnalysisRunRecord) -> str:
    lines = [
        f"Name:        {r.name}",
        f"Rollout:     {r.namespace}/{r.rollout} (revision {r.revision}"
        + (f", step {r.step_index + 1})" if r.step_index is not None else ")"),
        f"Templates:   {', '.join(r.templates)}",
        f"Status:      {r.phase}" + (f": {r.message}" if r.message else ""),
        f"Started:     {iso(r.started_at)}",
    ]
    if r.finished_at:
        lines.append(f"Finished:    {iso(r.finished_at)}")
    for m in r.metrics:
        dry = " (dry run)" if m.dry_run else ""
        lines += [
            "",
            f"Metric {m.name}{dry}: {m.phase}" + (f" ({m.message})" if m.message else ""),
            f"  count {m.count}, successful {m.successful}, failed {m.failed}, inconclusive {m.inconclusive},"
            f" error {m.error}",
            f"  {'#':>3}  {'TIME':<24} {'PHASE':<13} VALUE",
        ]
        first = m.next_index - len(m.measurements)
        for i, x in enumerate(m.measurements):
            value = json.dumps(x.value) if not isinstance(x.value, str) else x.value
            lines.append(
                f"  {first + i + 1:>3}  {iso(x.finished_at):<24} {x.phase:<13} {value}"
                + (f"  ({x.message})" if x.message else "")
            )
    return "\n".join(lines)


def list_view(states: list[RolloutState]) -> str:
    rows = [
        f"{'NAMESPACE':<12} {'NAME':<24} {'STATUS':<12} {'STEP':>6} {'SETWEIGHT':>9} {'ACTUAL':>6}  REVISION"
    ]
    for s in states:
        steps = len(s.plan.steps)
        rows.append(
            f"{s.namespace:<12} {s.name:<24} {s.phase:<12} {f'{min(s.step_index, steps)}/{steps}':>6} "
            f"{s.set_weight:>9} {s.actual_weight:>6}  {s.revision}"
        )
    return "\n".join(rows)


def event_line(ev: RolloutEvent) -> str:
    return (
        f"{ev.time}  rev {ev.revision}  step {ev.step_index}  weight {ev.set_weight}/{ev.actual_weight}  "
        f"{ev.phase:<11} {ev.type}: {ev.message}"
    )
