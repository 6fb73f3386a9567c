"""dcrt serve: the KServe v2 REST protocol checked with Triton's own client (tritonclient.http),
dynamic batching (concurrent answers exact, batches really formed), the error statuses, start-up
failure and graceful shutdown. The server runs as `python -m dcrt serve` in a subprocess on a
free loopback port, as a user would run it."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import dcrt
from dcrt.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Softmax, he_init

pytestmark = pytest.mark.server
pytest.importorskip("uvicorn", reason="dcrt serve needs the serve extra (pip install 'dcrt[serve]')")
pytest.importorskip("starlette", reason="dcrt serve needs the serve extra")
pytest.importorskip("prometheus_client", reason="dcrt serve needs the serve extra")
th = pytest.importorskip("tritonclient.http", reason="the tests use Triton's client (pip install 'tritonclient[http]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, data=None, headers=None):
    """(status, headers, body) of a request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Server:
    def __init__(self, args, env=None):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "dcrt", "serve", *map(str, args), "--port", str(self.port),
                                      "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.out = []
        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True).start()

    def wait_ready(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {''.join(self.out)}")
            try:
                if get(f"http://{self.url}/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s: {''.join(self.out)}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _models(tmp):
    fc = he_init(Sequential([Linear(64, 32, "fc1"), ReLU("r"), Linear(32, 10, "fc2"), Softmax("p")],
                            input_shape=(64,), name="mlp"), 1)
    conv = he_init(Sequential([Conv2d(1, 4, 3, padding=1, name="c1"), ReLU("r1"), MaxPool2d(2, 2, name="p1"),
                              Flatten("f"), Linear(4 * 6 * 6, 5, "fc")], input_shape=(1, 12, 12), name="cnn"), 2)
    paths = {}
    for m in (fc, conv):
        paths[m.name] = tmp / f"{m.name}.dcz"
        dcrt.compress(m, paths[m.name], density=0.5, progress=False)
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _models(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(models):
    s = Server([models["mlp"], f"conv={models['cnn']}", "--max-batch", "16", "--max-delay-ms", "5"]).wait_ready()
    yield s
    s.stop()


def infer(client, model, x, binary=True):
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return client.infer(model, [inp], outputs=[th.InferRequestedOutput("output", binary_data=binary)])


def test_health_and_metadata_through_tritons_client(server, models):
    c = th.InferenceServerClient(server.url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("mlp") and c.is_model_ready("conv") and not c.is_model_ready("nope")
    meta = c.get_model_metadata("conv")
    m = dcrt.load(models["cnn"])
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *m.input_shape]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, *m.output_shape]}]
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_direct_infer(server, models, binary):
    c = th.InferenceServerClient(server.url)
    rng = np.random.default_rng(3)
    for name, path, shape in (("mlp", models["mlp"], (64,)), ("conv", models["cnn"], (1, 12, 12))):
        m = dcrt.load(path)
        for n in (1, 5):
            x = rng.random((n, *shape), dtype=np.float32)
            np.testing.assert_array_equal(infer(c, name, x, binary).as_numpy("output"), m.infer(x))
        one = rng.random(shape, dtype=np.float32)  # one sample, no batch dimension: as Model.infer takes it
        np.testing.assert_array_equal(infer(c, name, one, binary).as_numpy("output"), m.infer(one))


def test_concurrent_requests_are_batched_and_each_answer_is_its_own(server, models):
    """64 requests in flight at once, each a different input (1-3 samples): every answer equals
    direct infer of its own input (nothing lost, nothing mixed up), and the server ran batches
    of more than one request."""
    m = dcrt.load(models["mlp"])
    rng = np.random.default_rng(4)
    xs = [rng.random((int(rng.integers(1, 4)), 64), dtype=np.float32) for _ in range(192)]

    def batches():
        text = get(f"http://{server.url}/metrics")[2].decode()
        vals = {}
        for line in text.splitlines():
            for key in ("dcrt_batch_size_sum", "dcrt_batch_size_count"):
                if line.startswith(key + '{model="mlp"}'):
                    vals[key] = float(line.split()[-1])
        return vals

    before = batches()

    async def send_all():  # Triton's asyncio client: 64 connections, every request in flight at once
        import asyncio
        import tritonclient.http.aio as tha
        c = tha.InferenceServerClient(server.url, conn_limit=64)

        async def one(x):
            inp = tha.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return (await c.infer("mlp", [inp], outputs=[tha.InferRequestedOutput("output")])).as_numpy("output")
        try:
            return await asyncio.gather(*(one(x) for x in xs))
        finally:
            await c.close()

    import asyncio
    # In a batch the rows run the batched kernel, alone the batch-1 one: the same sums in another
    # order (last-bit differences). A lost or mixed-up answer differs by far more.
    for x, y in zip(xs, asyncio.run(send_all())):
        np.testing.assert_allclose(y, m.infer(x), rtol=1e-5, atol=1e-6)
    after = batches()
    calls = after["dcrt_batch_size_count"] - before.get("dcrt_batch_size_count", 0)
    samples = after["dcrt_batch_size_sum"] - before.get("dcrt_batch_size_sum", 0)
    assert samples == sum(len(x) for x in xs)
    assert calls < len(xs), f"{calls} infer calls for {len(xs)} concurrent requests: nothing was batched"


