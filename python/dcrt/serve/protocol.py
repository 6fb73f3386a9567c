"""The REST side of the KServe v2 / Open Inference Protocol, as Triton, KServe and MLServer
speak it: model metadata, and infer requests and responses with JSON tensors or the binary
tensor data extension. Framework-free (bytes and dicts in, bytes and headers out), so the
uvicorn server (:mod:`dcrt.serve.app`) and the Ray Serve deployment (:mod:`dcrt.serve.ray`)
share it.

A .dcz model has one input and one output; they are named ``input`` and ``output`` here,
datatype ``FP32``, shapes ``[-1, *input_shape]`` / ``[-1, *output_shape]`` (a request may also
send one sample without the batch dimension, as :meth:`dcrt.Model.infer` takes it).
"""
from __future__ import annotations

import json

import numpy as np

INPUT, OUTPUT = "input", "output"
HEADER_LEN = "inference-header-content-length"  # the binary extension's header (lower case)
DATATYPES = {"FP32": np.float32}  # what the runtime takes; Triton's other names are refused by name


class ProtocolError(Exception):
    """A request the protocol (or the model) refuses: ``status`` is the HTTP status to answer
    (400 bad request, 404 unknown model, 413 too large, 503 busy) and the message the body's
    ``error`` field."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def model_metadata(name: str, model) -> dict:
    """GET /v2/models/{name}: the model's name, versions, platform and tensors."""
    return {"name": name, "versions": ["1"], "platform": "dcrt",
            "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *map(int, model.input_shape)]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, *map(int, model.output_shape)]}]}


def server_metadata(version: str) -> dict:
    return {"name": "dcrt", "version": version, "extensions": ["binary_tensor_data"]}


class InferRequest:
    """A parsed infer request: ``x`` (float32, [N, *input_shape]), whether the caller sent one
    sample without the batch dimension (``single``), the request ``id`` and whether the output
    goes back as binary data."""

    def __init__(self, x: np.ndarray, single: bool, id_, binary_output: bool):
        self.x, self.single, self.id, self.binary_output = x, single, id_, binary_output


def _header_and_blob(body: bytes, header_len) -> tuple[dict, memoryview]:
    blob = memoryview(b"")
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise ProtocolError(400, f"Inference-Header-Content-Length: not an integer: {header_len!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes")
        head, blob = body[:n], memoryview(body)[n:]
    else:
        head = body
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise ProtocolError(400, "request body must be a JSON object with an 'inputs' list")
    return req, blob


def parse_infer(body: bytes, header_len, model) -> InferRequest:
    """Parse and check an infer request against ``model`` (its input shape); raises
    :class:`ProtocolError` (400) naming what is wrong."""
    req, blob = _header_and_blob(body, header_len)
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "request: 'inputs' must be a non-empty list of tensors")
    if len(inputs) != 1:
        raise ProtocolError(400, f"request: the model takes one input ('{INPUT}'), got {len(inputs)}")
    t = inputs[0]
    if not isinstance(t, dict):
        raise ProtocolError(400, "request: each input must be an object with name, shape, datatype and data")
    name, dtype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if name != INPUT:
        raise ProtocolError(400, f"request: unknown input {name!r}: the model's input is '{INPUT}'")
    if dtype not in DATATYPES:
        raise ProtocolError(400, f"infer: expected datatype FP32, got {dtype!r} (the runtime takes float32)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(400, f"request: input shape must be a list of non-negative integers, got {shape!r}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "request: input parameters must be an object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size < 0:
            raise ProtocolError(400, f"request: binary_data_size must be a non-negative integer, got {size!r}")
        if size != len(blob):
            raise ProtocolError(400, f"request: binary_data_size {size} but the body carries {len(blob)} bytes after "
                                     "the JSON header")
        if size != 4 * count:
            raise ProtocolError(400, f"request: shape {shape} holds {count} FP32 values ({4 * count} bytes), "
                                     f"binary_data_size is {size}")
        x = np.frombuffer(blob, dtype="<f4").reshape(shape)
    else:
        if "data" not in t:
            raise ProtocolError(400, "request: input has neither 'data' nor parameters.binary_data_size")
        try:
            x = np.asarray(t["data"], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ProtocolError(400, f"request: input data is not a list of numbers: {e}") from None
        if x.size != count:
            raise ProtocolError(400, f"request: shape {shape} holds {count} values, data has {x.size}")
        x = x.reshape(shape)
    ins = tuple(int(d) for d in model.input_shape)
    single = tuple(x.shape) == ins
    if not single and not (x.ndim == len(ins) + 1 and tuple(x.shape[1:]) == ins):
        exp = ", ".join(map(str, ins))
        raise ProtocolError(400, f"infer: expected shape [N, {exp}] or [{exp}], got [{', '.join(map(str, x.shape))}]")
    if not np.isfinite(x).all():
        flat = np.flatnonzero(~np.isfinite(x.reshape(1 if single else x.shape[0], -1)))[0]
        per = int(np.prod(ins))
        raise ProtocolError(400, f"input contains NaN or Inf (sample {flat // per}, flat index {flat % per})")
    binary = False
    top = req.get("parameters") or {}
    if isinstance(top, dict) and top.get("binary_data_output"):
        binary = True
    outs = req.get("outputs")
    if outs is not None:
        if not isinstance(outs, list):
            raise ProtocolError(400, "request: 'outputs' must be a list")
        for o in outs:
            if not isinstance(o, dict) or o.get("name") != OUTPUT:
                got = o.get("name") if isinstance(o, dict) else o
                raise ProtocolError(400, f"request: unknown output {got!r}: the model's output is '{OUTPUT}'")
            if (o.get("parameters") or {}).get("binary_data"):
                binary = True
    x = np.ascontiguousarray(x, dtype=np.float32)
    return InferRequest(x[None] if single else x, single, req.get("id"), binary)


def encode_infer(name: str, req: InferRequest, y: np.ndarray) -> tuple[bytes, dict]:
    """The response body and headers for ``y`` ([N, *output_shape]) answering ``req``."""
    y = np.ascontiguousarray(y[0] if req.single else y, dtype="<f4")
    out = {"name": OUTPUT, "datatype": "FP32", "shape": list(y.shape)}
    resp = {"model_name": name, "model_version": "1", "outputs": [out]}
    if req.id is not None:
        resp["id"] = req.id
    if req.binary_output:
        raw = y.tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(resp).encode()
        return head + raw, {"content-type": "application/octet-stream", HEADER_LEN: str(len(head))}
    out["data"] = y.ravel().tolist()
    return json.dumps(resp).encode(), {"content-type": "application/json"}
