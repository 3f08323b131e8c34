"""Blue-green end to end with real processes and traffic: the preview service serves the new revision
on the second port while the active one keeps the old; manual promotion switches the active service;
a failing pre-promotion analysis aborts with the active service never touched."""

from __future__ import annotations

from typing import Any

import pytest

from shared.embedded_server import free_port
from tests.e2e.harness import Harness, rollout, versions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def blue_green(name: str, version: int, port: int, preview_port: int, **bg: Any) -> dict[str, Any]:
    doc = rollout(name, version=version, port=port, steps=[], error_rate=1.0 if version == 3 else 0.0)
    doc["spec"]["template"]["spec"]["containers"][0]["ports"].append({"containerPort": preview_port})
    doc["spec"]["strategy"] = {
        "blueGreen": {
            "activeService": f"{name}-active",
            "previewService": f"{name}-preview",
            "scaleDownDelaySeconds": 1,
            "abortScaleDownDelaySeconds": 1,
            **bg,
        }
    }
    return doc


async def test_manual_promotion_and_failing_pre_promotion_analysis(stack: Harness) -> None:
    port, preview = free_port(), free_port()
    # A smoke test of the preview service, as Argo's docs suggest: a job that fails on an HTTP error.
    smoke = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{preview}/', timeout=5)"
    await stack.apply(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "smoke"},
            "spec": {
                "metrics": [
                    {
                        "name": "smoke",
                        "provider": {
                            "job": {
                                "spec": {
                                    "template": {
                                        "spec": {
                                            "containers": [
                                                {
                                                    "name": "smoke",
                                                    "image": "python",
                                                    "command": ["python", "-c", smoke],
                                                }
                                            ]
                                        }
                                    }
                                }
                            }
                        },
                    }
                ]
            },
        }
    )
    analysis = {"templates": [{"templateName": "smoke"}]}
    await stack.apply(blue_green("web", 1, port, preview, autoPromotionEnabled=False))
    await stack.wait("web", lambda s: s["phase"] == "Healthy")

    await stack.apply(
        blue_green("web", 2, port, preview, autoPromotionEnabled=False, prePromotionAnalysis=analysis)
    )
    st = await stack.wait("web", lambda s: s["phase"] == "Paused", timeout=60)
    assert st["pauseConditions"][0]["reason"] == "BlueGreenPause"
    assert await versions(port, 10) == {"1": 10}  # active: still version 1
    assert await versions(preview, 10) == {"2": 10}  # preview: the new version
    code, _, err = await stack.cli("promote", "web")
    assert code == 0, err
    st = await stack.wait("web", lambda s: s["phase"] == "Healthy" and s["stableRevision"] == 2, timeout=60)
    assert await versions(port, 10) == {"2": 10}

    # Version 3 answers 500 only: the pre-promotion analysis (on the preview service) fails.
    await stack.apply(
        blue_green("web", 3, port, preview, autoPromotionEnabled=False, prePromotionAnalysis=analysis)
    )
    st = await stack.wait("web", lambda s: s["phase"] == "Degraded", timeout=60)
    assert st["abort"] is True and "pre-promotion" in st["message"]
    assert await versions(port, 10) == {"2": 10}  # the active service never moved
