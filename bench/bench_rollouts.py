"""The Rollout the planner benchmarks apply: one tiny replica, traffic-routed, the given steps."""

from __future__ import annotations


def bench_rollout(name: str, version: int, steps: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": f"bench:{version}", "ports": [{"containerPort": 1}]}
                    ]
                },
            },
            "strategy": {
                "canary": {
                    "canaryService": f"{name}-canary",
                    "stableService": f"{name}-stable",
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": f"{name}-vsvc", "routes": ["primary"]}}
                    },
                    "steps": steps,
                }
            },
        },
    }
