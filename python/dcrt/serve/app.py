"""The HTTP server: a Starlette application speaking the KServe v2 REST protocol for one or
more loaded .dcz models, with dynamic batching and Prometheus metrics. Run by ``dcrt serve``
under uvicorn; :func:`create_app` builds it for embedding in another ASGI stack.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
``GET /v2/models/{name}`` (and ``/versions/1``), ``GET /v2/models/{name}/ready``,
``POST /v2/models/{name}/infer`` (and ``/versions/1/infer``), ``GET /metrics``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import protocol as P
from .batcher import Batcher, QueueFull


class Metrics:
    """Prometheus metrics of one app (their own registry: several apps may live in a process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("dcrt_requests", "Infer requests received", ["model"], registry=self.registry)
        self.failures = Counter("dcrt_request_failures", "Infer requests answered with an error", ["model", "code"],
                                registry=self.registry)
        self.latency = Histogram("dcrt_request_duration_seconds", "Infer request latency, body read to answer",
                                 ["model"], registry=self.registry,
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                                          1.0, 2.5, 5.0, 10.0))
        self.batch = Histogram("dcrt_batch_size", "Samples per infer call the runtime ran", ["model"],
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("dcrt_queue_depth", "Requests queued or running", ["model"], registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(P.error_body(message), status_code=status, media_type="application/json", headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise P.ProtocolError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes "
                                   "(dcrt serve --max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise P.ProtocolError(413, f"request body is over the limit of {limit} bytes (dcrt serve --max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(models: dict, *, max_batch: int = 32, max_delay_ms: float = 0.0, max_queue: int = 256,
               max_body_bytes: int = 64 << 20, version: str | None = None) -> Starlette:
    """A Starlette app serving ``models`` ({name: loaded dcrt.Model}). ``max_batch`` samples per
    batched infer (1: no batching): what queued while the previous batch ran, plus what
    arrives within ``max_delay_ms`` after the first (default 0: no waiting);
    ``max_queue`` requests per model may wait before new ones get 503; bodies over
    ``max_body_bytes`` get 413."""
    if version is None:
        from .. import __version__ as version
    metrics = Metrics()
    batchers = {name: Batcher(m, max_batch=max_batch, max_delay=max_delay_ms / 1000.0, max_queue=max_queue,
                              on_batch=lambda n, name=name: metrics.batch.labels(name).observe(n))
                for name, m in models.items()}
    for name in models:  # every label shows in /metrics from the start
        metrics.requests.labels(name)
        metrics.queue.labels(name).set_function(lambda name=name: batchers[name].depth)

    def unknown(name, request=None) -> Response | None:
        """404 for a model (or version: each model has version 1) this server does not have."""
        if name not in models:
            return _error(404, f"unknown model {name!r}; this server has {', '.join(sorted(models)) or 'none'}")
        v = request.path_params.get("v", "1") if request is not None else "1"
        if v != "1":
            return _error(404, f"model {name!r} has version 1 only, not {v!r}")
        return None

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        return JSONResponse({"ready": True})

    async def server_meta(request):
        return JSONResponse(P.server_metadata(version))

    async def model_meta(request):
        name = request.path_params["name"]
        return unknown(name, request) or JSONResponse(P.model_metadata(name, models[name]))

    async def model_ready(request):
        name = request.path_params["name"]
        return unknown(name, request) or JSONResponse({"name": name, "ready": True})

    async def infer(request):
        name = request.path_params["name"]
        missing = unknown(name, request)
        if missing is not None:
            return missing
        t0 = time.perf_counter()
        metrics.requests.labels(name).inc()
        try:
            body = await _read_body(request, max_body_bytes)
            req = P.parse_infer(body, request.headers.get(P.HEADER_LEN), models[name])
            try:
                y = await batchers[name].infer(req.x)
            except QueueFull as e:
                raise P.ProtocolError(503, f"model {name!r} is busy: {e}; retry later", {"Retry-After": "1"}) from None
            except (ValueError, TypeError) as e:  # what the Python API says about this input
                raise P.ProtocolError(400, str(e)) from None
            content, headers = P.encode_infer(name, req, y)
        except P.ProtocolError as e:
            metrics.failures.labels(name, str(e.status)).inc()
            return _error(e.status, e.message, e.headers)
        except ClientDisconnect:
            metrics.failures.labels(name, "499").inc()
            return Response(status_code=499)
        except Exception as e:  # noqa: BLE001 - a server answers, it does not die
            metrics.failures.labels(name, "500").inc()
            return _error(500, f"{type(e).__name__}: {e}")
        finally:
            metrics.latency.labels(name).observe(time.perf_counter() - t0)
        media = headers.pop("content-type")
        return Response(content, media_type=media, headers=headers)

    async def prometheus(request):
        data, ctype = metrics.exposition()
        return Response(data, media_type=ctype.split(";")[0], headers={"content-type": ctype})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for b in batchers.values():
            b.start()
        try:
            yield
        finally:  # uvicorn has finished the in-flight requests by now; drain and stop
            await asyncio.gather(*(b.close() for b in batchers.values()))

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_meta),
        Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/versions/{v}", model_meta),
        Route("/v2/models/{name}/ready", model_ready), Route("/v2/models/{name}/versions/{v}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{v}/infer", infer, methods=["POST"]),
        Route("/metrics", prometheus),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics, app.state.batchers, app.state.models = metrics, batchers, models
    return app
