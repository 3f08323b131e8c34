"""How a scale platform tells the scaler that a replica became ready, died or was restarted."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# on_change(rollout key "<namespace>/<name>", revision): sync or async
OnChange = Callable[[str, str], Awaitable[None] | None]


async def notify(on_change: OnChange | None, key: str, revision: str) -> None:
    """Call `on_change`, awaiting it if it is async; a failing callback is logged, never raised."""
    if on_change is None:
        return
    try:
        result = on_change(key, revision)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s: on_change for revision %s failed", key, revision)
