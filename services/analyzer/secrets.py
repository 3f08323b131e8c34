"""Secret values for analysis arguments (`valueFrom.secretKeyRef`), and keeping them out of every output.

Kubernetes mode reads the Secret in the rollout's namespace (services/analyzer/kube_secrets.py).
Local mode reads a file named by ROLLOUTS_SECRETS_FILE (YAML or JSON: `{namespace: {secret: {key: value}}}`,
or `{secret: {key: value}}` for every namespace) and the environment (`ROLLOUTS_SECRET_<SECRET>_<KEY>`,
upper case, `-` and `.` as `_`). Errors name the secret and key, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

REDACTED = "*****"


class SecretError(LookupError):
    pass


def _env_name(secret: str, key: str) -> str:
    return "ROLLOUTS_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{secret}_{key}").upper()


class SecretSource(Protocol):
    async def fetch(self, namespace: str, secret: str, key: str) -> str: ...


class SecretStore:
    def __init__(self, *, file: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.data: dict[str, Any] = {}
        if file is not None:
            try:
                loaded = yaml.safe_load(file.read_text())
            except (OSError, yaml.YAMLError) as e:
                raise SecretError(f"secrets file {file}: cannot be read ({type(e).__name__})") from None
            if not isinstance(loaded, dict):
                raise SecretError(f"secrets file {file}: expected a mapping")
            self.data = loaded

    @staticmethod
    def from_env() -> SecretStore:
        path = os.environ.get("ROLLOUTS_SECRETS_FILE")
        return SecretStore(file=Path(path) if path else None)

    async def fetch(self, namespace: str, secret: str, key: str) -> str:
        return self.get(namespace, secret, key)

    def get(self, namespace: str, secret: str, key: str) -> str:
        scoped = self.data.get(namespace)
        for source in (scoped if isinstance(scoped, dict) else None, self.data):
            if source is None:
                continue
            entry = source.get(secret)
            if isinstance(entry, dict) and key in entry and not isinstance(entry[key], dict):
                return str(entry[key])
        value = self.environ.get(_env_name(secret, key))
        if value is not None:
            return value
        raise SecretError(f"secret {secret!r} has no key {key!r} (namespace {namespace})")


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret replaced by *****, in strings, lists and dicts."""
    hidden = sorted((s for s in secrets if s), key=len, reverse=True)
    if not hidden:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in hidden:
                v = v.replace(s, REDACTED)
            return v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)
