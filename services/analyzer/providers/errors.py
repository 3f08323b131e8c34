"""Errors shared by metric providers."""

from __future__ import annotations

__all__ = ["MeasurementError"]


class MeasurementError(Exception):
    """A provider could not take a measurement; the analyzer records it as phase Error."""
