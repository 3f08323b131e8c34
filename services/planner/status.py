"""The planner's state of a rollout as Argo's RolloutStatus (pkg/apis/rollouts/v1alpha1 types.go). Pure.

`argo_status` is what the Kubernetes bridge writes to a Rollout's /status; `status_of` is the status
of `rollouts get -o json` and of command replies: the same object, plus what Argo keeps elsewhere
(the set and actual weights, the revisions with their images and replica counts, the analysis runs'
metric phases, the experiment's replica sets).

Field names, omitempty and value shapes follow Argo's JSON: `observedGeneration` is a string, the
phase and message follow CalculateRolloutPhase (an InvalidSpec condition first: Degraded), conditions
carry Argo's types and reasons and keep their times while their status and reason stay the same.
"""

from __future__ import annotations

from typing import Any

from services.planner.decide import iso, revision_of
from services.planner.plan import step_hash
from services.planner.state import AnalysisProgress, RolloutState

# Argo's condition types and reasons (utils/conditions/conditions.go).
AVAILABLE, PROGRESSING, PAUSED, HEALTHY, COMPLETED, INVALID_SPEC = (
    "Available",
    "Progressing",
    "Paused",
    "Healthy",
    "Completed",
    "InvalidSpec",
)
CONDITION_ORDER = (INVALID_SPEC, PROGRESSING, PAUSED, AVAILABLE, HEALTHY, COMPLETED)
POD_TEMPLATE_HASH = "rollouts-pod-template-hash"

# Blue-green runs sit in the state's step analysis slot under these step markers (see decide.py).
PRE_PROMOTION_STEP, POST_PROMOTION_STEP = -2, -3


# --- the status ----------------------------------------------------------------------------------


def argo_status(
    state: RolloutState | None,
    *,
    observed_generation: int | None,
    previous: dict[str, Any] | None = None,
    invalid_spec: str | None = None,
    now: float,
) -> dict[str, Any]:
    """Argo's status object for the rollout.

    `observed_generation`: the resource's metadata.generation the planner has taken (or rejected);
    `previous`: the status last written, whose conditions keep their times when unchanged;
    `invalid_spec`: why the planner rejected the resource's current spec (phase Degraded, as Argo's
    InvalidSpec condition), with or without a state of an earlier, valid spec still running;
    `now`: the time of a condition that changes now.
    """
    status: dict[str, Any] = {} if state is None else _from_state(state)
    conds = [] if state is None else _conditions(state)
    if invalid_spec is not None:
        status["phase"] = "Degraded"
        status["message"] = f"{INVALID_SPEC}: {invalid_spec}"
        conds.insert(0, (INVALID_SPEC, "True", INVALID_SPEC, invalid_spec))
    if observed_generation is not None:
        status["observedGeneration"] = str(observed_generation)
    status["conditions"] = _timed(conds, (previous or {}).get("conditions"), now)
    return _omit_empty(status)


