"""Benchmark: the canary share nginx really serves at each weight (the `--router nginx` provider).

Starts 2 stable and 3 canary aiohttp backends (each answers with its revision), an NginxProvider
(its own nginx master under a temporary state dir), applies each weight, sends N sequential
requests through nginx and reports the observed canary share and the time apply() took (render,
`nginx -t`, reload, until the new configuration answers).

    .venv/bin/python bench/nginx_split.py [--requests 2000] [--weights 10,25,50,90]

Target (issue 5): within 1 point of the weight over 2,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from services.traffic_shifter.nginx_provider import NginxProvider
from shared.embedded_server import free_port
from shared.messages import Endpoints, TrafficDesired


async def backend(revision: str) -> tuple[web.ServerRunner, str]:
    async def handle(request: web.BaseRequest) -> web.Response:
        return web.Response(text=revision)

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def main(requests: int, weights: list[int]) -> dict[str, object]:
    binary = NginxProvider.available()
    if binary is None:
        sys.exit("nginx is not installed (apt-get install nginx)")
    started = [await backend("stable") for _ in range(2)] + [await backend("canary") for _ in range(3)]
    eps = Endpoints(
        namespace="bench",
        name="web",
        revisions={"stable": [a for _, a in started[:2]], "canary": [a for _, a in started[2:]]},
    )
    port = free_port()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        provider = NginxProvider(state_dir=Path(tmp), nginx_binary=binary)
        try:
            async with aiohttp.ClientSession() as session:
                for gen, weight in enumerate(weights, start=1):
                    desired = TrafficDesired(
                        namespace="bench",
                        name="web",
                        generation=gen,
                        stable_revision="stable",
                        canary_revision="canary",
                        canary_weight=weight,
                        port=port,
                    )
                    t0 = time.perf_counter()
                    await provider.apply(desired, eps)
                    apply_ms = (time.perf_counter() - t0) * 1000
                    canary = 0
                    for _ in range(requests):
                        async with session.get(f"http://127.0.0.1:{port}/") as r:
                            canary += (await r.text()) == "canary"
                    share = 100 * canary / requests
                    results.append(
                        {"weight": weight, "canary_share": round(share, 2), "apply_ms": round(apply_ms, 1)}
                    )
                    print(
                        f"weight {weight:3d}: canary {share:6.2f}% of {requests} requests "
                        f"(off by {abs(share - weight):.2f} points); apply {apply_ms:.0f} ms",
                        file=sys.stderr,
                    )
        finally:
            await provider.close()
            for runner, _ in started:
                await runner.cleanup()
    return {"requests": requests, "results": results}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--weights", default="10,25,50,90")
    args = ap.parse_args()
    out = asyncio.run(main(args.requests, [int(w) for w in args.weights.split(",")]))
    print(json.dumps(out))
