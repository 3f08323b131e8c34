"""Errors of the Kubernetes scale platform, importable without loading the Kubernetes client."""

from __future__ import annotations


class KubePlatformError(Exception):
    """The scaler could not converge a rollout on Kubernetes; the message names the object at fault."""


class KubeApiError(KubePlatformError):
    """The API server refused or failed a request (translated once from the client's errors)."""

    def __init__(self, what: str, status: int, reason: str = "", message: str = "") -> None:
        detail = ": ".join(p for p in (reason, message) if p)
        super().__init__(f"{what}: HTTP {status}" + (f" {detail}" if detail else ""))
        self.what = what
        self.status = status
        self.reason = reason


class ServiceNotFoundError(KubePlatformError):
    """A Service the rollout routes through does not exist."""


__all__ = ["KubeApiError", "KubePlatformError", "ServiceNotFoundError"]
