"""The prometheus metric provider against a real Prometheus server scraping a real proxy.

The module starts, once: two aiohttp backends (200s and 500s) behind a WeightedProxy at 50%
canary with steady client traffic, the traffic-shifter's admin app serving ``/metrics``
from that proxy, and its own ``prometheus`` process (temp config scraping every second, temp
TSDB, a free port; never the system service). Once Prometheus has two scrapes of the
series, the tests query it through ``measure_prometheus``: scalar, string, vector, matrix,
NaN/+Inf, the seed's error-rate query by service, range queries, Prometheus errors, an
unreachable address and a timeout. Small aiohttp servers in front of Prometheus record the
headers the provider sends (custom headers, basic auth), force the GET fallback, and check
that secrets never reach error messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.prometheus import (
    PrometheusQuery,
    measure_prometheus,
    query_of,
    resolve_time,
)
from services.traffic_shifter.proxy import Backend, ProxyStats, WeightedProxy
from services.traffic_shifter.service import TrafficShifter
from shared.embedded_server import free_port
from shared.messages import Endpoints, TrafficDesired
from shared.specs.analysis import (
    PrometheusAuth,
    PrometheusMetric,
    PrometheusRangeQuery,
    Sigv4Config,
    WebMetricHeader,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("prometheus")]
# Tests that use the module-wide stack run on its event loop.
on_stack_loop = pytest.mark.asyncio(loop_scope="module")

KEY = "shop/web"
DESIRED = TrafficDesired(
    namespace="shop",
    name="web",
    generation=1,
    stable_revision="rev-a",
    canary_revision="rev-b",
    canary_weight=50,
    stable_service="web-stable",
    canary_service="web-canary",
)
ERROR_RATE = (
    'sum(rate(rollouts_proxy_requests_total{{service="{svc}",code_class="5xx"}}[30s]))'
    ' / sum(rate(rollouts_proxy_requests_total{{service="{svc}"}}[30s]))'
)
DATA_DEADLINE_SECONDS = 45.0


def _prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found is None and Path("/usr/bin/prometheus").exists():
        found = "/usr/bin/prometheus"
    return found


@dataclass
class Stack:
    url: str
    proxy: WeightedProxy
    log_file: Path
    requests_sent: int = 0
    failures: list[str] = field(default_factory=list)


async def measure(query: PrometheusQuery, *, now: float | None = None) -> Any:
    async with aiohttp.ClientSession() as session:
        return await measure_prometheus(query, session, now=time.time() if now is None else now)


async def _start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


def _fixed(status: int) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, text="ok" if status < 400 else "boom")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _poll(check: Callable[[], Awaitable[bool]], *, deadline: float, what: str, log: Path) -> None:
    """Re-check until true; polling (not sleeping a fixed time) is the synchronisation."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(MeasurementError, aiohttp.ClientError, OSError):
            if await check():
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {deadline:g}s waiting for {what}; prometheus log tail:\n{_log_tail(log)}")


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def _spawn_prometheus(
    binary: str, tmp: Path, target_port: int, log_file: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Our own server: temp config scraping the target every second, temp TSDB, a free port."""
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: traffic-shifter\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    binary = _prometheus_binary()
    if binary is None:
        pytest.skip(
            "prometheus binary not found: install it (apt-get install prometheus; .ci/run does) to run these tests"
        )
    tmp = tmp_path_factory.mktemp("prometheus")
    runners: list[web.AppRunner] = []
    proxy = WeightedProxy(host="127.0.0.1", port=0, name=KEY)
    traffic: asyncio.Task[None] | None = None
    process: subprocess.Popen[bytes] | None = None
    log_file = tmp / "prometheus.log"
    try:
        ok_runner, ok_port = await _start_app(_fixed(200))
        bad_runner, bad_port = await _start_app(_fixed(500))
        runners += [ok_runner, bad_runner]
        await proxy.start()
        proxy.set_backends(
            stable=Backend(revision="rev-a", addresses=(f"127.0.0.1:{ok_port}",)),
            canary=Backend(revision="rev-b", addresses=(f"127.0.0.1:{bad_port}",)),
            canary_weight=50,
        )

        class StatsOnly:
            async def apply(self, desired: TrafficDesired, endpoints: Endpoints | None) -> None:
                return None

            def stats(self) -> dict[str, ProxyStats]:
                return {KEY: proxy.stats()}

            async def close(self) -> None:
                return None

        # The real admin app and its /metrics route; it never touches the NATS connection.
        shifter = TrafficShifter(cast(Any, None), StatsOnly())
        shifter.desired[KEY] = DESIRED
        admin_runner, admin_port = await _start_app(shifter.admin_app())
        runners.append(admin_runner)

        result = Stack(url="", proxy=proxy, log_file=log_file)

        async def send_traffic() -> None:
            # Steady traffic keeps rate() defined (non-zero denominators) for the whole module.
            async with aiohttp.ClientSession() as client:
                while True:
                    try:
                        async with client.get(f"{proxy.url}/buy") as response:
                            await response.read()
                        result.requests_sent += 1
                    except aiohttp.ClientError as exc:
                        result.failures.append(repr(exc))
                    await asyncio.sleep(0.01)

        traffic = asyncio.create_task(send_traffic())

        process, result.url = _spawn_prometheus(binary, tmp, admin_port, log_file)
        running = process

        async with aiohttp.ClientSession() as client:

            async def ready() -> bool:
                if running.poll() is not None:
                    pytest.fail(f"prometheus exited with {running.returncode}: {_log_tail(log_file)}")
                async with client.get(f"{result.url}/-/ready") as response:
                    return response.status == 200

            await _poll(ready, deadline=30, what="prometheus to become ready", log=log_file)

        async def scraped() -> bool:
            # Two scrapes of both services make rate() over [30s] defined for each of them.
            for svc in ("web-stable", "web-canary"):
                value = await measure(PrometheusQuery(address=result.url, query=ERROR_RATE.format(svc=svc)))
                if not value or math.isnan(value[0]):
                    return False
            return True

        await _poll(scraped, deadline=DATA_DEADLINE_SECONDS, what="two scrapes of the proxy", log=log_file)
        yield result
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        if process is not None:
            _stop(process)
        await proxy.stop()
        for runner in runners:
            await runner.cleanup()


def q(stack: Stack, query: str, **kwargs: Any) -> PrometheusQuery:
    return PrometheusQuery(address=stack.url, query=query, **kwargs)


# --- results and their types ----------------------------------------------------------------


@on_stack_loop
async def test_prometheus_scrapes_the_exposition(stack: Stack) -> None:
    # up == 1 means the real Prometheus accepted the text format from the /metrics route.
    assert await measure(q(stack, 'up{job="traffic-shifter"}')) == [1.0]
    buckets = await measure(q(stack, 'count(rollouts_proxy_request_duration_seconds_bucket{role="canary"})'))
    assert buckets == [12.0]  # 11 bounds + Inf
    p99 = await measure(
        q(
            stack,
            "histogram_quantile(0.99, sum by (le) "
            '(rate(rollouts_proxy_request_duration_seconds_bucket{service="web-canary"}[30s])))',
        )
    )
    assert len(p99) == 1 and 0 < p99[0] <= 10.0
    assert await measure(q(stack, 'rollouts_traffic_weight{service="web-canary"}')) == [50.0]


@on_stack_loop
async def test_scalar_results_are_floats(stack: Stack) -> None:
    total = await measure(q(stack, "scalar(sum(rollouts_proxy_requests_total))"))
    assert isinstance(total, float) and total > 0
    assert await measure(q(stack, "1 + 1")) == 2.0
    nan = await measure(q(stack, "0 / 0"))
    assert isinstance(nan, float) and math.isnan(nan)
    assert await measure(q(stack, "1 / 0")) == math.inf
    assert await measure(q(stack, "-1 / 0")) == -math.inf


@on_stack_loop
async def test_vector_results_are_lists_of_floats(stack: Stack) -> None:
    assert await measure(q(stack, "vector(1)")) == [1.0]
    by_role = await measure(q(stack, "sum by (role) (rollouts_proxy_requests_total)"))
    assert len(by_role) == 2 and all(isinstance(v, float) and v > 0 for v in by_role)
    # Four code classes are exposed for the canary: four series, labels dropped.
    canary = await measure(q(stack, 'rollouts_proxy_requests_total{service="web-canary"}'))
    assert len(canary) == 4 and sorted(canary)[:3] == [0.0, 0.0, 0.0] and max(canary) > 0
    assert await measure(q(stack, 'rollouts_proxy_requests_total{service="nope"}')) == []
    nan = await measure(q(stack, "vector(0) / vector(0)"))
    assert len(nan) == 1 and math.isnan(nan[0])


@on_stack_loop
async def test_string_result(stack: Stack) -> None:
    assert await measure(q(stack, '"hello"')) == "hello"


@on_stack_loop
async def test_seed_error_rate_query_by_service(stack: Stack) -> None:
    # Every canary response is a 500 and every stable one a 200: the ratios are exact.
    assert await measure(q(stack, ERROR_RATE.format(svc="web-canary"))) == [pytest.approx(1.0)]
    assert await measure(q(stack, ERROR_RATE.format(svc="web-stable"))) == [0.0]
    assert stack.failures == []


@on_stack_loop
async def test_range_query_returns_every_value(stack: Stack) -> None:
    values = await measure(
        q(
            stack,
            "sum(rollouts_proxy_requests_total)",
            range_start="now() - 10s",
            range_end="now()",
            range_step="1s",
        )
    )
    assert 2 <= len(values) <= 11
    assert values == sorted(values) and values[0] > 0  # a counter under steady traffic
    # Several series: every value of every series, flattened.
    both = await measure(
        q(
            stack,
            'rollouts_proxy_requests_total{code_class=~"2xx|5xx"} > 0',
            range_start='now() - duration("4s")',
            range_end="now()",
            range_step="1s",
        )
    )
    assert len(both) >= 4 and all(v > 0 for v in both)
    # Absolute bounds: unix seconds and RFC 3339.
    now = time.time()
    absolute = await measure(
        q(
            stack,
            "sum(rollouts_proxy_requests_total)",
            range_start=f"{now - 5:.3f}",
            range_end=datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            range_step="500ms",
        ),
        now=now,
    )
    assert 2 <= len(absolute) <= 11


@on_stack_loop
async def test_instant_query_of_a_range_vector_is_a_flat_matrix(stack: Stack) -> None:
    values = await measure(
        q(stack, 'rollouts_proxy_requests_total{service="web-canary",code_class="5xx"}[5s]')
    )
    assert len(values) >= 2 and values == sorted(values)


# --- errors ------------------------------------------------------------------------------------


@on_stack_loop
async def test_bad_query_reports_prometheus_error(stack: Stack) -> None:
    with pytest.raises(MeasurementError) as info:
        await measure(q(stack, "sum(rollouts_proxy_requests_total"))
    message = str(info.value)
    assert "bad_data" in message and "parse error" in message and stack.url in message
    with pytest.raises(MeasurementError, match="bad_data"):
        await measure(q(stack, "up", range_start="now()", range_end="now() - 1m", range_step="1s"))


@on_stack_loop
async def test_invalid_range_settings(stack: Stack) -> None:
    with pytest.raises(MeasurementError, match="start, end and step"):
        await measure(q(stack, "up", range_start="now() - 1m", range_end="now()"))
    with pytest.raises(MeasurementError, match="invalid time 'yesterday'"):
        await measure(q(stack, "up", range_start="yesterday", range_end="now()", range_step="1s"))
    with pytest.raises(MeasurementError, match="step"):
        await measure(q(stack, "up", range_start="now() - 1m", range_end="now()", range_step="1d"))
    with pytest.raises(MeasurementError, match="positive"):
        await measure(q(stack, "up", range_start="now() - 1m", range_end="now()", range_step="0"))


async def test_unreachable_and_malformed_addresses() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MeasurementError, match="prometheus request failed") as info:
        await measure(PrometheusQuery(address=closed, query="up", timeout_seconds=5))
    assert closed in str(info.value)
    for bad in ("not a url", "127.0.0.1:9090", "ftp://host/x"):
        with pytest.raises(MeasurementError, match="url format"):
            await measure(PrometheusQuery(address=bad, query="up"))
    with pytest.raises(MeasurementError, match="negative"):
        await measure(PrometheusQuery(address=closed, query="up", timeout_seconds=-1))


async def test_timeout_is_a_measurement_error() -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()  # never set: only the client's timeout ends this request
        return web.Response()  # pragma: no cover

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner, port = await _start_app(app)
    try:
        started = time.monotonic()
        with pytest.raises(MeasurementError, match=r"timed out after 0\.3s"):
            await measure(
                PrometheusQuery(address=f"http://127.0.0.1:{port}", query="up", timeout_seconds=0.3)
            )
        assert time.monotonic() - started < 5
    finally:
        never.set()  # let the handler finish, or the runner waits its whole shutdown timeout
        await runner.cleanup()


# --- headers, auth and secrets, through a recording server in front of Prometheus ---------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


async def _front(upstream: str) -> tuple[web.AppRunner, str, list[Seen]]:
    """A real server before Prometheus: records requests; /tenant forwards, /getonly refuses POST,
    /deny answers 401 echoing the credentials it got (as a careless gateway might)."""
    seen: list[Seen] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(Seen(request.method, request.path, dict(request.headers)))
        prefix, _, rest = request.path.lstrip("/").partition("/")
        if prefix == "deny":
            echoed = f"denied {request.headers.get('Authorization')} {request.headers.get('X-Token')}"
            return web.Response(status=401, text=echoed)
        if prefix == "getonly" and request.method != "GET":
            return web.Response(status=405)
        async with (
            aiohttp.ClientSession() as client,
            client.request(
                request.method,
                f"{upstream}/{rest}",
                params=request.query,
                data=await request.post() if request.method == "POST" else None,
            ) as response,
        ):
            return web.Response(
                status=response.status, body=await response.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner, port = await _start_app(app)
    return runner, f"http://127.0.0.1:{port}", seen


@on_stack_loop
async def test_headers_and_basic_auth_are_sent(stack: Stack) -> None:
    runner, front, seen = await _front(stack.url)
    try:
        value = await measure(
            PrometheusQuery(
                address=f"{front}/tenant",
                query="vector(7)",
                headers={"X-Scope-OrgID": "tenant_a"},
                basic_auth=("alice", "s3cret"),
            )
        )
        assert value == [7.0]
        assert len(seen) == 1
        request = seen[0]
        assert (request.method, request.path) == ("POST", "/tenant/api/v1/query")
        assert request.headers["X-Scope-OrgID"] == "tenant_a"
        assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()

        seen.clear()
        ranged = await measure(
            PrometheusQuery(
                address=f"{front}/tenant/",
                query="vector(3)",
                headers={"X-Scope-OrgID": "tenant_b"},
                range_start="now() - 2s",
                range_end="now()",
                range_step="1s",
            )
        )
        assert ranged == [3.0, 3.0, 3.0]
        assert seen[0].path == "/tenant/api/v1/query_range"
        assert seen[0].headers["X-Scope-OrgID"] == "tenant_b"
        assert "Authorization" not in seen[0].headers
    finally:
        await runner.cleanup()


@on_stack_loop
async def test_post_refused_falls_back_to_get(stack: Stack) -> None:
    runner, front, seen = await _front(stack.url)
    try:
        assert await measure(PrometheusQuery(address=f"{front}/getonly", query="vector(5)")) == [5.0]
        assert [(s.method, s.path) for s in seen] == [
            ("POST", "/getonly/api/v1/query"),
            ("GET", "/getonly/api/v1/query"),
        ]
    finally:
        await runner.cleanup()


@on_stack_loop
async def test_error_messages_never_contain_secrets(stack: Stack) -> None:
    runner, front, seen = await _front(stack.url)
    try:
        with pytest.raises(MeasurementError) as info:
            await measure(
                PrometheusQuery(
                    address=f"{front}/deny",
                    query="up",
                    headers={"X-Token": "tok-123456"},
                    basic_auth=("bob", "hunter2-password"),
                )
            )
        message = str(info.value)
        assert "HTTP 401" in message and "denied" in message
        encoded = base64.b64encode(b"bob:hunter2-password").decode()
        for secret in ("tok-123456", "hunter2-password", encoded):
            assert secret not in message
        # Credentials in the address are not shown either.
        with pytest.raises(MeasurementError) as info:
            await measure(
                PrometheusQuery(address=f"http://carol:pa55word@127.0.0.1:{free_port()}", query="up")
            )
        assert "pa55word" not in str(info.value) and "carol" not in str(info.value)
        with pytest.raises(MeasurementError, match="use one of them"):
            await measure(
                PrometheusQuery(
                    address=stack.url,
                    query="up",
                    headers={"authorization": "Bearer zzz-token"},
                    basic_auth=("a", "b"),
                )
            )
    finally:
        await runner.cleanup()


# --- range bound expressions (pure) ----------------------------------------------------------------


def test_query_of_translates_the_template_block() -> None:
    spec = PrometheusMetric(
        address="http://prom:9090",
        query="up",
        timeout=12,
        insecure=True,
        headers=[WebMetricHeader(key="X-Scope-OrgID", value="t1")],
        range_query=PrometheusRangeQuery(start="now() - 5m", end="now()", step="30s"),
    )
    assert query_of(spec) == PrometheusQuery(
        address="http://prom:9090",
        query="up",
        timeout_seconds=12.0,
        insecure=True,
        headers={"X-Scope-OrgID": "t1"},
        range_start="now() - 5m",
        range_end="now()",
        range_step="30s",
    )
    assert query_of(PrometheusMetric(query="up")).timeout_seconds == 30.0
    with pytest.raises(MeasurementError, match="sigv4 is not supported"):
        query_of(PrometheusMetric(query="up", authentication=PrometheusAuth(sigv4=Sigv4Config(region="x"))))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("now()", 1_700_000_000.0),
        (" now( ) ", 1_700_000_000.0),
        ("now() - 5m", 1_700_000_000.0 - 300),
        ("now()-1h30m", 1_700_000_000.0 - 5400),
        ("now() - 250ms", 1_700_000_000.0 - 0.25),
        ('now() - duration("90s")', 1_700_000_000.0 - 90),
        ("now() - duration('2m')", 1_700_000_000.0 - 120),
        ("1699990000", 1_699_990_000.0),
        ("1699990000.5", 1_699_990_000.5),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000.5),
    ],
)
def test_resolve_time(expression: str, expected: float) -> None:
    assert resolve_time(expression, now=1_700_000_000.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    "expression", ["", "yesterday", "now() - 5", "now() - 1d", "now() + 5m", "2023-11-14T22:13:20", "now"]
)
def test_resolve_time_rejects(expression: str) -> None:
    with pytest.raises(ValueError):
        resolve_time(expression, now=1_700_000_000.0)
