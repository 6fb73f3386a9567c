"""A bounded slice of the sanitizer-built, coverage-guided loader fuzzer (fuzz/README.md).

Needs clang with its sanitizer runtimes; skips where there is none, except in CI
(DCRT_REQUIRE_FUZZ=1, set by .ci/run), where a missing toolchain fails. The slice lasts
DCRT_FUZZ_SECONDS (default 30; CI: 120)."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clang():
    return shutil.which("clang++-14") or shutil.which("clang++")


@pytest.mark.fuzz
def test_sanitizer_fuzzer_slice_finds_nothing(tmp_path):
    if not _clang():
        if os.environ.get("DCRT_REQUIRE_FUZZ"):
            pytest.fail("DCRT_REQUIRE_FUZZ=1 but no clang++ (apt-get install clang-14 libclang-rt-14-dev)")
        pytest.skip("no clang++: the sanitizer fuzzer cannot be built here")
    seconds = int(os.environ.get("DCRT_FUZZ_SECONDS", "30"))
    env = dict(os.environ, DCRT_FUZZ_CORPUS=str(tmp_path / "corpus"), DCRT_FUZZ_ARTIFACTS=str(tmp_path / "artifacts"))
    proc = subprocess.run([os.path.join(ROOT, "fuzz", "run.sh"), f"-max_total_time={seconds}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=seconds + 600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"the fuzzer found something (rc={proc.returncode}):\n{tail}"
    assert not os.listdir(tmp_path / "artifacts"), tail
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", proc.stderr).group(1))
    print(f"fuzzer: {runs} executions in {seconds} s, no finding")
    assert runs > 20 * seconds  # it really ran (~3,000/s on this machine kind)