def test_errors_answer_with_the_python_apis_message(server, models):
    m = dcrt.load(models["mlp"])
    base = f"http://{server.url}/v2/models/mlp/infer"

    def post(body, headers=None, url=base):
        st, _, b = get(url, json.dumps(body).encode() if not isinstance(body, bytes) else body,
                       {"content-type": "application/json", **(headers or {})})
        return st, json.loads(b)["error"]

    x = np.zeros((2, 65), np.float32)
    with pytest.raises(ValueError) as api:
        m.infer(x)
    assert post({"inputs": [{"name": "input", "shape": [2, 65], "datatype": "FP32", "data": x.ravel().tolist()}]}) \
        == (400, str(api.value))
    bad = np.zeros((1, 64), np.float32)
    bad[0, 7] = np.nan
    with pytest.raises(ValueError) as api:
        m.infer(bad)
    st, msg = post({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 7 + ["NaN"] + [0.0] * 56}]})
    st2, msg2 = get(base, json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                                  "data": [0.0] * 7 + [float("nan")] + [0.0] * 56}]}).encode())[0:3:2]
    assert st == 400 and st2 == 400 and json.loads(msg2)["error"] == str(api.value)
    assert post({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64", "data": [0] * 64}]})[0] == 400
    st, msg = post({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]})
    assert st == 400 and "'input'" in msg
    assert post({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 63}]})[0] == 400
    assert post(b"{not json")[0] == 400
    st, msg = post({"inputs": []}, url=f"http://{server.url}/v2/models/nope/infer")
    assert st == 404 and "mlp" in msg and "conv" in msg
    assert get(f"http://{server.url}/v2/models/nope")[0] == 404
    assert get(f"http://{server.url}/v2/models/mlp/versions/2")[0] == 404
    # the binary extension: a header length past the body, a size that is not the shape's
    assert post(b"{}", {"Inference-Header-Content-Length": "99"})[0] == 400
    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 255}}]}).encode()
    assert post(head + bytes(255), {"Inference-Header-Content-Length": str(len(head))})[0] == 400


def test_body_limit_and_full_queue(models):
    """A body over --max-body-mb answers 413 before it is read; past --max-queue waiting
    requests answer 503 with Retry-After, and the ones admitted are still answered."""
    s = Server([models["mlp"], "--max-body-mb", "0.01", "--max-queue", "1", "--max-batch", "64",
                "--max-delay-ms", "400"]).wait_ready()
    try:
        url = f"http://{s.url}/v2/models/mlp/infer"
        big = json.dumps({"inputs": [{"name": "input", "shape": [100, 64], "datatype": "FP32",
                                      "data": [0.5] * 6400}]}).encode()
        st, _, body = get(url, big)
        assert st == 413 and "limit" in json.loads(body)["error"]
        one = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                      "data": [0.5] * 64}]}).encode()
        results = []
        t = threading.Thread(target=lambda: results.append(get(url, one)))
        t.start()
        time.sleep(0.15)  # the first waits 400 ms for company in the queue
        st, headers, body = get(url, one)
        t.join()
        assert st == 503 and headers.get("retry-after") == "1" and "busy" in json.loads(body)["error"]
        assert results[0][0] == 200
        metrics = get(f"http://{s.url}/metrics")[2].decode()
        assert 'dcrt_request_failures_total{code="503",model="mlp"} 1.0' in metrics
        assert 'dcrt_request_failures_total{code="413",model="mlp"} 1.0' in metrics
    finally:
        s.stop()


def test_a_model_that_fails_to_load_stops_the_server_at_start(models, tmp_path):
    bad = tmp_path / "bad.dcz"
    data = bytearray(open(models["mlp"], "rb").read())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(dcrt.FormatError) as api:
        dcrt.load(bad)
    p = subprocess.run([sys.executable, "-m", "dcrt", "serve", str(models["mlp"]), str(bad), "--port",
                        str(free_port())], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert str(bad) in p.stderr and str(api.value) in p.stderr
    p = subprocess.run([sys.executable, "-m", "dcrt", "serve", str(models["mlp"]), f"mlp={models['cnn']}",
                        "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "two models named 'mlp'" in p.stderr


def test_sigterm_finishes_requests_in_flight(models):
    s = Server([models["mlp"], "--max-batch", "8", "--max-delay-ms", "600"]).wait_ready()
    url = f"http://{s.url}/v2/models/mlp/infer"
    x = np.random.default_rng(5).random((2, 64), dtype=np.float32)
    one = json.dumps({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                                  "data": x.ravel().tolist()}]}).encode()
    results = []
    t = threading.Thread(target=lambda: results.append(get(url, one)))
    t.start()
    time.sleep(0.2)  # in the batcher's queue, 400 ms from running
    s.proc.send_signal(signal.SIGTERM)
    t.join(30)
    # uvicorn finishes the requests, shuts down, then re-raises the signal: the exit status is
    # that of a process ended by SIGTERM (-15), after the answer went out.
    assert s.proc.wait(30) in (0, -signal.SIGTERM)
    st, _, body = results[0]
    assert st == 200
    out = json.loads(body)["outputs"][0]
    np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(out["shape"]),
                                  dcrt.load(models["mlp"]).infer(x))
