"""A bounded load test of `dcrt serve` on loopback (issue 16): LeNet-5 and AlexNet (the
paper's densities and bits, seeded random weights), concurrency 1, 8 and 64, with dynamic
batching (--max-batch 32; --max-delay-ms 0, the default: a batch is what queued while the last
one ran, and 2: each batch waits up to 2 ms for company) and without (--max-batch 1); then the Ray Serve
deployment (dcrt.serve.ray, two replicas) at concurrency 64. Clients are Triton's asyncio
client, each of C workers sending one request after another with inputs drawn from a pool;
every answer is checked against direct `infer` of its own input (nothing lost, nothing mixed
up). The load generator shares the 2 cores with the server: absolute numbers are what one
machine does serving itself.

    pip install '.[serve,ray]' 'tritonclient[http]' matplotlib
    python bench/serve_load.py --out bench/RESULTS-serve.md --plot bench/figures/serve_throughput.png

Takes about 4 minutes (--seconds scales it).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_line  # noqa: E402

NETS = {"lenet-5": 4.0, "alexnet": 8.0}  # seconds per cell (times --seconds)
CONCURRENCY = (1, 8, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc=None, timeout: float = 120):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


async def load(url: str, model: str, pool: list, want: list, concurrency: int, seconds: float) -> dict:
    """C workers, each sending requests back to back for `seconds`; returns throughput,
    latency percentiles and how many answers were wrong or failed."""
    import tritonclient.http.aio as tha
    c = tha.InferenceServerClient(url, conn_limit=max(concurrency, 1))
    lat, wrong, failed = [], 0, 0
    rng = np.random.default_rng(concurrency)
    stop = time.perf_counter() + seconds

    async def worker(k):
        nonlocal wrong, failed
        i = int(rng.integers(len(pool)))
        while time.perf_counter() < stop:
            i = (i + 7 * k + 1) % len(pool)
            inp = tha.InferInput("input", list(pool[i].shape), "FP32")
            inp.set_data_from_numpy(pool[i])
            t0 = time.perf_counter()
            try:
                y = (await c.infer(model, [inp])).as_numpy("output")
            except Exception:  # noqa: BLE001 - counted
                failed += 1
                continue
            lat.append(time.perf_counter() - t0)
            if y is None or not np.allclose(y, want[i], rtol=1e-4, atol=1e-6):
                wrong += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await c.close()
    lat_ms = np.array(lat) * 1e3
    return {"rps": len(lat) / elapsed, "p50": float(np.percentile(lat_ms, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat_ms, 99)) if len(lat) else float("nan"), "n": len(lat), "wrong": wrong,
            "failed": failed}


def batches(url: str, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://{url}/metrics").read().decode()
    s = n = 0.0
    for line in text.splitlines():
        if line.startswith(f'dcrt_batch_size_sum{{model="{model}"}}'):
            s = float(line.split()[-1])
        elif line.startswith(f'dcrt_batch_size_count{{model="{model}"}}'):
            n = float(line.split()[-1])
    return s, n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--plot")
    ap.add_argument("--seconds", type=float, default=1.0, help="scale every cell's duration")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args(argv)
    import dcrt
    from dcrt import zoo
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as d:
        paths, pools, wants = {}, {}, {}
        for net in NETS:
            p = zoo.PAPER[net]
            paths[net] = os.path.join(d, f"{net}.dcz")
            dcrt.compress(zoo.build(net, seed=0), paths[net], density=p["density"], bits=p["bits"],
                          index_bits=p["index_bits"], progress=False)
            m = dcrt.load(paths[net])
            rng = np.random.default_rng(1)
            pools[net] = [rng.random((1, *m.input_shape), dtype=np.float32) for _ in range(64)]
            wants[net] = [m.infer(x) for x in pools[net]]
            del m
        for mode, flags in (("batching", ["--max-batch", "32", "--max-delay-ms", "0"]),
                            ("batching, 2 ms delay", ["--max-batch", "32", "--max-delay-ms", "2"]),
                            ("no batching", ["--max-batch", "1"])):
            port = free_port()
            url = f"127.0.0.1:{port}"
            proc = subprocess.Popen([sys.executable, "-m", "dcrt", "serve", *paths.values(), "--port", str(port), "-q",
                                     *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_ready(url, proc)
                for net, secs in NETS.items():
                    name = os.path.splitext(os.path.basename(paths[net]))[0]
                    for conc in CONCURRENCY:
                        s0, n0 = batches(url, name)
                        r = asyncio.run(load(url, name, pools[net], wants[net], conc, secs * args.seconds))
                        s1, n1 = batches(url, name)
                        r["batch"] = (s1 - s0) / max(n1 - n0, 1)
                        results[(net, mode, conc)] = r
                        rows.append(f"| {net} | dcrt serve, {mode} | {conc} | {r['rps']:.0f} | {r['p50']:.2f} | "
                                    f"{r['p99']:.2f} | {r['batch']:.1f} | {r['n']} | {r['wrong']} | {r['failed']} |")
                        print(rows[-1], flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        if not args.no_ray:
            import ray
            from ray import serve
            from dcrt.serve.ray import deployment
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                     configure_logging=False)
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            url = f"127.0.0.1:{port}"
            try:
                for net, secs in NETS.items():
                    name = os.path.splitext(os.path.basename(paths[net]))[0]
                    serve.run(deployment(paths[net], num_replicas=2, max_batch=32, max_delay_ms=2, threads=1,
                                         ray_actor_options={"num_cpus": 1}), name=name, route_prefix="/")
                    wait_ready(url)
                    r = asyncio.run(load(url, name, pools[net], wants[net], 64, secs * args.seconds))
                    results[(net, "ray", 64)] = r
                    rows.append(f"| {net} | Ray Serve, 2 replicas x 1 thread | 64 | {r['rps']:.0f} | {r['p50']:.2f} | "
                                f"{r['p99']:.2f} | | {r['n']} | {r['wrong']} | {r['failed']} |")
                    print(rows[-1], flush=True)
                    serve.delete(name)
            finally:
                serve.shutdown()
                ray.shutdown()
    cmd = "python bench/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"CPU: {cpu_line()}", "", f"Command: `{cmd.strip()}` (dcrt {dcrt.__version__}, Python "
             f"{platform.python_version()}); client and server on the same 2 cores, loopback.", "",
             "| network | server | concurrency | requests/s | p50 ms | p99 ms | samples per infer | answers | wrong | "
             "failed |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows
    summary = []
    for net in NETS:
        on, off = results.get((net, "batching", 64)), results.get((net, "no batching", 64))
        if on and off:
            summary.append(f"- {net} at concurrency 64: dynamic batching {on['rps'] / off['rps']:.2f}× the "
                           f"throughput without ({on['rps']:.0f} vs {off['rps']:.0f} requests/s)")
    text = "\n".join(lines + [""] + summary) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(NETS), figsize=(5 * len(NETS), 3.6))
        for ax, net in zip(axes, NETS):
            for mode, style in (("batching", "o-"), ("batching, 2 ms delay", "d-."), ("no batching", "s--")):
                ys = [results[(net, mode, c)]["rps"] for c in CONCURRENCY]
                ax.plot(CONCURRENCY, ys, style, label=f"dcrt serve, {mode}")
            if (net, "ray", 64) in results:
                ax.plot([64], [results[(net, "ray", 64)]["rps"]], "^", ms=9, label="Ray Serve, 2 replicas")
            ax.set_xscale("log", base=2)
            ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel("requests / s")
            ax.set_title(f"{net}, batch-1 requests")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(cpu_line()[:90], fontsize=8)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
