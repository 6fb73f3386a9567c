"""The training engine: every layer's gradients against finite differences, masks, the
centroid gradient of equation 3, and a loss that goes down."""
import numpy as np
import pytest

from dcrt import nn
from dcrt.compressor import prune_density, quantize_layer
from dcrt.train import SGD, accuracy, centroid_grads, distillation_loss, fit, softmax_cross_entropy


def separated(rng, shape, span=3.0):
    """Distinct values at least 2*span/size apart, none near 0: central differences with a
    small step never cross a ReLU or max-pool kink."""
    n = int(np.prod(shape))
    v = np.linspace(-span, span, 2 * n + 1)[1::2]
    return rng.permutation(v).reshape(shape).astype(np.float32)


def directional_check(f, x, dx_analytic, rng, eps=1e-3, rtol=3e-2):
    """Compare <grad, v> with a central difference along a random direction v (float32)."""
    for _ in range(3):
        v = rng.uniform(-1, 1, x.shape).astype(np.float32)
        num = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
        ana = float((dx_analytic.astype(np.float64) * v).sum())
        assert abs(num - ana) <= rtol * max(1.0, abs(num), abs(ana)), (num, ana)


LAYERS = [
    ("linear", lambda: nn.Linear(12, 7), (5, 12)),
    ("linear_from_4d", lambda: nn.Linear(2 * 3 * 2, 4), (3, 2, 3, 2)),
    ("conv", lambda: nn.Conv2d(3, 4, 3, stride=1, padding=1), (2, 3, 6, 5)),
    ("conv_strided_grouped", lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2), (2, 4, 7, 6)),
    ("relu", lambda: nn.ReLU(), (4, 9)),
    ("maxpool_ceil_pad", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), (2, 3, 7, 6)),
    ("maxpool_2x2", lambda: nn.MaxPool2d(2, 2), (2, 2, 6, 6)),
    ("avgpool_ceil_pad", lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (2, 3, 7, 6)),
    ("lrn", lambda: nn.LRN(5, 0.5, 0.75, 2.0), (2, 7, 3, 3)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("softmax", lambda: nn.Softmax(), (3, 6)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[l[0] for l in LAYERS])
def test_layer_gradients_match_finite_differences(rng, name, make, shape):
    layer = make()
    if hasattr(layer, "weight"):
        layer.weight = rng.standard_normal(layer.weight.shape).astype(np.float32) * 0.5
        layer.bias = rng.standard_normal(layer.bias.shape).astype(np.float32) * 0.1
    x = separated(rng, shape)
    r = rng.standard_normal(layer.forward(x).shape).astype(np.float32)
    loss = lambda inp: float((layer.forward(inp).astype(np.float64) * r).sum())  # noqa: E731
    layer.forward(x, train=True)
    dx = layer.backward(r)
    assert dx.shape == x.shape
    directional_check(loss, x, dx, rng)
    if hasattr(layer, "weight"):
        grads = dict(layer.grads)
        for pname in ("weight", "bias"):
            p0 = getattr(layer, pname).copy()

            def lp(p, pname=pname):
                setattr(layer, pname, p.astype(np.float32))
                out = loss(x)
                setattr(layer, pname, p0)
                return out
            directional_check(lp, p0, grads[pname], rng)


def test_dropout_train_and_inference(rng):
    d = nn.Dropout(0.5)
    x = np.ones((1000, 10), np.float32)
    np.testing.assert_array_equal(d.forward(x), x)
    y = d.forward(x, train=True)
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), y)  # same mask, same scale


def test_cross_entropy_gradient(rng):
    z = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    loss, d = softmax_cross_entropy(z, y)
    directional_check(lambda zz: softmax_cross_entropy(zz, y)[0], z, d, rng, eps=1e-3)
    assert loss > 0


def test_distillation_gradient_and_fixed_point(rng):
    z = rng.standard_normal((6, 5)).astype(np.float32)
    t = 3 * rng.standard_normal((6, 5)).astype(np.float32)
    for T in (1.0, 4.0):
        loss, d = distillation_loss(z, t, T)
        directional_check(lambda zz: distillation_loss(zz, t, T)[0], z, d, rng, eps=1e-3)
        assert loss > 0
    loss, d = distillation_loss(t, t, 4.0)  # the student that predicts the teacher: no loss, no gradient
    assert abs(loss) < 1e-6 and np.abs(d).max() < 1e-6
    # shifting logits by a constant per row changes no probability
    np.testing.assert_allclose(distillation_loss(z + 7, t, 2.0)[1], distillation_loss(z, t, 2.0)[1], atol=1e-6)


def test_distillation_is_checked(rng):
    m = nn.he_init(nn.Sequential([nn.Linear(4, 3, name="l")], input_shape=(4,)), seed=0)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    with pytest.raises(ValueError, match="one row per training example"):
        fit(m, SGD(m), x, y, 1, progress=False, teacher=np.zeros((7, 3), np.float32), distill=0.5)
    with pytest.raises(ValueError, match=r"distill must be in \[0, 1\]"):
        fit(m, SGD(m), x, y, 1, progress=False, teacher=np.zeros((8, 3), np.float32), distill=1.5)


