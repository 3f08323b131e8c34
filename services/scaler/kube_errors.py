"""Errors of the Kubernetes scale platform, importable without loading the Kubernetes client."""

from __future__ import annotations

from shared.kube_errors import KubeRequestError


class KubePlatformError(Exception):
    """The scaler could not converge a rollout on Kubernetes; the message names the object at fault."""


class KubeApiError(KubeRequestError, KubePlatformError):
    """The API server refused or failed a request (translated once from the client's errors)."""


class ServiceNotFoundError(KubePlatformError):
    """A Service the rollout routes through does not exist."""


__all__ = ["KubeApiError", "KubePlatformError", "ServiceNotFoundError"]
