"""dcrt.serve.ray: a .dcz as a Ray Serve deployment with two replicas on a local Ray instance
(loopback only), queried with Triton's asyncio client; every answer checked against direct
infer of its own input."""
import asyncio
import os
import socket

import numpy as np
import pytest

import dcrt
from dcrt.nn import Linear, ReLU, Sequential, Softmax, he_init

pytestmark = pytest.mark.ray


def need(module, reason):
    """Import or skip; CI sets DCRT_REQUIRE_SERVER=1, where a missing package is a failure."""
    if os.environ.get("DCRT_REQUIRE_SERVER"):
        import importlib
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


ray = need("ray", "dcrt.serve.ray needs the ray extra (pip install 'dcrt[ray]')")
serve = need("ray.serve", "dcrt.serve.ray needs Ray Serve")
tha = need("tritonclient.http.aio", "the test uses Triton's client")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def test_two_replicas_answer_like_direct_infer(ray_serve, tmp_path):
    from dcrt.serve.ray import deployment
    m = he_init(Sequential([Linear(64, 32, "fc1"), ReLU("r"), Linear(32, 10, "fc2"), Softmax("p")],
                           input_shape=(64,), name="mlp"), 1)
    path = tmp_path / "mlp.dcz"
    dcrt.compress(m, path, density=0.5, progress=False)
    app = deployment(path, num_replicas=2, max_batch=8, max_delay_ms=5, threads=1,
                     ray_actor_options={"num_cpus": 0.5})
    serve.run(app, name="mlp", route_prefix="/")
    status = serve.status().applications["mlp"].deployments["dcrt-mlp"]
    assert status.replica_states.get("RUNNING") == 2
    ref = dcrt.load(path)
    rng = np.random.default_rng(7)
    xs = [rng.random((int(rng.integers(1, 4)), 64), dtype=np.float32) for _ in range(64)]

    async def send_all():
        c = tha.InferenceServerClient(ray_serve, conn_limit=64)
        try:
            assert await c.is_server_live()
            meta = await c.get_model_metadata("mlp")
            assert meta["inputs"][0]["shape"] == [-1, 64]

            async def one(x):
                inp = tha.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                return (await c.infer("mlp", [inp])).as_numpy("output")
            ys = await asyncio.gather(*(one(x) for x in xs))
            bad = tha.InferInput("input", [1, 65], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 65), np.float32))
            with pytest.raises(Exception, match="expected shape"):
                await c.infer("mlp", [bad])
            return ys
        finally:
            await c.close()

    for x, y in zip(xs, asyncio.run(send_all())):
        np.testing.assert_allclose(y, ref.infer(x), rtol=1e-5, atol=1e-6)  # batched rows: last-bit differences
    serve.delete("mlp")
