"""Turn a pytest-benchmark JSON of bench/test_layers.py, test_networks.py or test_huffman.py
into ratio tables.

    python bench/report.py run.json [--all]

Layers: one row per (layer, batch, input): dcrt's median, the best peer's name and median, the
ratio best-peer / dcrt (> 1: dcrt is faster), dcrt's effective GB/s over its compressed bytes,
and its dense-equivalent GFLOP/s (2 * rows * cols * batch / time).
Networks: one row per network, batch 1, the same ratio against the best dense peer; load times.
Huffman: one row per source, every decoder's G symbols/s on one core and the best dcrt decoder
against zstd's huff0.
"""
import argparse
import json
from collections import defaultdict


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def _best_peer(g, mine_key="dcrt"):
    mine = g.get(mine_key)
    others = {k: v for k, v in g.items() if not k.startswith(mine_key)}  # dcrt:<kernel> variants are not peers
    best = min(others, key=others.get) if others else None
    return mine, best, (others[best] if best else None)


def layer_rows(benches):
    groups, info = defaultdict(dict), {}
    for b in benches:
        e = b["extra_info"]
        key = (e["layer"], e["batch"], e["input"])
        groups[key][e["impl"]] = b["stats"]["median"]
        info[key] = e
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], ["dense", "relu50", "relu18"].index(k[2]))):
        g, e = groups[key], info[key]
        mine, best, peer = _best_peer(g)
        out.append({
            "layer": key[0], "batch": key[1], "input": key[2], "dcrt_ms": mine and 1e3 * mine,
            "best_peer": best, "peer_ms": peer and 1e3 * peer,
            "ratio": (peer / mine) if (best and mine) else None,
            "gbs": (e["dcz_bytes"] / mine / 1e9) if mine else None,
            "gflops": (e["dense_flops"] / mine / 1e9) if mine else None,
            "all": {k: 1e3 * v for k, v in sorted(g.items(), key=lambda kv: kv[1])},
        })
    return out


def print_layers(rows, show_all):
    print("| layer | batch | input | dcrt ms | best peer | peer ms | peer/dcrt | dcrt GB/s | dense-eq GFLOP/s |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layer']} | {r['batch']} | {r['input']} | {fmt(r['dcrt_ms'], '.3f')} | {r['best_peer'] or '—'} "
              f"| {fmt(r['peer_ms'], '.3f')} | **{fmt(r['ratio'], '.2f')}×** | {fmt(r['gbs'], '.1f')} "
              f"| {fmt(r['gflops'], '.0f')} |")
    if show_all:
        print()
        for r in rows:
            print(f"- {r['layer']} b{r['batch']} {r['input']}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["all"].items()))


def print_networks(benches):
    nets, loads, info = defaultdict(dict), {}, {}
    for b in benches:
        e = b["extra_info"]
        if e["impl"] == "dcrt-load":
            loads[e["arch"]] = b["stats"]["median"]
        else:
            nets[e["arch"]][e["impl"]] = b["stats"]["median"]
        info[e["arch"]] = e
    if nets:
        print("| network (batch 1) | dcrt ms | best peer | peer ms | peer/dcrt | all (ms) |")
        print("|---|---:|---|---:|---:|---|")
        for arch, g in nets.items():
            mine, best, peer = _best_peer(g)
            ratio = peer / mine if (mine and peer) else None
            print(f"| {arch} | {fmt(mine and 1e3 * mine, '.3f')} | {best or '—'} | {fmt(peer and 1e3 * peer, '.3f')} "
                  f"| **{fmt(ratio, '.2f')}×** | " + ", ".join(f"{k} {1e3 * v:.3f}" for k, v in sorted(g.items(),
                                                                                                key=lambda kv: kv[1]))
                  + " |")
    if loads:
        print()
        print("| load from bytes | .dcz MB | ms |")
        print("|---|---:|---:|")
        for arch, t in loads.items():
            print(f"| {arch} | {info[arch]['dcz_bytes'] / 1e6:.2f} | {1e3 * t:.1f} |")


def print_huffman(benches):
    groups, info = defaultdict(dict), {}
    for b in benches:
        e = b["extra_info"]
        groups[e["source"]][e["impl"]] = e["symbols"] / b["stats"]["median"] / 1e9
        info[e["source"]] = e
    impls = sorted({i for g in groups.values() for i in g})
    print("| source | alphabet | entropy bits | " + " | ".join(impls) + " | best dcrt / huff0 |")
    print("|---|---:|---:|" + "---:|" * len(impls) + "---:|")
    for src, g in groups.items():
        e = info[src]
        ours = max((v for k, v in g.items() if k.startswith("huffman_")), default=None)
        peer = g.get("zstd-huff0")
        ratio = ours / peer if (ours and peer) else None
        print(f"| {src} | {e['alphabet']} | {e['entropy']:.2f} | "
              + " | ".join(fmt(g.get(i), ".2f") for i in impls) + f" | **{fmt(ratio, '.2f')}×** |")
    print("\n(G symbols/s, one core, median; the decoders' Python call included.)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--all", action="store_true", help="also list every implementation's median (layers)")
    a = ap.parse_args(argv)
    with open(a.json) as f:
        data = json.load(f)
    benches = data["benchmarks"]
    print(f"<!-- {data.get('datetime', '')} -->")
    mine = data.get("dcrt", {})
    print(f"CPU: {mine.get('cpu') or data.get('machine_info', {}).get('cpu', {}).get('brand_raw', 'not recorded')}")
    missing = {k: v for k, v in mine.get("peers", {}).items() if v != "ok"}
    if missing:
        print("Peers that did not run (the best peer below is the best of the others): "
              + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    print()
    layers = [b for b in benches if "layer" in b["extra_info"]]
    nets = [b for b in benches if "arch" in b["extra_info"]]
    huff = [b for b in benches if "source" in b["extra_info"]]
    for i, (part, fn) in enumerate(((layers, lambda p: print_layers(layer_rows(p), a.all)),
                                    (nets, print_networks), (huff, print_huffman))):
        if part:
            fn(part)
            print()


if __name__ == "__main__":
    main()
