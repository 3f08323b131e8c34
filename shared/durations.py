"""Go-style duration parsing and formatting, as used by Argo Rollouts specs."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_go_duration", "parse_pause_duration"]

# Seconds per unit, mirroring Go's time.ParseDuration unit table ("µs" has two spellings).
_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_INT = re.compile(r"[+-]?\d+")


def parse_go_duration(value: str) -> float:
    """Parse a Go duration string ("30s", "1h30m", "500ms") into seconds; a unit is required.

    Like Go, the bare string "0" is accepted; any other number without a unit is an error,
    which is what Argo does for metric `interval` / `initialDelay`.
    """
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected a string such as '30s' or '5m'")
    text = value.strip()
    if not text:
        raise ValueError("invalid duration '': empty string")
    sign = 1.0
    body = text
    if body[0] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {value!r}")
    pos = 0
    total = 0.0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        if match is None:
            if re.fullmatch(r"\d+\.?\d*|\.\d+", body[pos:]):
                raise ValueError(f"invalid duration {value!r}: missing unit (use e.g. '{body[pos:]}s')")
            raise ValueError(f"invalid duration {value!r}: expected units ns, us, ms, s, m or h")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_pause_duration(value: int | str) -> float:
    """Parse a canary pause duration: integer seconds, a numeric string, or a Go duration string."""
    # bool is an int subclass in Python but never a valid duration.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid pause duration {value!r}: expected seconds or a string such as '5m'")
    if isinstance(value, int):
        return float(value)
    text = value.strip()
    # Argo first tries strconv.ParseInt: a unit-less string is whole seconds.
    if _INT.fullmatch(text):
        return float(int(text))
    try:
        return parse_go_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"invalid pause duration {value!r}: expected seconds or a duration such as '30s', '5m', '1h'"
        ) from exc


def format_duration(seconds: float) -> str:
    """Format seconds as a compact Go-style duration ("1h30m", "45s", "500ms", "0s")."""
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"cannot format non-finite duration {seconds!r}")
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    remaining = abs(seconds)
    if remaining < 1:
        ms = remaining * 1000
        if ms >= 1 and abs(ms - round(ms)) < 1e-6:
            return f"{sign}{round(ms)}ms"
        return f"{sign}{_trim(remaining)}s"
    hours, rest = divmod(remaining, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if secs:
        parts.append(f"{_trim(secs)}s")
    return sign + "".join(parts)


def _trim(value: float) -> str:
    """Render a float without trailing zeros ("1.5", "30")."""
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"
