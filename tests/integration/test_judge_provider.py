"""The canary judge as a metric provider (``plugin: rollouts/judge``) against real traffic.

Two real aiohttp backends sit behind a real WeightedProxy at 50% canary. For the traffic
source, batches of requests go through the proxy and a SampleRecorder snapshots the proxy's
counters after each batch at controlled timestamps (one "second" per batch, so the test
does not wait for the recorder's 1-second loop); the traffic-shifter's real admin app
serves the samples endpoint on a free port, and ``measure_judge`` / ``measure`` read it:

* canary answering 500 for 30% of its requests and 30 ms slower: Failed, error-rate High
  (critical), latency High;
* identical backends: Successful, every metric Pass;
* endpoint errors (unknown rollout, bad window) and config errors are MeasurementErrors.

The prometheus source runs against this test's own ``prometheus`` process scraping the
admin app's ``/metrics`` (helpers from test_prometheus_provider); skipped without the binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import pytest
from aiohttp import web

from services.analyzer.measuring import measure
from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.judge import measure_judge, parse_judge_config
from services.traffic_shifter.proxy import Backend, ProxyStats, WeightedProxy
from services.traffic_shifter.samples import SampleRecorder
from services.traffic_shifter.service import TrafficShifter
from shared.messages import Endpoints, TrafficDesired
from shared.specs import Metric

pytestmark = pytest.mark.timeout(60)

NAMESPACE, NAME = "shop", "web"
KEY = f"{NAMESPACE}/{NAME}"
DESIRED = TrafficDesired(
    namespace=NAMESPACE,
    name=NAME,
    generation=1,
    stable_revision="rev-a",
    canary_revision="rev-b",
    canary_weight=50,
    stable_service="web-stable",
    canary_service="web-canary",
)
T0 = 1_700_000_000.0
SECONDS = 30
BATCH = 10  # requests per simulated second: 5 stable, 5 canary (smooth 50/50 alternation)
CANARY_DELAY = 0.15  # well above the stable's latency even on a loaded machine (bucket 0.1-0.25 s)

METRICS: list[dict[str, Any]] = [
    {"name": "error-rate", "series": "errorRate", "direction": "increase", "critical": True},
    {"name": "latency-p50", "series": "latencyP50", "direction": "increase", "allowedIncrease": 1.1},
    {"name": "throughput", "series": "requests", "direction": "either"},
]


def _backend_app(*, fail_every: tuple[int, ...] = (), delay: float = 0.0) -> web.Application:
    """Answers 200, or 500 when the request's ordinal modulo 10 is in ``fail_every``."""
    counter = itertools.count()

    async def handle(request: web.Request) -> web.Response:
        n = next(counter)
        if delay:
            await asyncio.sleep(delay)  # the backend's service time, not synchronisation
        if n % 10 in fail_every:
            return web.Response(status=500, text="boom")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


class _StatsOnly:
    """A TrafficProvider exposing one proxy's stats; the admin app never touches NATS."""

    def __init__(self, proxy: WeightedProxy) -> None:
        self.proxy = proxy

    async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
        return None

    def stats(self) -> dict[str, ProxyStats]:
        return {KEY: self.proxy.stats()}

    async def close(self) -> None:
        return None


@dataclass
class Rig:
    proxy: WeightedProxy
    recorder: SampleRecorder
    admin_url: str
    clock: list[float]
    provider: _StatsOnly


@contextlib.asynccontextmanager
async def rig(canary: web.Application) -> AsyncIterator[Rig]:
    runners: list[web.AppRunner] = []
    proxy = WeightedProxy(host="127.0.0.1", port=0, name=KEY)
    try:
        stable_runner, stable_port = await _start(_backend_app())
        canary_runner, canary_port = await _start(canary)
        runners += [stable_runner, canary_runner]
        await proxy.start()
        proxy.set_backends(
            stable=Backend(revision="rev-a", addresses=(f"127.0.0.1:{stable_port}",)),
            canary=Backend(revision="rev-b", addresses=(f"127.0.0.1:{canary_port}",)),
            canary_weight=50,
        )
        clock = [T0]
        recorder = SampleRecorder(clock=lambda: clock[0])
        provider = _StatsOnly(proxy)
        shifter = TrafficShifter(cast(Any, None), provider)
        shifter.desired[KEY] = DESIRED
        admin_runner, admin_port = await _start(shifter.admin_app(recorder))
        runners.append(admin_runner)
        yield Rig(proxy, recorder, f"http://127.0.0.1:{admin_port}", clock, provider)
    finally:
        await proxy.stop()
        for runner in runners:
            await runner.cleanup()


