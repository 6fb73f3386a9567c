"""PyTorch front end (issue 13): torch.export -> dcrt graph, batch norms folded, per-layer
options by module path, clear errors for what dcrt cannot run, and real architectures
(transformers' ResNet-18 and MobileNetV2) imported losslessly and compressed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch front end needs torch (pip install 'dcrt[torch]')")
nn = torch.nn
F = torch.nn.functional

import dcrt  # noqa: E402
from dcrt.frontends.torch import UnsupportedModelError  # noqa: E402

pytestmark = pytest.mark.torch


def randomize_bn(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.6 - 0.3)
    return m


class Block(nn.Module):
    """Every op the front end maps, in the shapes real CNNs use them."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)  # not after a conv: becomes a scale_shift
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.proj = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(24, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 16)
        self.bn_fc = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(self.bn_in(x))
        y = F.hardswish(self.dw(F.pad(x, (0, 0, 0, 0))))
        s = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        y = y * s + self.proj(x)
        y = torch.cat([F.silu(y), F.max_pool2d(x, 3, 1, 1), F.avg_pool2d(F.pad(x, (1, 0, 0, 1)), 2, 1)], dim=1)
        y = torch.tanh(self.down(F.gelu(y)))
        y = F.avg_pool2d(y, 2)
        y = F.dropout(torch.flatten(y, 1), 0.3, self.training)
        return F.softmax(self.head(F.relu(self.bn_fc(self.fc(y)))), dim=1)


def test_every_mapped_op_lossless_and_compressed(tmp_path):
    torch.manual_seed(0)
    m = randomize_bn(Block()).eval()
    x = torch.rand(3, 3, 8, 8)
    p = tmp_path / "b.dcz"
    dcrt.compress(m, p, example_input=x[:1], storage="plain", progress=False)
    with torch.no_grad():
        want = m(x).numpy()
    for threads in (1, 2):
        np.testing.assert_allclose(dcrt.load(p, threads=threads).infer(x.numpy()), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dcrt.decompress(p).forward(x.numpy()), want, rtol=1e-4, atol=1e-6)
    names = [L.name for L in dcrt.format.read(p).layers]
    assert "stem.0" in names and "head" in names and any(n.endswith(".scale_shift") for n in names)
    assert not any("bn_fc" in n for n in names) and not any(n.startswith("stem.1") for n in names)  # folded
    q = tmp_path / "c.dcz"
    dcrt.compress(m, q, example_input=x[:1], density={"stem.0": 0.5, "down": 0.4, "fc": 0.3}, bits=6,
                  progress=False)
    f = dcrt.format.read(q)
    by = {L.name: L for L in f.layers}
    assert by["fc"].storage == "sparse" and abs(by["fc"].nnz / (by["fc"].rows * by["fc"].cols) - 0.3) < 0.02
    np.testing.assert_allclose(dcrt.load(q).infer(x.numpy()), dcrt.decompress(q).forward(x.numpy()),
                               rtol=1e-4, atol=1e-5)


def test_unknown_layer_name_is_an_error(tmp_path):
    m = Block().eval()
    with pytest.raises(ValueError, match=r"density: \['nope'\] name no layer of 'Block'; its layers are"):
        dcrt.compress(m, tmp_path / "x.dcz", example_input=torch.rand(1, 3, 8, 8), density={"nope": 0.1},
                      progress=False)
    assert not list(tmp_path.iterdir())


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.c(x).transpose(2, 3)  # the line the error must point at


def test_unsupported_op_names_op_node_and_source_line(tmp_path):
    with pytest.raises(UnsupportedModelError) as ei:
        dcrt.compress(Unsupported(), tmp_path / "x.dcz", example_input=torch.rand(1, 3, 8, 8), progress=False)
    msg = str(ei.value)
    assert "aten.transpose" in msg and "node 'transpose'" in msg
    assert "test_torch_import.py" in msg and "transpose(2, 3)" in msg
    assert not list(tmp_path.iterdir())


def test_module_needs_example_input(tmp_path):
    with pytest.raises(ValueError, match="example_input"):
        dcrt.compress(Block(), tmp_path / "x.dcz")


