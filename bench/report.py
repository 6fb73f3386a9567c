"""Turn a pytest-benchmark JSON of bench/test_layers.py into the ratio table.

    python bench/report.py layers.json [--markdown]

One row per (layer, batch, input): dcrt's median, the best peer's name and median, the ratio
best-peer / dcrt (> 1: dcrt is faster), dcrt's effective GB/s over its compressed bytes, and its
dense-equivalent GFLOP/s (2 * rows * cols * batch / time).
"""
import argparse
import json
from collections import defaultdict


def rows_from(path):
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(dict)
    info = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        key = (e["layer"], e["batch"], e["input"])
        groups[key][e["impl"]] = b["stats"]["median"]
        info[key] = e
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], ["dense", "relu50", "relu18"].index(k[2]))):
        g, e = groups[key], info[key]
        mine = g.get("dcrt")
        others = {k: v for k, v in g.items() if k != "dcrt"}
        best = min(others, key=others.get) if others else None
        out.append({
            "layer": key[0], "batch": key[1], "input": key[2], "dcrt_ms": mine and 1e3 * mine,
            "best_peer": best, "peer_ms": best and 1e3 * others[best],
            "ratio": (others[best] / mine) if (best and mine) else None,
            "gbs": (e["dcz_bytes"] / mine / 1e9) if mine else None,
            "gflops": (e["dense_flops"] / mine / 1e9) if mine else None,
            "all": {k: 1e3 * v for k, v in sorted(g.items(), key=lambda kv: kv[1])},
        })
    return out, data.get("machine_info", {}), data.get("datetime", "")


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--all", action="store_true", help="also list every implementation's median")
    a = ap.parse_args(argv)
    rows, machine, when = rows_from(a.json)
    print(f"<!-- {when} {machine.get('cpu', {}).get('brand_raw', '')} -->")
    print("| layer | batch | input | dcrt ms | best peer | peer ms | peer/dcrt | dcrt GB/s | dense-eq GFLOP/s |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layer']} | {r['batch']} | {r['input']} | {fmt(r['dcrt_ms'], '.3f')} | {r['best_peer'] or '—'} "
              f"| {fmt(r['peer_ms'], '.3f')} | **{fmt(r['ratio'], '.2f')}×** | {fmt(r['gbs'], '.1f')} "
              f"| {fmt(r['gflops'], '.0f')} |")
    if a.all:
        print()
        for r in rows:
            print(f"- {r['layer']} b{r['batch']} {r['input']}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["all"].items()))


if __name__ == "__main__":
    main()