async def drive(r: Rig, *, seconds: int = SECONDS, concurrency: int = BATCH) -> None:
    """One batch of requests per simulated second, then a snapshot stamped with that second."""
    r.recorder.snapshot(r.provider.stats(), at=r.clock[0])
    async with aiohttp.ClientSession() as client:

        async def one() -> int:
            async with client.get(f"{r.proxy.url}/checkout") as response:
                await response.read()
                return response.status

        for _ in range(seconds):
            statuses: list[int] = []
            for start in range(0, BATCH, concurrency):
                statuses += await asyncio.gather(*(one() for _ in range(min(concurrency, BATCH - start))))
            assert all(s in (200, 500) for s in statuses), statuses
            r.clock[0] += 1.0
            r.recorder.snapshot(r.provider.stats(), at=r.clock[0])


def plugin(r: Rig, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "source": {
            "traffic": {"address": r.admin_url, "namespace": NAMESPACE, "rollout": NAME, "window": "30s"}
        },
        "thresholds": {"pass": 95, "marginal": 75},
        "metrics": METRICS,
    }
    config.update(extra)
    return {"rollouts/judge": config}


def verdicts(value: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in value["metrics"]}


async def test_a_failing_slower_canary_fails_with_error_rate_high() -> None:
    async with rig(_backend_app(fail_every=(0, 3, 6), delay=CANARY_DELAY)) as r:
        await drive(r)
        config = parse_judge_config(plugin(r))
        assert config is not None
        async with aiohttp.ClientSession() as session:
            measured = await measure_judge(config, session, now=time.time())
            # The samples endpoint itself, as the provider saw it.
            async with session.get(f"{r.admin_url}/api/v1/rollouts/{KEY}/samples?window=30") as response:
                assert response.status == 200
                samples = await response.json()

    assert samples["stableRevision"] == "rev-a" and samples["canaryRevision"] == "rev-b"
    assert samples["stable"]["errorRate"] == [0.0] * SECONDS
    # Ordinals 0, 3, 6 of every 10 fail: 2 of the first 5 canary requests, 1 of the next 5.
    assert sorted(set(samples["canary"]["errorRate"])) == [pytest.approx(0.2), pytest.approx(0.4)]
    assert samples["canary"]["requests"] == [5.0] * SECONDS

    assert measured.phase == "Failed"
    value = measured.value
    assert value["classification"] == "Fail" and value["score"] == 0.0
    assert value["source"] == "traffic" and value["canaryRevision"] == "rev-b"
    by_name = verdicts(value)
    error = by_name["error-rate"]
    assert error["classification"] == "High" and error["criticalFailure"] is True
    assert error["baselineCount"] == SECONDS and error["canaryCount"] == SECONDS
    assert error["canaryMean"] == pytest.approx(0.3) and error["baselineMean"] == 0.0
    # Kayenta: a zero baseline mean makes the effect size 1.0 (so allowedIncrease > 1 could never flag it).
    assert error["effectSize"] == 1.0
    lower, upper = error["interval"]
    assert 0 < lower <= upper and error["pValue"] < 0.01
    assert by_name["latency-p50"]["classification"] == "High"
    assert by_name["latency-p50"]["effectSize"] > 1.1
    assert by_name["throughput"]["classification"] == "Pass"
    assert measured.message.startswith("score 0 (Fail): error-rate High (critical")
    assert "latency-p50 High" in measured.message
    msgspec.json.encode(value)  # the value is plain JSON


async def test_identical_backends_pass() -> None:
    async with rig(_backend_app()) as r:
        # Sequential requests: both revisions see the same (unloaded) proxy.
        await drive(r, concurrency=1)
        config = parse_judge_config(plugin(r))
        assert config is not None
        async with aiohttp.ClientSession() as session:
            measured = await measure_judge(config, session, now=time.time())
    assert measured.phase == "Successful", measured.message
    assert measured.value["classification"] == "Pass" and measured.value["score"] == 100.0
    assert {m["classification"] for m in measured.value["metrics"]} == {"Pass"}
    assert measured.message == "score 100 (Pass): all 3 metrics passed"


