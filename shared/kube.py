"""The Kubernetes API client every service uses in Kubernetes mode, configured in one place.

Order: an explicit URL (ROLLOUTS_KUBE_URL: tests and the API emulator, or `kubectl proxy`), the
in-cluster service account (KUBERNETES_SERVICE_HOST is set in every pod), else the kubeconfig
(KUBECONFIG or ~/.kube/config, current context).
"""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config

from shared.settings import Settings


class KubeConfigError(RuntimeError):
    """No way to reach a Kubernetes API server; says which sources were tried."""


async def api_client(settings: Settings) -> client.ApiClient:
    if settings.kube_url:
        return client.ApiClient(client.Configuration(host=settings.kube_url.rstrip("/")))
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    try:
        await config.load_kube_config()
    except Exception as e:
        raise KubeConfigError(
            "Kubernetes mode: no API server configured (ROLLOUTS_KUBE_URL unset, not in a pod, "
            f"and the kubeconfig could not be loaded: {e})"
        ) from e
    return client.ApiClient()
