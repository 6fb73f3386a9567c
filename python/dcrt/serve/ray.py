"""A .dcz model as a Ray Serve deployment: replicas spread over a Ray cluster, Ray's own
request batching (``@serve.batch``) and autoscaling, and the same KServe v2 request/response
schema as ``dcrt serve`` (so Triton's client, curl and gateways talk to both alike).

    import ray
    from ray import serve
    from dcrt.serve.ray import deployment
    serve.run(deployment("alexnet.dcz", num_replicas=2, max_batch=32), name="alexnet", route_prefix="/")
    # POST http://<head>:8000/v2/models/alexnet/infer

The runtime is per process; a replica is one process with its own model (``threads`` per
replica; give each replica ``ray_actor_options={"num_cpus": threads}`` so that Ray places them
on cores it has). The model's bytes travel with the deployment through Ray's object store, so
the file needs to exist only where the deployment is created, not on every node. Needs the
``ray`` extra (``pip install 'dcrt[ray]'``).
"""
from __future__ import annotations

import os
import re

import numpy as np

from . import protocol as P

_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<v>[^/]+))?(?P<rest>/ready|/infer)?/?$")


def deployment(path, name: str | None = None, *, max_batch: int = 32, max_delay_ms: float = 2.0,
               num_replicas: int | None = 1, autoscaling_config: dict | None = None, threads: int | None = None,
               ray_actor_options: dict | None = None, max_body_mb: float = 64.0, max_ongoing_requests: int | None = None):
    """A bound Ray Serve application serving ``path`` as model ``name`` (default: the file's
    stem). ``max_batch`` / ``max_delay_ms``: ``@serve.batch``'s ``max_batch_size`` /
    ``batch_wait_timeout_s`` (requests per batch, not samples); ``num_replicas`` or Ray's
    ``autoscaling_config`` (then leave ``num_replicas=None``); ``max_ongoing_requests`` per
    replica defaults to 4 * max_batch so that a batch can fill."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    name = name or os.path.splitext(os.path.basename(os.fspath(path)))[0]
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    import dcrt
    dcrt.loads(data, threads=1)  # a file that does not load fails here, not in every replica
    limit = int(max_body_mb * (1 << 20))
    options = {"name": f"dcrt-{name}", "max_ongoing_requests": max_ongoing_requests or max(4 * max_batch, 8)}
    if autoscaling_config is not None:
        if num_replicas not in (None, "auto"):
            raise ValueError("give num_replicas or autoscaling_config, not both")
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options

    @serve.deployment(**options)
    class DczModel:
        def __init__(self, data: bytes, name: str, threads):
            import dcrt
            self.model = dcrt.loads(data, threads=threads)
            self.name = name

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_delay_ms / 1000.0)
        async def _infer(self, xs: list) -> list:
            """One infer on the concatenation; each request gets its own rows back. A batch the
            runtime refuses is rerun request by request, so an error reaches only its own."""
            try:
                y = self.model.infer(xs[0] if len(xs) == 1 else np.concatenate(xs))
            except (ValueError, TypeError):
                out = []
                for x in xs:
                    try:
                        out.append(self.model.infer(x))
                    except (ValueError, TypeError) as e:
                        out.append(e)
                return out
            out, off = [], 0
            for x in xs:
                out.append(y[off:off + x.shape[0]])
                off += x.shape[0]
            return out

        async def __call__(self, request: Request) -> Response:
            path = request.url.path
            if path in ("/v2/health/live", "/v2/health/ready"):
                return JSONResponse({path.rsplit("/", 1)[1]: True})
            if path.rstrip("/") == "/v2":
                from dcrt import __version__
                return JSONResponse(P.server_metadata(__version__))
            m = _ROUTE.match(path)
            if not m or m["name"] != self.name or (m["v"] or "1") != "1":
                return Response(P.error_body(f"unknown model or route {path!r}; this deployment serves "
                                             f"/v2/models/{self.name}"), status_code=404, media_type="application/json")
            if m["rest"] == "/ready":
                return JSONResponse({"name": self.name, "ready": True})
            if m["rest"] is None:
                return JSONResponse(P.model_metadata(self.name, self.model))
            if request.method != "POST":
                return Response(P.error_body("infer takes POST"), status_code=405, media_type="application/json")
            try:
                body = await request.body()
                if len(body) > limit:
                    raise P.ProtocolError(413, f"request body of {len(body)} bytes is over the limit of {limit} bytes")
                req = P.parse_infer(body, request.headers.get(P.HEADER_LEN), self.model)
                y = await self._infer(req.x)
                if isinstance(y, Exception):
                    raise P.ProtocolError(400, str(y))
                content, headers = P.encode_infer(self.name, req, y)
            except P.ProtocolError as e:
                return Response(P.error_body(e.message), status_code=e.status, media_type="application/json",
                                headers=e.headers)
            media = headers.pop("content-type")
            return Response(content, media_type=media, headers=headers)

    return DczModel.bind(data, name, threads)
