"""The paper's four networks at their true shapes, seeded, with npz parameters."""
import numpy as np
import pytest

import dcrt
from dcrt import zoo

# #Weights column of the paper's Tables 2-5 (rounded as printed there).
PAPER_WEIGHTS = {
    "lenet-300-100": {"ip1": 235e3, "ip2": 30e3, "ip3": 1e3},
    "lenet-5": {"conv1": 0.5e3, "conv2": 25e3, "ip1": 400e3, "ip2": 5e3},
    "alexnet": {"conv1": 35e3, "conv2": 307e3, "conv3": 885e3, "conv4": 663e3, "conv5": 442e3,
                "fc6": 38e6, "fc7": 17e6, "fc8": 4e6},
    "vgg16": {"conv1_1": 2e3, "conv1_2": 37e3, "conv2_1": 74e3, "conv2_2": 148e3, "conv3_1": 295e3,
              "conv3_2": 590e3, "conv3_3": 590e3, "conv4_1": 1e6, "conv4_2": 2e6, "conv4_3": 2e6,
              "conv5_1": 2e6, "conv5_2": 2e6, "conv5_3": 2e6, "fc6": 103e6, "fc7": 17e6, "fc8": 4e6},
}


@pytest.mark.parametrize("arch", sorted(PAPER_WEIGHTS))
def test_weight_counts_match_the_paper(arch):
    m = zoo.build(arch)
    counts = {l.name: l.weight.size for l in m.weighted()}
    assert list(counts) == list(PAPER_WEIGHTS[arch])
    for name, n in counts.items():
        want = PAPER_WEIGHTS[arch][name]
        assert abs(n - want) <= 0.26 * want, f"{arch}.{name}: {n} vs the paper's {want:.0f}"
    assert set(zoo.PAPER[arch]["density"]) == set(counts) == set(zoo.PAPER[arch]["bits"])


def test_output_shapes():
    assert zoo.lenet_300_100().output_shape == (10,)
    assert zoo.lenet5().shapes()[3] == (50, 4, 4)
    alex = zoo.alexnet().shapes()
    assert alex[0] == (96, 55, 55) and alex[14] == (256, 6, 6) and alex[-1] == (1000,)
    assert zoo.vgg16().shapes()[-3] == (4096,)


def test_seeded_and_npz_roundtrip(tmp_path):
    a, b, c = zoo.lenet5(seed=1), zoo.lenet5(seed=1), zoo.lenet5(seed=2)
    np.testing.assert_array_equal(a["conv2"].weight, b["conv2"].weight)
    assert not np.array_equal(a["conv2"].weight, c["conv2"].weight)
    a.save_npz(tmp_path / "p.npz")
    d = zoo.build("lenet-5", seed=5, weights=str(tmp_path / "p.npz"))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(d.state_dict()[k], v)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(a.forward(x), d.forward(x))


def test_npz_with_wrong_shapes_or_missing_keys(tmp_path):
    m = zoo.lenet_300_100()
    sd = m.state_dict()
    np.savez(tmp_path / "bad.npz", **{**sd, "ip1.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="ip1.weight: shape"):
        zoo.build("lenet-300-100", weights=str(tmp_path / "bad.npz"))
    del sd["ip3.bias"]
    np.savez(tmp_path / "missing.npz", **sd)
    with pytest.raises(ValueError, match="missing parameters.*ip3.bias"):
        zoo.build("lenet-300-100", weights=str(tmp_path / "missing.npz"))


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        zoo.build("resnet")


def test_cli_compress_from_npz(tmp_path):
    m = zoo.lenet_300_100(seed=11)
    m.save_npz(tmp_path / "w.npz")
    from dcrt.cli import main
    assert main(["compress", "lenet-300-100", str(tmp_path / "m.dcz"), "--weights", str(tmp_path / "w.npz"),
                 "--density", "1.0", "--bits", "8", "-q"]) == 0
    dense = dcrt.decompress(tmp_path / "m.dcz")
    x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    # unpruned, 255 centroids: the dequantized network stays close to the original
    np.testing.assert_allclose(dense.forward(x), m.forward(x), atol=0.02)
