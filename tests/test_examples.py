"""The examples run (on a small subset): examples/resnet_fashion.py, Deep Compression in a user's
own PyTorch loop, from training to accuracy measured by the native runtime."""
import importlib.util
import os

import pytest

from conftest import require_dataset

torch = pytest.importorskip("torch", reason="the example needs torch")
pytest.importorskip("transformers", reason="the example uses transformers' ResNet definition")
pytestmark = pytest.mark.torch

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", "examples", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resnet_fashion_example_end_to_end(tmp_path):
    require_dataset("fashion-mnist")
    ex = load_example("resnet_fashion")
    s = ex.main(["--out", str(tmp_path / "r.dcz"), "--json", str(tmp_path / "r.json"), "--width", "8",
                 "--subset", "1200", "--epochs", "3", "--batch", "32", "--prune-steps", "2", "--retrain-epochs", "1",
                 "--finetune-epochs", "1", "--density", "0.2", "--bits", "5"])
    assert [r["stage"] for r in s["stages"]] == ["baseline", "prune1", "prune2", "quantize", "finetune"]
    assert s["stages"][0]["test"] > 50  # learned something from 1,200 images
    # the .dcz holds exactly the fine-tuned network: the runtime's accuracy is torch's
    assert abs(s["native_test"] - s["stages"][-1]["test"]) <= 0.2
    assert s["dcz_bytes"] == (tmp_path / "r.dcz").stat().st_size and s["ratio"] > 10
    assert (tmp_path / "r.json").exists()


def test_resnet_fashion_example_reuses_a_saved_baseline(tmp_path):
    """--baseline-state: the first run trains and saves the baseline, the second loads it, and the
    compression stages (their own random stream) then give the same network."""
    require_dataset("fashion-mnist")
    ex = load_example("resnet_fashion")
    state = tmp_path / "baseline.pt"
    common = ["--width", "8", "--subset", "300", "--epochs", "1", "--batch", "32", "--prune-steps", "1",
              "--retrain-epochs", "1", "--finetune-epochs", "1", "--density", "0.3", "--baseline-state", str(state)]
    first = ex.main(["--out", str(tmp_path / "a.dcz")] + common)
    assert state.exists() and not (tmp_path / "baseline.pt.partial").exists()
    second = ex.main(["--out", str(tmp_path / "b.dcz")] + common)
    assert second["stages"][0]["test"] == first["stages"][0]["test"]
    assert second["native_test"] == first["native_test"]
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()
