"""Tiny HTTP service used as a rollout target: configurable version, error rate and latency."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from fractions import Fraction

from aiohttp import web

log = logging.getLogger(__name__)


class ErrorSchedule:
    """Fails a fixed fraction of requests, spread evenly and deterministically (no randomness)."""

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"ERROR_RATE must be within 0..1, got {rate}")
        self._rate = Fraction(rate).limit_denominator(1000)
        self._count = 0

    def next_fails(self) -> bool:
        # Request n fails when floor(n * rate) advances, so any window of n requests fails ~rate * n.
        self._count += 1
        n = self._count
        return math.floor(n * self._rate) > math.floor((n - 1) * self._rate)


def build_app(*, version: str, message: str, error_rate: float, latency_ms: float) -> web.Application:
    errors = ErrorSchedule(error_rate)
    delay = latency_ms / 1000.0
    pid = os.getpid()

    async def root(request: web.Request) -> web.Response:
        if delay > 0:
            await asyncio.sleep(delay)
        body: dict[str, object] = {"version": version, "message": message, "pid": pid}
        if errors.next_fails():
            body["error"] = True
            return web.json_response(body, status=500)
        return web.json_response(body)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    return app


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("demo_app stopping")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.demo_app")
    parser.add_argument("--message", default="hello")
    args = parser.parse_args(argv)
    port_text = os.environ.get("PORT")
    if not port_text:
        sys.stderr.write("demo_app: PORT is required\n")
        return 2
    port = int(port_text)
    version = os.environ.get("VERSION", "1")
    error_rate = float(os.environ.get("ERROR_RATE", "0") or 0)
    latency_ms = float(os.environ.get("LATENCY_MS", "0") or 0)
    logging.basicConfig(level=logging.WARNING)
    app = build_app(version=version, message=args.message, error_rate=error_rate, latency_ms=latency_ms)
    print(
        f"demo_app version={version} port={port} pid={os.getpid()} "
        f"error_rate={error_rate} latency_ms={latency_ms} message={args.message!r}",
        flush=True,
    )
    asyncio.run(_serve(app, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
