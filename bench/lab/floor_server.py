"""The HTTP floor: a bare aiohttp server answering GET /order/{order_uid} from a dict of bodies.

`python -m bench.lab.floor_server --port 8090 --bodies bodies.tsv` (one `order_uid<TAB>body`
a line). It does what a cache hit has to do and nothing else: no validation, metrics, routing
or headers, the same pre-serialised JSON bodies, the same web server (aiohttp, no access log)
and event loop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
from aiohttp import web


def load_bodies(path: Path) -> dict[str, bytes]:
    bodies = {}
    for line in path.read_bytes().splitlines():
        uid, _, body = line.partition(b"\t")
        bodies[uid.decode()] = body
    return bodies


def make_app(bodies: dict[str, bytes]) -> web.Application:
    async def get_order(request: web.Request) -> web.Response:
        uid = request.match_info["order_uid"]
        body = bodies.get(uid)
        if body is None:
            return web.Response(
                body=orjson.dumps({"error": "order not found", "order_uid": uid}),
                status=404,
                content_type="application/json",
            )
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/order/{order_uid}", get_order)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(load_bodies(args.bodies)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
