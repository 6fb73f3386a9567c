"""What every results table starts with: the CPU (model and the flags the kernels dispatch on)."""
from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_vbmi", "avx512_bf16",
         "avx512_fp16", "amx_tile")


def cpu_line() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, flags: {' '.join(have) or 'none of ' + ' '.join(FLAGS)}"
