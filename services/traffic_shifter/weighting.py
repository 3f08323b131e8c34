"""Deterministic weighted choice (nginx smooth weighted round robin) and plain round robin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SmoothWeightedChooser:
    """Nginx-style smooth weighted round robin over labels.

    Unlike random sampling, the sequence is deterministic and evenly interleaved, so over any
    N picks each label's count is within one pick of ``weight / total * N``.
    """

    __slots__ = ("_current", "_labels", "_total", "_weights")

    def __init__(self, weights: Mapping[str, int]) -> None:
        for label, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight for {label!r} must be >= 0, got {weight}")
        # Zero-weight labels are dropped up front: they could otherwise win ties at start.
        active = [(label, int(weight)) for label, weight in weights.items() if weight > 0]
        if not active:
            raise ValueError("at least one label needs a positive weight")
        self._labels: tuple[str, ...] = tuple(label for label, _ in active)
        self._weights: tuple[int, ...] = tuple(weight for _, weight in active)
        self._total = sum(self._weights)
        self._current: list[int] = [0] * len(active)

    @property
    def weights(self) -> dict[str, int]:
        return dict(zip(self._labels, self._weights, strict=True))

    def choose(self) -> str:
        current = self._current
        weights = self._weights
        best = 0
        best_value = current[0] + weights[0]
        current[0] = best_value
        for i in range(1, len(weights)):
            value = current[i] + weights[i]
            current[i] = value
            # Strict '>' keeps ties going to the earliest label, which keeps the order stable.
            if value > best_value:
                best, best_value = i, value
        current[best] -= self._total
        return self._labels[best]


class RoundRobin:
    """Cycles through a fixed list of addresses."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Sequence[str]) -> None:
        if not items:
            raise ValueError("RoundRobin needs at least one item")
        self._items: tuple[str, ...] = tuple(items)
        self._index = 0

    @property
    def items(self) -> tuple[str, ...]:
        return self._items

    def __len__(self) -> int:
        return len(self._items)

    def next(self) -> str:
        item = self._items[self._index]
        self._index = (self._index + 1) % len(self._items)
        return item