def test_whole_network_gradient(rng):
    """Chaining through Sequential (normalisation, conv, LRN, pooling, flatten, linear, the
    loss) on smooth layers; the kinked ones are checked one by one above."""
    m = nn.he_init(nn.Sequential([
        nn.Conv2d(2, 4, 3, padding=1, name="c1"), nn.LRN(3, 0.3, 0.75, 1.0, name="n"),
        nn.AvgPool2d(2, 2, name="p"), nn.Conv2d(4, 3, 2, stride=1, groups=1, name="c2"), nn.Flatten("f"),
        nn.Dropout(0.0, "d"), nn.Linear(3 * 3 * 3, 5, "fc"), nn.Softmax("prob"),
    ], input_shape=(2, 8, 8), mean=(0.5, 0.2), std=(0.3, 0.6)), seed=1)
    x = rng.random((3, 2, 8, 8), dtype=np.float32)
    y = np.array([1, 2, 3])
    _, d = softmax_cross_entropy(m.forward(x, train=True, logits=True), y)
    m.backward(d)
    for lname in ("c1", "c2", "fc"):
        g = m[lname].grads["weight"].copy()
        w0 = m[lname].weight.copy()

        def loss(w, lname=lname, w0=w0):
            m[lname].weight = w.astype(np.float32)
            out = softmax_cross_entropy(m.forward(x, logits=True), y)[0]
            m[lname].weight = w0
            return out
        directional_check(loss, w0, g, rng, eps=1e-2)


def test_backward_without_input_grad_matches(rng):
    """Training skips the first weighted layer's input gradient: parameter gradients must be
    those of the full backward, bit for bit."""
    m = nn.he_init(nn.Sequential([
        nn.Conv2d(2, 4, 3, padding=1, name="c1"), nn.ReLU("r"), nn.MaxPool2d(2, 2, name="p"),
        nn.Conv2d(4, 3, 3, stride=2, padding=1, groups=1, name="c2"), nn.Flatten("f"), nn.Linear(12, 5, "fc"),
    ], input_shape=(2, 8, 8)), seed=3)
    x = rng.random((4, 2, 8, 8), dtype=np.float32)
    d = rng.standard_normal((4, 5)).astype(np.float32)
    m.forward(x, train=True)
    assert m.backward(d).shape == x.shape
    full = {n: {k: v.copy() for k, v in m[n].grads.items()} for n in ("c1", "c2", "fc")}
    m.forward(x, train=True)
    assert m.backward(d, input_grad=False) is None
    for n in full:
        for k in full[n]:
            np.testing.assert_array_equal(m[n].grads[k], full[n][k])


def toy_data(rng, n=600):
    """Two gaussian blobs per class in 20-D: learnable in a few hundred steps."""
    centers = rng.standard_normal((4, 20)).astype(np.float32) * 2
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.standard_normal((n, 20)).astype(np.float32)
    return x, y


def mlp(seed=0):
    return nn.he_init(nn.Sequential([nn.Linear(20, 32, "fc1"), nn.ReLU("r"), nn.Linear(32, 4, "fc2"),
                                     nn.Softmax("prob")], input_shape=(20,)), seed)


def test_a_few_hundred_steps_reduce_the_loss(rng):
    x, y = toy_data(rng)
    m = mlp()
    hist = fit(m, SGD(m, lr=0.05), x, y, epochs=20, batch_size=32, progress=False)
    assert hist.loss[-1] < 0.3 * hist.loss[0]
    assert accuracy(m, x, y) > 90


def test_masks_hold_pruned_weights_at_exactly_zero(rng):
    x, y = toy_data(rng)
    m = mlp()
    masks = {l.name: prune_density(l.weight, 0.3) for l in m.weighted()}
    fit(m, SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3), x, y, epochs=5, batch_size=32, masks=masks,
        progress=False)
    for l in m.weighted():
        assert (l.weight[~masks[l.name]] == 0).all()
        assert (l.weight[masks[l.name]] != 0).mean() > 0.99


def test_centroid_gradient_is_the_grouped_sum(rng):
    dw = rng.standard_normal((30, 40)).astype(np.float32)
    codes = rng.integers(0, 8, (30, 40)).astype(np.uint8)
    g = centroid_grads(dw, codes, 8)
    for k in range(1, 8):
        assert g[k] == pytest.approx(float(dw[codes == k].sum()), rel=1e-5, abs=1e-5)
    assert g[0] == 0


def test_centroid_finetuning_keeps_codes_and_sparsity(rng):
    x, y = toy_data(rng)
    m = mlp()
    fit(m, SGD(m, lr=0.05), x, y, epochs=5, batch_size=32, progress=False)
    masks = {l.name: prune_density(l.weight, 0.5) for l in m.weighted()}
    quant = {l.name: quantize_layer(l.weight, masks[l.name], 3) for l in m.weighted()}
    before = {k: (q.codes.copy(), q.codebook.copy()) for k, q in quant.items()}
    fit(m, SGD(m, lr=0.01), x, y, epochs=3, batch_size=32, quant=quant, progress=False)
    for l in m.weighted():
        q = quant[l.name]
        np.testing.assert_array_equal(q.codes, before[l.name][0])
        assert q.codebook[0] == 0 and not np.array_equal(q.codebook, before[l.name][1])
        np.testing.assert_array_equal(l.weight, q.codebook[q.codes])
        assert (l.weight[~masks[l.name]] == 0).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow before the check fires
def test_divergence_is_a_clear_error(rng):
    x, y = toy_data(rng)
    m = mlp()
    with pytest.raises(FloatingPointError, match="diverged; lower the learning rate"):
        fit(m, SGD(m, lr=1e4, momentum=0.99), x, y, epochs=5, batch_size=32, progress=False)
