"""Integration tests for the web metric provider against a real aiohttp server.

A server bound to 127.0.0.1 on an ephemeral port serves JSON, echoes POST/PUT
bodies and headers, returns plain text, fails with 500, and hangs forever (on
an asyncio.Event that is never set) to exercise the timeout.  Covers GET with
jsonPath, POST jsonBody/body echo, headers, non-JSON bodies, non-2xx and
timeouts as MeasurementError, bad jsonPath, and body/method validation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.analyzer.providers.errors import MeasurementError
from services.analyzer.providers.web import RawText, WebQuery, measure_web


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    never = asyncio.Event()

    async def metrics(request: web.Request) -> web.Response:
        return web.json_response({"data": {"ok": True, "rate": 0.97}, "items": [{"value": 3}, {"value": 4}]})

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        return web.json_response(
            {
                "method": request.method,
                "body": body,
                "json": await request.json() if request.content_type == "application/json" else None,
                "content_type": request.content_type,
                "auth": request.headers.get("Authorization"),
            }
        )

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="healthy")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def hang(request: web.Request) -> web.Response:
        await never.wait()  # never set: only the client's timeout ends this request
        return web.Response()  # pragma: no cover

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/text", text)
    app.router.add_get("/broken", broken)
    app.router.add_get("/hang", hang)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def test_get_json_with_json_path(server: TestServer, session: aiohttp.ClientSession) -> None:
    q = WebQuery(url=url(server, "/metrics"), json_path="{$.data.rate}")
    assert await measure_web(q, session) == 0.97
    q = WebQuery(url=url(server, "/metrics"), json_path="{$.items[1].value}")
    assert await measure_web(q, session) == 4


async def test_default_json_path_is_whole_document(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    doc = await measure_web(WebQuery(url=url(server, "/metrics")), session)
    assert doc["data"]["ok"] is True


async def test_post_json_body_is_sent_as_json(server: TestServer, session: aiohttp.ClientSession) -> None:
    q = WebQuery(url=url(server, "/echo"), method="POST", json_body={"query": "x", "n": 1})
    reply = await measure_web(q, session)
    assert reply["method"] == "POST"
    assert reply["json"] == {"query": "x", "n": 1}
    assert reply["content_type"] == "application/json"


async def test_put_string_body(server: TestServer, session: aiohttp.ClientSession) -> None:
    q = WebQuery(url=url(server, "/echo"), method="PUT", body="raw payload", json_path="{$.body}")
    assert await measure_web(q, session) == "raw payload"


async def test_headers_are_sent(server: TestServer, session: aiohttp.ClientSession) -> None:
    q = WebQuery(url=url(server, "/echo"), headers={"Authorization": "Bearer t0ken"}, json_path="{$.auth}")
    assert await measure_web(q, session) == "Bearer t0ken"


async def test_non_json_body_is_returned_as_text(server: TestServer, session: aiohttp.ClientSession) -> None:
    value = await measure_web(WebQuery(url=url(server, "/text"), json_path="{$.ignored}"), session)
    assert value == "healthy"
    assert isinstance(value, RawText)


async def test_server_error_is_a_measurement_error(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    target = url(server, "/broken")
    with pytest.raises(MeasurementError) as info:
        await measure_web(WebQuery(url=target), session)
    assert target in str(info.value)
    assert "500" in str(info.value)


async def test_timeout_is_a_measurement_error(server: TestServer, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="timed out"):
        await measure_web(WebQuery(url=url(server, "/hang"), timeout_seconds=0.2), session)
    assert time.monotonic() - started < 5


async def test_missing_json_path_is_a_measurement_error(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(MeasurementError, match=r"nope is not found"):
        await measure_web(WebQuery(url=url(server, "/metrics"), json_path="{$.data.nope}"), session)


async def test_connection_refused_is_a_measurement_error(session: aiohttp.ClientSession) -> None:
    # Port 1 on loopback is essentially never listening.
    with pytest.raises(MeasurementError, match="request failed"):
        await measure_web(WebQuery(url="http://127.0.0.1:1/x", timeout_seconds=2), session)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (
            WebQuery(url="http://127.0.0.1:1/", method="POST", body="a", json_body={"b": 1}),
            "either body or jsonBody",
        ),
        (WebQuery(url="http://127.0.0.1:1/", body="a"), "only be used with POST or PUT"),
        (WebQuery(url="http://127.0.0.1:1/", json_body=[1]), "only be used with POST or PUT"),
    ],
)
async def test_invalid_body_combinations(query: WebQuery, match: str, session: aiohttp.ClientSession) -> None:
    with pytest.raises(MeasurementError, match=match):
        await measure_web(query, session)