async def test_measure_dispatches_the_plugin_to_the_judge() -> None:
    async with rig(_backend_app(fail_every=(0, 3, 6), delay=CANARY_DELAY)) as r:
        await drive(r, seconds=20)
        metric = msgspec.convert({"name": "canary-judge", "provider": {"plugin": plugin(r)}}, Metric)
        async with aiohttp.ClientSession() as session:
            measured = await measure(metric, session=session)
            assert measured.phase == "Failed"
            assert "error-rate High" in measured.message
            # A window with no intervals: every metric lacks data, the score is forced to 0.
            r.clock[0] += 120.0
            config = parse_judge_config(plugin(r))
            assert config is not None
            empty = await measure_judge(config, session, now=time.time())
            assert empty.phase == "Failed"
            assert {m["classification"] for m in empty.value["metrics"]} == {"Nodata"}
            # Another plugin is still unsupported.
            other = msgspec.convert({"name": "x", "provider": {"plugin": {"acme/thing": {}}}}, Metric)
            with pytest.raises(MeasurementError, match="not supported"):
                await measure(other, session=session)


async def test_marginal_score_is_inconclusive() -> None:
    async with rig(_backend_app(delay=CANARY_DELAY)) as r:
        await drive(r, seconds=20)
        # Only the non-critical latency metric fails: 3 of 4 pass, score 75.
        metrics = [
            *METRICS,
            {"name": "latency-p99", "series": "latencyP99", "direction": "decrease"},
        ]
        config = parse_judge_config(plugin(r, metrics=metrics))
        assert config is not None
        async with aiohttp.ClientSession() as session:
            measured = await measure_judge(config, session, now=time.time())
    assert measured.value["score"] == pytest.approx(75.0)
    assert measured.phase == "Inconclusive", measured.message
    assert measured.message.startswith("score 75 (Marginal): latency-p50 High")


async def test_samples_endpoint_errors_are_measurement_errors() -> None:
    async with rig(_backend_app()) as r:
        await drive(r, seconds=2, concurrency=1)
        async with aiohttp.ClientSession() as session:
            url = f"{r.admin_url}/api/v1/rollouts/{KEY}/samples"
            for window, status in (("nope", 400), ("0", 400), ("601", 400), ("10m", 200), ("5", 200)):
                async with session.get(url, params={"window": window}) as response:
                    assert response.status == status, (window, await response.text())
            unknown = plugin(r)
            unknown["rollouts/judge"]["source"]["traffic"]["rollout"] = "missing"
            config = parse_judge_config(unknown)
            assert config is not None
            with pytest.raises(MeasurementError, match=r"HTTP 404.*no traffic samples"):
                await measure_judge(config, session, now=time.time())
        # Nothing listens there any more once the rig is gone.
    dead = parse_judge_config(plugin(r))
    assert dead is not None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(MeasurementError, match="traffic samples request failed"):
            await measure_judge(dead, session, now=time.time())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["source"].clear(), r"source: set exactly one of traffic, prometheus \(found none\)"),
        (
            lambda c: c["source"].update(
                prometheus={"rangeQuery": {"start": "now()", "end": "now()", "step": "1s"}}
            ),
            r"found traffic, prometheus",
        ),
        (lambda c: c["source"]["traffic"].update(window="soon"), r"source\.traffic\.window"),
        (
            lambda c: c["source"]["traffic"].update(extra=1),
            r"unknown field `extra` - at `rollouts/judge\.source\.traffic`",
        ),
        (lambda c: c["metrics"][0].update(series="p95"), r"at `rollouts/judge\.metrics\[0\]\.series`"),
        (lambda c: c["metrics"][0].pop("series"), r"metrics\[0\]\.series: required with the traffic source"),
        (lambda c: c["metrics"][1].update(canaryQuery="up"), r"metrics\[1\]\.canaryQuery: only applies"),
        (
            lambda c: c["metrics"][2].update(name="error-rate"),
            r"metrics\[2\]\.name: 'error-rate' is repeated",
        ),
        (lambda c: c["metrics"][0].update(weight=-1), r"metrics\[0\]: metric error-rate: weight"),
        (lambda c: c.update(thresholds={"pass": 50, "marginal": 75}), r"thresholds: need 0 <= marginal"),
        (lambda c: c.update(metrics=[]), r"metrics: at least one metric"),
    ],
)
def test_bad_config_names_the_field(change: Callable[[dict[str, Any]], Any], message: str) -> None:
    config: dict[str, Any] = {
        "source": {"traffic": {"address": "http://127.0.0.1:9465", "namespace": "d", "rollout": "app"}},
        "metrics": [dict(m) for m in METRICS],
    }
    change(config)
    with pytest.raises(MeasurementError, match=message):
        parse_judge_config({"rollouts/judge": config})
    assert parse_judge_config({"other/plugin": {}}) is None
    assert parse_judge_config(None) is None


