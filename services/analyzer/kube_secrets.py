"""`valueFrom.secretKeyRef` analysis arguments from Kubernetes Secrets (Kubernetes mode).

The Secret is read from the rollout's namespace when a measurement needs it (never sent over
NATS, never stored), cached for a short while so a metric measured every few seconds does not
read it every time. Errors name the Secret, key and namespace, never a value.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from kubernetes_asyncio.client import CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from services.analyzer.secrets import SecretError

CACHE_SECONDS = 30.0


class KubeSecretStore:
    def __init__(self, api_client: Any, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.core = CoreV1Api(api_client)
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}

    async def fetch(self, namespace: str, secret: str, key: str) -> str:
        data = await self._data(namespace, secret)
        if key not in data:
            raise SecretError(f"Secret {namespace}/{secret} has no key {key!r}")
        try:
            return base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretError(
                f"Secret {namespace}/{secret}: key {key!r} is not base64-encoded UTF-8"
            ) from None

    async def _data(self, namespace: str, secret: str) -> dict[str, str]:
        now = time.monotonic()
        cached = self._cache.get((namespace, secret))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            obj = await self.core.read_namespaced_secret(secret, namespace)
        except ApiException as e:
            if e.status == 404:
                raise SecretError(f"Secret {namespace}/{secret} not found") from None
            raise SecretError(
                f"Secret {namespace}/{secret}: cannot be read (HTTP {e.status} {e.reason})"
            ) from None
        data = dict(obj.data or {})
        self._cache[(namespace, secret)] = (now + self.cache_seconds, data)
        return data
