"""dcrt.torch (issue 14): Deep Compression's stages on any nn.Module inside the user's own
training loop -- masks held at zero through any optimizer, shared centroids that learn by the
paper's equation 3, and a .dcz that holds exactly the trained masks, codes and centroids."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="dcrt.torch needs torch (pip install 'dcrt[torch]')")
nn = torch.nn
F = torch.nn.functional

import dcrt  # noqa: E402
import dcrt.torch as dt  # noqa: E402
from dcrt.train import centroid_grads  # noqa: E402

pytestmark = pytest.mark.torch


class Net(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)) + x, 2)
        return self.fc(torch.flatten(x, 1))


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def train(net, steps, opt):
    x, y = data()
    for i in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x[i % 4 * 16:(i % 4 + 1) * 16]), y[i % 4 * 16:(i % 4 + 1) * 16]).backward()
        opt.step()


def test_prune_exact_density_and_held_at_zero_through_optimizers():
    torch.manual_seed(0)
    net = Net()
    got = dt.prune(net, density={"conv1": 0.5, "conv2": 0.25, "fc": 0.1})
    assert got == pytest.approx({"conv1": 0.5, "conv2": 0.25, "fc": 0.1}, abs=1 / 72)
    masks = {n: (m.weight == 0).clone() for n, m in dt.named_layers(net).items()}
    for opt in (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
                torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-3)):
        train(net, 20, opt)
        for n, m in dt.named_layers(net).items():
            assert torch.all(m.weight[masks[n]] == 0), n
    # Again: prunes further, among the survivors
    dt.prune(net, density=0.05, layers=["fc"])
    w = net.fc.weight
    assert abs((w != 0).float().mean().item() - 0.05) < 1 / w.numel() + 1e-9
    assert torch.all(w[masks["fc"]] == 0)
    with pytest.raises(ValueError, match="above its current density"):
        dt.prune(net, density=0.5, layers=["fc"])
    with pytest.raises(ValueError, match=r"\['nope'\] name no Conv2d/Linear layer"):
        dt.prune(net, density=0.5, layers=["nope"])


def test_prune_quality_is_the_papers_threshold():
    torch.manual_seed(1)
    net = Net()
    w = net.fc.weight.detach().numpy().copy()
    dt.prune(net, quality=0.7, layers=["fc"])
    np.testing.assert_array_equal(net.fc.weight.detach().numpy() != 0, np.abs(w) > 0.7 * w.std())


def test_schedule():
    s = dt.schedule(0.1, 3)
    assert len(s) == 3 and s[-1] == 0.1 and s[0] > s[1] > s[2]
    assert s[1] / s[0] == pytest.approx(s[2] / s[1])
    with pytest.raises(ValueError):
        dt.schedule(0.0, 3)


def test_quantized_weight_is_codebook_of_codes_and_centroid_grads_are_eq3():
    torch.manual_seed(2)
    net = Net()
    dt.prune(net, density=0.4)
    dt.quantize(net, bits={"conv1": 3, "conv2": 4, "fc": 5})
    st = dt.state(net)
    for n, m in dt.named_layers(net).items():
        s = st[n]
        np.testing.assert_array_equal(m.weight.detach().numpy(), s.codebook[s.codes])
        assert s.bits == {"conv1": 3, "conv2": 4, "fc": 5}[n] and np.all((s.codes == 0) == ~s.mask)
    # Equation 3: each centroid's gradient is the sum of its weights' gradients
    x, y = data(16)
    plain = dt.strip(net)
    F.cross_entropy(net(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    for n, m in dt.named_layers(net).items():
        p = m.parametrizations.weight[0]
        want = centroid_grads(dt.named_layers(plain)[n].weight.grad.numpy(), st[n].codes, 1 << st[n].bits)
        np.testing.assert_allclose(p.centroids.grad.numpy(), want[1:], rtol=1e-4, atol=1e-6)
        assert m.parametrizations.weight.original.grad is None  # only the centroids learn


def test_fine_tuned_module_is_written_exactly(tmp_path):
    torch.manual_seed(3)
    net = Net()
    dt.prune(net, density=0.3)
    train(net, 10, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    dt.quantize(net, bits={"conv1": 4, "conv2": 4})  # fc: pruned, clustered by compress itself
    train(net, 10, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    net.eval()
    x = data(8, seed=5)[0]
    p = tmp_path / "n.dcz"
    dcrt.compress(net, p, example_input=x[:1], bits={"fc": 5}, storage="sparse", progress=False)
    ref = dcrt.decompress(p)
    layers = {n.layer.name: n.layer for n in ref.nodes if n.layer is not None}
    for n, m in dt.named_layers(net).items():
        if n != "fc":
            np.testing.assert_array_equal(layers[n].weight, m.weight.detach().numpy(), err_msg=n)
    fc = dcrt.format.read(p).layers[-1]
    assert fc.nnz == int((net.fc.weight != 0).sum())  # the trained mask, not a new one
    np.testing.assert_allclose(dcrt.load(p).infer(x.numpy()), ref.forward(x.numpy()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="quantized with dcrt.torch"):
        dcrt.compress(net, tmp_path / "x.dcz", example_input=x[:1], bits=6, progress=False)
    assert not (tmp_path / "x.dcz").exists()


def test_strip_gives_a_plain_module_with_the_same_outputs():
    torch.manual_seed(4)
    net = Net()
    dt.prune(net, density=0.5)
    dt.quantize(net, bits=4, layers=["conv2"])
    plain = dt.strip(net)
    x = data(4)[0]
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net(x), rtol=0, atol=0)
    assert not dt.state(plain) and dt.state(net)
    assert all(type(p) is nn.Parameter for p in plain.parameters())


def test_batch_norm_folded_first_or_kept_after_a_quantized_layer(tmp_path):
    torch.manual_seed(5)
    net = Net(bn=True)
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
    net.eval()
    x = data(4)[0]
    # Quantized without folding: the batch norm stays an op of its own (a scale_shift after the
    # conv), the conv's codes and centroids are written as trained, and the file runs the module.
    kept = dt.strip(net)
    dt.prune(kept, density=0.5)
    dt.quantize(kept, bits=4)
    kp = tmp_path / "kept.dcz"
    dcrt.compress(kept, kp, example_input=x[:1], progress=False)
    st = dt.state(kept)["conv1"]
    np.testing.assert_array_equal(dcrt.decompress(kp)["conv1"].weight, st.codebook[st.codes])
    assert any(L["name"].endswith("scale_shift") and L["storage"] == "plain" for L in dcrt.load(kp).layers())
    with torch.no_grad():
        np.testing.assert_allclose(dcrt.load(kp).infer(x.numpy()), dt.strip(kept)(x).numpy(), rtol=1e-4, atol=1e-5)
    dt.prune(net, density=0.5)  # folding after pruning keeps the masks
    masks = {n: s.mask for n, s in dt.state(net).items()}
    with torch.no_grad():
        want = net(x)
    assert dt.fold_batchnorm(net, x[:1]) == [("conv1", "bn1")]
    assert isinstance(net.bn1, nn.Identity)
    assert all(np.array_equal(s.mask, masks[n]) for n, s in dt.state(net).items())
    with torch.no_grad():
        torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)
    dt.quantize(net, bits=8)
    with pytest.raises(ValueError, match="before quantizing"):
        dt.fold_batchnorm(net, x[:1])
    net = dt.strip(net)  # start again from the folded, pruned weights
    dt.quantize(net, bits=4)
    p = tmp_path / "ok.dcz"
    dcrt.compress(net, p, example_input=x[:1], progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(dcrt.load(p).infer(x.numpy()), dt.strip(net)(x).numpy(), rtol=1e-4, atol=1e-5)
