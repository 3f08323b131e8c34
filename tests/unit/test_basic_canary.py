"""Argo's basic-canary replica arithmetic (CalculateReplicaCountsForCanary), case by case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.planner.basic_canary import at_desired, desired_counts, next_counts, resolve_fenceposts

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("replicas", "weight", "unavailable", "surge", "expected"),
    [
        # The examples in Argo's doc comment of CalculateReplicaCountsForCanary (utils/replicaset/canary.go).
        (10, 10, 1, 1, (1, 9)),
        (10, 30, 0, 3, (3, 10)),
        (10, 30, 5, 0, (0, 7)),
        (1, 5, 0, 1, (1, 1)),
        (1, 95, 0, 1, (1, 1)),
    ],
)
def test_argo_examples(
    replicas: int, weight: int, unavailable: int, surge: int, expected: tuple[int, int]
) -> None:
    got = next_counts(
        replicas=replicas,
        weight=weight,
        max_surge=surge,
        max_unavailable=unavailable,
        canary_spec=0,
        canary_available=0,
        stable_spec=replicas,
        stable_available=replicas,
    )
    assert got == expected


def test_older_revisions_block_scale_downs() -> None:
    got = next_counts(
        replicas=10, weight=30, max_surge=0, max_unavailable=5,
        canary_spec=0, canary_available=0, stable_spec=10, stable_available=10, older=2,
    )  # fmt: skip
    assert got == (0, 10)


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "expected"),
    [(None, None, 10, (3, 2)), ("0%", "0%", 4, (0, 1)), (2, "50%", 5, (2, 2)), ("10%", 0, 3, (1, 0))],
)
def test_fenceposts(surge: object, unavailable: object, replicas: int, expected: tuple[int, int]) -> None:
    assert resolve_fenceposts(surge, unavailable, replicas) == expected  # type: ignore[arg-type]


@given(
    replicas=st.integers(1, 30),
    weight=st.integers(0, 100),
    surge=st.integers(0, 5),
    unavailable=st.integers(0, 5),
)
def test_repeated_moves_reach_the_desired_counts_within_the_bounds(
    replicas: int, weight: int, surge: int, unavailable: int
) -> None:
    """Starting from the stable at full size, with every pod ready as soon as it is asked for, the
    counts reach the step's target, never exceeding replicas + maxSurge (+1 when uneven) pods."""
    if surge == 0 and unavailable == 0:
        unavailable = 1
    canary, stable = 0, replicas
    extra = 1 if (replicas * weight) % 100 else 0
    for _ in range(4 * replicas + 10):
        canary, stable = next_counts(
            replicas=replicas, weight=weight, max_surge=surge, max_unavailable=unavailable,
            canary_spec=canary, canary_available=canary, stable_spec=stable, stable_available=stable,
        )  # fmt: skip
        assert canary + stable <= replicas + surge + extra
        if at_desired(
            replicas=replicas, weight=weight, canary_spec=canary, canary_available=canary,
            stable_spec=stable, stable_available=stable,
        ):  # fmt: skip
            break
    assert (canary, stable) == desired_counts(replicas, weight)
