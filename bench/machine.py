"""What every results table starts with: the CPU (model and the flags the kernels dispatch on)."""
from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi", "avx512_bf16",
         "avx512_fp16", "amx_tile")


def cpu_line() -> str:
    """Model, family/model numbers (a guest's model string may say only "AMD EPYC": family 25
    is Zen 3/4, 26 is Zen 5), L2 per core, logical CPUs and the dispatch flags present."""
    model, flags, fam = platform.processor() or "unknown CPU", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key == "model name" and model in ("unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif key in ("cpu family", "model") and key not in fam:
                    fam[key] = line.split(":", 1)[1].strip()
                elif key == "flags":
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    ident = f" (family {fam['cpu family']} model {fam['model']})" if len(fam) == 2 else ""
    l2 = ""
    try:
        for idx in sorted(os.listdir("/sys/devices/system/cpu/cpu0/cache")):
            base = os.path.join("/sys/devices/system/cpu/cpu0/cache", idx)
            if open(os.path.join(base, "level")).read().strip() == "2":
                l2 = f", L2 {open(os.path.join(base, 'size')).read().strip()}/core"
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags]
    return (f"{model}{ident}{l2}, {os.cpu_count()} logical CPUs, "
            f"flags: {' '.join(have) or 'none of ' + ' '.join(FLAGS)}")