def _from_state(s: RolloutState) -> dict[str, Any]:
    plan = s.plan
    spec = s.spec.get("spec") if isinstance(s.spec.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    canary = plan.strategy == "canary"
    ready = sum(s.ready.get(h, 0) for h in s.replicas)
    status: dict[str, Any] = {
        "phase": s.phase,
        "message": s.message,
        "currentPodHash": s.current_hash,
        "stableRS": s.stable_hash,
        "replicas": sum(s.replicas.values()),
        "updatedReplicas": s.replicas.get(s.current_hash, 0),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "pauseConditions": [{"reason": p.reason, "startTime": iso(p.start_time)} for p in s.pause_conditions],
        "controllerPause": bool(s.pause_conditions),
        "abort": s.abort,
        "promoteFull": s.promote_full,
    }
    if s.abort and s.aborted_at is not None:
        status["abortedAt"] = iso(s.aborted_at)
    if s.restart_at is not None:
        status["restartedAt"] = iso(s.restart_at)
    selector = format_selector(spec.get("selector"))
    if canary:
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
        if steps:
            status["currentStepIndex"] = min(s.step_index, len(plan.steps))
            status["currentStepHash"] = plan.steps_hash or step_hash(steps)  # older states lack it
        status["HPAReplicas"] = ready
        status["canary"] = _canary(s)
    else:
        active = s.routed_stable or s.stable_hash
        status["HPAReplicas"] = s.ready.get(active, 0)
        status["blueGreen"] = _blue_green(s, active)
        selector = ",".join(p for p in (selector, f"{POD_TEMPLATE_HASH}={active}") if p)
    status["selector"] = selector
    return status


def _canary(s: RolloutState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.analysis is not None and s.analysis.step_index >= 0:
        out["currentStepAnalysisRunStatus"] = _run(s.analysis)
    if s.background is not None:
        out["currentBackgroundAnalysisRunStatus"] = _run(s.background)
    if s.experiment is not None:
        out["currentExperiment"] = f"{s.name}-{s.current_hash}-{s.revision}-{s.experiment.step_index}"
    if s.plan.routing is not None or s.plan.port is not None:
        # Weights the traffic router confirmed (Argo: "the weights which have been set on traffic provider").
        canary_weight = s.actual_weight if s.current_hash != s.stable_hash else 0
        # Experiment replica sets the router confirmed sending a share to (additionalDestinations).
        confirmed = set(s.confirmed_additional)
        additional = [
            _weight(d.weight, "", d.revision) for d in s.routed_additional if d.revision in confirmed
        ]
        out["weights"] = {
            "canary": _weight(canary_weight, s.plan.canary_service, s.current_hash),
            "stable": _weight(
                max(0, 100 - canary_weight - sum(a["weight"] for a in additional)),
                s.plan.stable_service,
                s.stable_hash,
            ),
        }
        if additional:
            out["weights"]["additional"] = additional
    return out


def _blue_green(s: RolloutState, active: str) -> dict[str, Any]:
    out: dict[str, Any] = {"activeSelector": active}
    if s.plan.preview_service:
        out["previewSelector"] = s.routed_preview or active
    if s.analysis is not None and s.analysis.step_index == PRE_PROMOTION_STEP:
        out["prePromotionAnalysisRunStatus"] = _run(s.analysis)
    if s.analysis is not None and s.analysis.step_index == POST_PROMOTION_STEP:
        out["postPromotionAnalysisRunStatus"] = _run(s.analysis)
    return out


def _weight(weight: int, service: str | None, pod_hash: str) -> dict[str, Any]:
    out: dict[str, Any] = {"weight": weight}  # never omitted: Argo's `json:"weight"`
    if service:
        out["serviceName"] = service
    if pod_hash:
        out["podTemplateHash"] = pod_hash
    return out


def _run(a: AnalysisProgress) -> dict[str, Any]:
    out = {"name": a.run_id, "status": a.phase}
    if a.message:
        out["message"] = a.message
    return out


# --- conditions -----------------------------------------------------------------------------------

Condition = tuple[str, str, str, str]  # type, status, reason, message


def _conditions(s: RolloutState) -> list[Condition]:
    rs = f'ReplicaSet "{s.name}-{s.current_hash}"'
    paused = s.paused or bool(s.pause_conditions)
    completed = s.current_hash == s.stable_hash
    if s.abort:
        progressing = (PROGRESSING, "False", "RolloutAborted", s.abort_message)
    elif s.deadline_exceeded:
        progressing = (PROGRESSING, "False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.")
    elif paused:
        progressing = (PROGRESSING, "Unknown", "RolloutPaused", "Rollout is paused")
    elif s.phase == "Healthy":
        progressing = (PROGRESSING, "True", "NewReplicaSetAvailable", f"{rs} has successfully progressed.")
    else:
        progressing = (PROGRESSING, "True", "ReplicaSetUpdated", f"{rs} is progressing.")
    ready = sum(s.ready.get(h, 0) for h in s.replicas)
    out = [progressing]
    if paused:
        out.append((PAUSED, "True", "RolloutPaused", "Rollout is paused"))
    else:
        out.append((PAUSED, "False", "RolloutResumed", "Rollout is resumed"))
    if ready >= s.plan.replicas:
        out.append((AVAILABLE, "True", "AvailableReason", "Rollout has minimum availability"))
    else:
        out.append((AVAILABLE, "False", "AvailableReason", "Rollout does not have minimum availability"))
    healthy = s.phase == "Healthy"
    out.append(
        (
            HEALTHY,
            str(healthy),
            "RolloutHealthy",
            "Rollout is healthy" if healthy else "Rollout is not healthy",
        )
    )
    out.append((COMPLETED, str(completed and not paused), "RolloutCompleted", "RolloutCompleted"))
    return out


def _timed(conds: list[Condition], previous: Any, now: float) -> list[dict[str, Any]]:
    """Argo's SetRolloutCondition: an unchanged (status, reason) keeps its transition time, and its
    update time too while the message stays; a Paused condition appears only once paused."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)} if isinstance(previous, list) else {}
    stamp = iso(now)
    out = []
    for ctype, cstatus, reason, message in conds:
        old = before.get(ctype)
        if ctype == PAUSED and cstatus == "False" and old is None:
            continue
        transition = update = stamp
        if old is not None and old.get("status") == cstatus:
            transition = old.get("lastTransitionTime") or stamp
            if old.get("reason") == reason and old.get("message") == message:
                update = old.get("lastUpdateTime") or stamp
        out.append(
            {
                "type": ctype,
                "status": cstatus,
                "reason": reason,
                "message": message,
                "lastUpdateTime": update,
                "lastTransitionTime": transition,
            }
        )
    out.sort(key=lambda c: CONDITION_ORDER.index(c["type"]))
    return out


# --- helpers --------------------------------------------------------------------------------------


def format_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: `k=v` for matchLabels (sorted), `k in (a,b)`, `k notin (a,b)`,
    `k`, `!k` for matchExpressions; "" for none."""
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        key, op = e.get("key", ""), e.get("operator", "")
        values = ",".join(sorted(str(v) for v in e.get("values") or []))
        match op:
            case "In":
                parts.append(f"{key} in ({values})")
            case "NotIn":
                parts.append(f"{key} notin ({values})")
            case "Exists":
                parts.append(key)
            case "DoesNotExist":
                parts.append(f"!{key}")
    return ",".join(parts)


def _omit_empty(status: dict[str, Any]) -> dict[str, Any]:
    """Argo's omitempty: false, 0, "", empty lists and objects are left out (currentStepIndex, a
    pointer, and every weight are kept at 0)."""
    out: dict[str, Any] = {}
    for k, v in status.items():
        if k == "currentStepIndex":
            out[k] = v
        elif isinstance(v, dict):
            inner = v if k == "canary" and "weights" in v else _omit_empty(v)
            if inner:
                out[k] = inner
        elif v not in (None, False, 0, "", []):
            out[k] = v
    return out


def status_of(s: RolloutState) -> dict[str, Any]:
    """The status of `rollouts get -o json` (and of command replies): Argo's RolloutStatus as the
    Kubernetes bridge writes it (observedGeneration: the planner's generation of the applied spec;
    condition times: the state's last update), then our extra fields, and the fields Argo omits
    when empty (abort, paused, pauseConditions, …) kept at their empty value."""
    status = argo_status(s, observed_generation=s.generation, now=s.updated_at)
    for key, value in _extras(s).items():
        if key == "canary":
            status["canary"] = {**value, **status.get("canary", {})}
        else:
            status.setdefault(key, value)
    return status


def _extras(s: RolloutState) -> dict[str, Any]:
    """What `rollouts get -o json` shows beyond Argo's RolloutStatus, and the fields Argo omits when empty."""
    steps = len(s.plan.steps)
    status: dict[str, Any] = {
        "phase": s.phase,
        "message": s.message,
        "currentStepIndex": min(s.step_index, steps),
        "setWeight": s.set_weight,
        "actualWeight": s.actual_weight,
        "stableRevision": revision_of(s, s.stable_hash),
        "currentRevision": s.revision,
        "stableRS": s.stable_hash,
        "currentPodHash": s.current_hash,
        "abort": s.abort,
        "pauseConditions": [{"reason": p.reason, "startTime": iso(p.start_time)} for p in s.pause_conditions],
        "controllerPause": bool(s.pause_conditions),
        "paused": s.paused,
        "observedGeneration": s.generation,
        "replicas": sum(s.replicas.values()),
        "readyReplicas": sum(s.ready.get(h, 0) for h in s.replicas),
        "updatedReplicas": s.ready.get(s.current_hash, 0),
        "canary": {
            "weights": {
                "canary": {"podTemplateHash": s.current_hash, "weight": s.actual_weight},
                "stable": {"podTemplateHash": s.stable_hash, "weight": 100 - s.actual_weight},
            }
        },
    }
    if s.abort:
        status["abortedAt"] = iso(s.aborted_at) if s.aborted_at is not None else None
    for key, a in (("currentAnalysisRun", s.analysis), ("currentBackgroundAnalysisRun", s.background)):
        if a is not None:
            status[key] = {
                "name": a.run_id,
                "phase": a.phase,
                "message": a.message,
                "metrics": dict(a.metric_phases),
            }
    if s.experiment is not None:
        status["currentExperiment"] = {
            "step": s.experiment.step_index,
            "replicaSets": dict(s.experiment.sets),
            "endsAt": iso(s.experiment.ends_at) if s.experiment.ends_at else None,
            "analysisRuns": {n: {"name": r.run_id, "phase": r.phase} for n, r in s.experiment.runs.items()},
        }
    status["revisions"] = [
        {
            "revision": r.number,
            "podTemplateHash": r.hash,
            "images": list(r.images),
            "role": "stable" if r.hash == s.stable_hash else ("canary" if r.hash == s.current_hash else ""),
            "replicas": s.replicas.get(r.hash, 0),
            "ready": s.ready.get(r.hash, 0),
        }
        for r in s.revisions
    ]
    return status
