"""Errors of raw Kubernetes API calls (shared/kube_wire.py), importable without loading the
Kubernetes client."""

from __future__ import annotations


class KubeRequestError(Exception):
    """The API server refused or failed a request; the message names the request."""

    def __init__(self, what: str, status: int, reason: str = "", message: str = "") -> None:
        detail = ": ".join(p for p in (reason, message) if p)
        super().__init__(f"{what}: HTTP {status}" + (f" {detail}" if detail else ""))
        self.what = what
        self.status = status
        self.reason = reason
        self.message = message


class WatchGone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


__all__ = ["KubeRequestError", "WatchGone"]
