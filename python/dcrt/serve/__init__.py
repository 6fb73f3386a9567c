"""Serving .dcz models over HTTP (KServe v2 / Open Inference Protocol) with dynamic batching.

    dcrt serve lenet5.dcz alexnet.dcz --port 8000 --max-batch 32

needs the ``serve`` extra (``pip install 'dcrt[serve]'``: uvicorn, Starlette, prometheus_client).
:func:`create_app` (:mod:`dcrt.serve.app`) gives the ASGI app to embed elsewhere; the wire
format is in :mod:`dcrt.serve.protocol`; :mod:`dcrt.serve.ray` deploys a .dcz on Ray Serve.
"""
from __future__ import annotations

import os
import sys


def model_names(specs: list[str]) -> dict:
    """{name: path} from ``MODEL.dcz`` (named after the file) or ``NAME=MODEL.dcz`` specs;
    ValueError on a name used twice or one the URL cannot carry."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, os.path.splitext(os.path.basename(spec))[0]
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"model name {name!r} (from {spec!r}): use letters, digits, '-', '_' or '.'; "
                             "name a model with NAME=PATH")
        if name in out:
            raise ValueError(f"two models named {name!r} ({out[name]} and {path}); name them with NAME=PATH")
        out[name] = path
    return out


def load_models(paths: dict, device: str = "cpu", threads: int | None = None) -> dict:
    """Load every model before the server binds its port: a file that fails to load stops the
    server at start, with the loader's error and the file's name."""
    import dcrt
    models = {}
    for name, path in paths.items():
        try:
            models[name] = dcrt.load(path, device=device, threads=threads) if device == "cpu" else \
                dcrt.load(path, device=device)
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise RuntimeError(f"cannot serve {path!r} (model {name!r}): {type(e).__name__}: {e}") from e
    return models


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, *, max_batch: int = 32,
          max_delay_ms: float = 0.0, max_queue: int = 256, max_body_mb: float = 64.0, device: str = "cpu",
          threads: int | None = None, log_level: str = "info", graceful_s: float = 30.0) -> None:
    """Load ``specs`` and serve them until SIGINT/SIGTERM (in-flight requests are finished,
    for up to ``graceful_s`` seconds)."""
    try:
        import uvicorn
    except ImportError as e:  # pragma: no cover - exercised without the extra
        raise RuntimeError("dcrt serve needs the serve extra: pip install 'dcrt[serve]' "
                           "(uvicorn, starlette, prometheus_client)") from e
    from .app import create_app
    models = load_models(model_names(specs), device, threads)
    app = create_app(models, max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
                     max_body_bytes=int(max_body_mb * (1 << 20)))
    for name, m in models.items():
        print(f"dcrt serve: {name} ({m.path}): input [N, {', '.join(map(str, m.input_shape))}] -> "
              f"[N, {', '.join(map(str, m.output_shape))}], {getattr(m, 'threads', '?')} threads; "
              f"POST http://{host}:{port}/v2/models/{name}/infer", file=sys.stderr, flush=True)
    print(f"dcrt serve: batching up to {max_batch} samples" + (f", waiting up to {max_delay_ms:g} ms for them"
                                                               if max_delay_ms > 0 else "")
          if max_batch > 1 else "dcrt serve: no batching (--max-batch 1)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s,
                            lifespan="on")
    uvicorn.Server(config).run()


def create_app(*args, **kwargs):
    from .app import create_app as _create
    return _create(*args, **kwargs)
