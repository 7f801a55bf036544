"""A weighted HTTP router with mirroring, as a mesh or gateway would route a model's traffic.

Run as a process: ``python tests/router.py --port P --seed S --route URL=WEIGHT ... [--mirror URL]``.
Every request (predictions and feedback alike, as a real route does not tell them apart) goes to
one backend drawn by weight; a copy goes to the mirror, whose answer is dropped. The answer of the
chosen backend is returned as it is, headers included.
"""

from __future__ import annotations

import argparse
import asyncio
import random

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--route", action="append", required=True, help="URL=WEIGHT")
    parser.add_argument("--mirror", default=None)
    args = parser.parse_args()
    routes = [(url, int(weight)) for url, weight in (item.rsplit("=", 1) for item in args.route)]
    rng = random.Random(args.seed)
    background: set[asyncio.Task[None]] = set()

    async def mirror(session: aiohttp.ClientSession, request: web.Request, body: bytes) -> None:
        try:
            async with session.request(request.method, args.mirror + request.path_qs, data=body,
                                       headers={"Content-Type": request.content_type}) as answer:
                await answer.read()
        except aiohttp.ClientError:
            pass

    async def handle(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        body = await request.read()
        backend = rng.choices([url for url, _ in routes], weights=[weight for _, weight in routes])[0]
        if args.mirror:
            task = asyncio.ensure_future(mirror(session, request, body))
            background.add(task)
            task.add_done_callback(background.discard)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(request.method, backend + request.path_qs, data=body, headers=headers) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=payload, headers=kept)

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession()

    async def stop(app: web.Application) -> None:
        await asyncio.gather(*background, return_exceptions=True)
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
