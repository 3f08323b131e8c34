"""One measurement of one metric: pick the provider, take the value, and for providers that decide
for themselves (job) the phase too. Foreign errors become MeasurementError here, once."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec

from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.job import JobContext, run_job
from services.analyzer.providers.web import WebQuery, measure_web
from shared.specs import Metric


class Measured(msgspec.Struct, kw_only=True):
    value: Any = None
    phase: str | None = None  # set by providers that judge themselves; else the conditions decide
    message: str = ""


async def measure(
    metric: Metric,
    *,
    session: aiohttp.ClientSession,
    settings: Any = None,
    context: JobContext | None = None,
) -> Measured:
    """`context` names the measurement (run, metric, index): a Kubernetes Job is named after it."""
    provider = metric.provider
    if provider is None:
        raise MeasurementError(f"metric {metric.name}: no provider")
    if provider.web is not None:
        w = provider.web
        query = WebQuery(
            url=w.url or "",
            method=w.method or "GET",
            headers={h.key: h.value for h in w.headers or []},
            body=w.body,
            json_body=w.json_body,
            timeout_seconds=float(w.timeout_seconds or 10),
            json_path=w.json_path or "{$}",
            insecure=bool(w.insecure),
        )
        return Measured(value=await measure_web(query, session))
    if provider.job is not None:
        metadata = msgspec.to_builtins(provider.job.metadata) if provider.job.metadata else None
        result = await run_job(provider.job.spec, metadata=metadata, context=context)
        return Measured(
            value=result.exit_code,
            phase="Successful" if result.succeeded else "Failed",
            message=result.message,
        )
    if provider.prometheus is not None:
        return Measured(value=await _prometheus(metric, session))
    if provider.plugin:
        from services.analyzer.providers import judge  # lazy: judge imports Measured from here

        config = judge.parse_judge_config(provider.plugin)
        if config is not None:
            return await judge.measure_judge(config, session, now=time.time())
    kinds = [f for f in msgspec.structs.asdict(provider) if getattr(provider, f) is not None]
    raise MeasurementError(f"metric {metric.name}: provider {', '.join(kinds)} is not supported yet")


async def _prometheus(metric: Metric, session: aiohttp.ClientSession) -> Any:
    from services.analyzer.providers import prometheus as prom

    p = metric.provider.prometheus if metric.provider else None
    assert p is not None
    query = prom.query_of(p)
    return await prom.measure_prometheus(query, session, now=time.time())