# --- the prometheus source ----------------------------------------------------------------


def _prometheus_helpers() -> Any:
    try:
        from tests.integration import test_prometheus_provider as helpers
    except ImportError:  # pragma: no cover - the helpers moved
        return None
    if helpers._prometheus_binary() is None:
        return None
    return helpers


ROLE_ERROR_RATE = (
    'sum(rate(rollouts_proxy_requests_total{{role="{role}",code_class="5xx"}}[5s]))'
    ' / sum(rate(rollouts_proxy_requests_total{{role="{role}"}}[5s]))'
)
ROLE_P50 = (
    "histogram_quantile(0.5, sum by (le) "
    '(rate(rollouts_proxy_request_duration_seconds_bucket{{role="{role}"}}[5s])))'
)


@pytest.mark.timeout(120)
@pytest.mark.xdist_group("prometheus")
async def test_prometheus_source_judges_range_queries(tmp_path: Path) -> None:
    helpers = _prometheus_helpers()
    if helpers is None:
        pytest.skip("prometheus binary (or the test_prometheus_provider helpers) not available")
    async with rig(_backend_app(fail_every=(0, 3, 6), delay=CANARY_DELAY)) as r:
        stop = asyncio.Event()

        async def traffic() -> None:
            # Steady load so rate() stays defined; pacing, not synchronisation.
            async with aiohttp.ClientSession() as client:
                while not stop.is_set():
                    async with client.get(f"{r.proxy.url}/checkout") as response:
                        await response.read()
                    await asyncio.sleep(0.005)

        workers = [asyncio.create_task(traffic()) for _ in range(4)]
        admin_port = int(r.admin_url.rsplit(":", 1)[1])
        log_file = tmp_path / "prometheus.log"
        process, prom_url = helpers._spawn_prometheus(
            helpers._prometheus_binary(), tmp_path, admin_port, log_file
        )
        try:
            config = parse_judge_config(
                {
                    "rollouts/judge": {
                        "source": {
                            "prometheus": {
                                "address": prom_url,
                                "rangeQuery": {"start": "now() - 15s", "end": "now()", "step": "1s"},
                            }
                        },
                        "metrics": [
                            {
                                "name": "error-rate",
                                "baselineQuery": ROLE_ERROR_RATE.format(role="stable"),
                                "canaryQuery": ROLE_ERROR_RATE.format(role="canary"),
                                "direction": "increase",
                                "critical": True,
                            },
                            {
                                "name": "latency-p50",
                                "baselineQuery": ROLE_P50.format(role="stable"),
                                "canaryQuery": ROLE_P50.format(role="canary"),
                                "direction": "increase",
                                "allowedIncrease": 1.1,
                            },
                        ],
                    }
                }
            )
            assert config is not None
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 60.0
                measured = None
                while True:
                    if process.poll() is not None:
                        pytest.fail(f"prometheus exited: {helpers._log_tail(log_file)}")
                    with contextlib.suppress(MeasurementError):
                        measured = await measure_judge(config, session, now=time.time())
                        counts = [
                            min(m["baselineCount"], m["canaryCount"]) for m in measured.value["metrics"]
                        ]
                        if min(counts) >= 10:
                            break
                    if time.monotonic() > deadline:
                        pytest.fail(f"no 10 range samples within 60 s: {measured and measured.value}")
                    await asyncio.sleep(0.5)
        finally:
            stop.set()
            for worker in workers:
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*workers)
            helpers._stop(process)
    assert measured is not None
    assert measured.phase == "Failed", measured.message
    assert measured.value["source"] == "prometheus"
    by_name = verdicts(measured.value)
    assert by_name["error-rate"]["classification"] == "High"
    assert by_name["error-rate"]["criticalFailure"] is True
    assert by_name["error-rate"]["baselineMean"] == 0.0
    assert math.isclose(by_name["error-rate"]["canaryMean"], 0.3, abs_tol=0.1)
    assert by_name["latency-p50"]["classification"] == "High"
