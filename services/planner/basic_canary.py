"""Replica counts of a canary without traffic routing (Argo's basic canary), as Argo computes them.

Without a traffic router the split is carried by the replica counts: the canary gets
ceil(replicas x weight / 100) pods and the stable ceil(replicas x (100 - weight) / 100) (both
rounded up, so an uneven split surges by one). Each reconcile moves towards those counts within
two bounds: at most `replicas + maxSurge` pods exist, and at least `replicas - maxUnavailable` are
available. A port of Argo's CalculateReplicaCountsForCanary (utils/replicaset/canary.go), with the
stable scaled up before the canary and, when scaling down, the canary before the stable.
"""

from __future__ import annotations

import math

from shared.specs.meta import IntOrString

DEFAULT_FENCEPOST = "25%"


def resolve_fenceposts(
    max_surge: IntOrString | None, max_unavailable: IntOrString | None, replicas: int
) -> tuple[int, int]:
    """maxSurge (rounded up) and maxUnavailable (rounded down) as pod counts; both 0 -> unavailable 1
    (Kubernetes' ResolveFenceposts, which Argo uses)."""
    surge = _scaled(DEFAULT_FENCEPOST if max_surge is None else max_surge, replicas, up=True)
    unavailable = _scaled(
        DEFAULT_FENCEPOST if max_unavailable is None else max_unavailable, replicas, up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _scaled(value: IntOrString, replicas: int, *, up: bool) -> int:
    if isinstance(value, int):
        return max(value, 0)
    text = value.strip()
    if text.endswith("%"):
        share = replicas * float(text[:-1]) / 100
        return max(math.ceil(share) if up else math.floor(share), 0)
    return max(int(text), 0)


def desired_counts(replicas: int, weight: int) -> tuple[int, int]:
    """(canary, stable) at the end of a setWeight step."""
    return math.ceil(replicas * weight / 100), math.ceil(replicas * (100 - weight) / 100)


def next_counts(
    *,
    replicas: int,
    weight: int,
    max_surge: int,
    max_unavailable: int,
    canary_spec: int,
    canary_available: int,
    stable_spec: int,
    stable_available: int,
    older: int = 0,
) -> tuple[int, int]:
    """The (canary, stable) replica counts to set now, from the current spec and available counts.

    `older`: pods of other old revisions still running; while there are any, only scale-ups happen.
    """
    want_canary, want_stable = desired_counts(replicas, weight)
    surge = max_surge + (1 if (replicas * weight) % 100 else 0)  # both counts rounded up
    scale_up = replicas + surge - (canary_spec + stable_spec + older)
    canary, stable = canary_spec, stable_spec
    if stable_spec < want_stable and scale_up > 0:
        stable = min(want_stable, stable_spec + scale_up)
        scale_up -= stable - stable_spec
    if canary_spec < want_canary and scale_up > 0:
        canary = min(want_canary, canary_spec + scale_up)
    if older > 0:
        return canary, stable
    min_available = replicas - max_unavailable
    increasing = want_canary >= canary_spec
    countable = _for_scale_down(canary_spec, canary_available, ignore=not increasing) + _for_scale_down(
        stable_spec, stable_available, ignore=increasing
    )
    if countable <= min_available:
        return canary, stable
    scale_down = countable - min_available
    if canary_spec > want_canary:
        canary = max(want_canary, canary_spec - scale_down)
        scale_down -= canary_spec - canary
    if stable_spec > want_stable and scale_down > 0:
        stable = max(want_stable, stable_spec - scale_down)
    return canary, stable


def _for_scale_down(spec: int, available: int, *, ignore: bool) -> int:
    """Argo's GetReplicasForScaleDown: the pods that count as available when deciding a scale-down."""
    if spec < available or ignore:
        return spec
    return available


def at_desired(
    *,
    replicas: int,
    weight: int,
    canary_spec: int,
    canary_available: int,
    stable_spec: int,
    stable_available: int,
) -> bool:
    """Argo's AtDesiredReplicaCountsForCanary: both counts set and available as the step wants."""
    want_canary, want_stable = desired_counts(replicas, weight)
    return canary_spec == want_canary == canary_available and stable_spec == want_stable == stable_available
