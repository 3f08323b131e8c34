"""secretKeyRef analysis arguments from Kubernetes Secrets, against the API emulator."""

from __future__ import annotations

import base64

import pytest

from services.analyzer.kube_secrets import KubeSecretStore
from services.analyzer.secrets import SecretError
from tests.support.kube_api import KubeEmulator

pytestmark = pytest.mark.timeout(30)


def secret(name: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def test_values_come_from_the_rollouts_namespace_and_errors_name_secret_and_key() -> None:
    async with KubeEmulator() as kube, kube.api_client() as api:
        kube.seed(secret("prom-auth", {"token": "s3cr3t"}))
        store = KubeSecretStore(api)
        assert await store.fetch("shop", "prom-auth", "token") == "s3cr3t"
        with pytest.raises(SecretError, match=r"Secret shop/prom-auth has no key 'password'") as e:
            await store.fetch("shop", "prom-auth", "password")
        assert "s3cr3t" not in str(e.value)
        with pytest.raises(SecretError, match=r"Secret other/prom-auth not found"):
            await store.fetch("other", "prom-auth", "token")
        reads = kube.requests_to("GET", "/api/v1/namespaces/shop/secrets/prom-auth")
        assert len(reads) == 1  # the second lookup of the same Secret came from the cache


async def test_a_changed_secret_is_read_again_after_the_cache_time() -> None:
    async with KubeEmulator() as kube, kube.api_client() as api:
        kube.seed(secret("db", {"password": "one"}))
        store = KubeSecretStore(api, cache_seconds=0)
        assert await store.fetch("shop", "db", "password") == "one"
        kube.seed(secret("db", {"password": "two"}))
        assert await store.fetch("shop", "db", "password") == "two"