def _transformers_models():
    tr = pytest.importorskip("transformers", reason="needs transformers' model definitions")
    torch.manual_seed(0)
    # ResNet-18's widths (ResNetConfig's defaults are ResNet-50's, 4x wider)
    resnet = tr.ResNetForImageClassification(tr.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                                                              hidden_sizes=[64, 128, 256, 512]))
    mobilenet = tr.MobileNetV2ForImageClassification(tr.MobileNetV2Config())
    return {"resnet18": randomize_bn(resnet, 1).eval(), "mobilenet_v2": randomize_bn(mobilenet, 2).eval()}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_transformers_model_lossless_and_compressed(tmp_path, arch):
    m = _transformers_models()[arch]
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = m(x).logits.numpy()
    p = tmp_path / "plain.dcz"
    dcrt.compress(m, p, example_input=x[:1], storage="plain", progress=False)
    got = dcrt.load(p).infer(x.numpy())
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()
    q = tmp_path / "c.dcz"
    dcrt.compress(m, q, example_input=x[:1], density=0.3, bits=6, progress=False)
    assert q.stat().st_size < p.stat().st_size / 8
    ref = dcrt.decompress(q).forward(x.numpy())
    np.testing.assert_allclose(dcrt.load(q).infer(x.numpy()), ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


class Dilated(nn.Module):
    """DeepLab-style atrous convs (dilation 2 and (1, 3), padding="same"), a dilated depthwise one."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(6, 6, 3, padding="same", dilation=(1, 3))
        self.dw = nn.Conv2d(6, 6, 3, stride=2, padding=1, dilation=2, groups=6)

    def forward(self, x):
        return self.dw(F.relu(self.b(F.relu(self.a(x)))))


def test_dilated_convs_lossless_and_compressed(tmp_path):
    torch.manual_seed(0)
    m = Dilated().eval()
    x = torch.rand(2, 3, 13, 15)
    p = tmp_path / "d.dcz"
    dcrt.compress(m, p, example_input=x[:1], storage="plain", progress=False)
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(dcrt.load(p).infer(x.numpy()), want, rtol=1e-4, atol=1e-6)
    ops = [o for o in dcrt.format.read(p).graph.ops if o.type == "conv2d"]
    assert [o.params["dilation"] for o in ops] == [(2, 2), (1, 3), (2, 2)]
    q = tmp_path / "c.dcz"
    dcrt.compress(m, q, example_input=x[:1], density=0.5, bits=6, progress=False)
    np.testing.assert_allclose(dcrt.load(q).infer(x.numpy()), dcrt.decompress(q).forward(x.numpy()),
                               rtol=1e-4, atol=1e-5)


class Constants(nn.Module):
    """Arithmetic with constants: the in-model normalisation (x - mean) / std, a learned per-channel
    scale, 1 - x, x * 0.5 on a 1-D tensor after a linear layer (folded), an add of a scalar."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        x = (x - self.mean) / self.std
        y = F.relu(self.c(x))
        y = (1 - y) * self.gamma + 0.25
        return self.fc(torch.flatten(y, 1)) * 0.5


def test_constant_operands_become_affines_or_fold(tmp_path):
    torch.manual_seed(0)
    m = Constants().eval()
    x = torch.rand(2, 3, 6, 6)
    p = tmp_path / "k.dcz"
    dcrt.compress(m, p, example_input=x[:1], storage="plain", progress=False)
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(dcrt.load(p).infer(x.numpy()), want, rtol=1e-4, atol=1e-5)
    names = [L.name for L in dcrt.format.read(p).layers]
    # sub/div on the input: two scale_shift layers; the *0.5 after fc folds into it
    assert names[-1] == "fc" and sum(n.endswith(".scale_shift") for n in names) >= 2


class NotPerChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("ramp", torch.arange(6.0).view(1, 1, 6, 1))

    def forward(self, x):
        return x + self.ramp  # varies along H: not one value per channel


def test_constant_that_is_not_per_channel_is_an_error(tmp_path):
    with pytest.raises(UnsupportedModelError, match="not a scalar or one value per channel"):
        dcrt.compress(NotPerChannel(), tmp_path / "x.dcz", example_input=torch.rand(1, 3, 6, 6), progress=False)
