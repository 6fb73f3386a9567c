"""Deep Compression inside your own PyTorch training loop (``import dcrt.torch``).

The stages modify the module in place and leave the training to you (the habit of
torch.ao.pruning and NNCF: "we modify your model, you keep your loop"):

    import dcrt, dcrt.torch as dt
    dt.fold_batchnorm(net, x)                 # optional: batch norms into their convs, first
    dt.prune(net, density=0.1)                # magnitude masks (torch.nn.utils.prune)
    ...train...                               # pruned weights stay exactly zero
    dt.prune(net, density=0.05)               # prune further (dt.schedule(0.05, steps=3))
    ...train...
    dt.quantize(net, bits=5)                  # k-means per layer: weight = centroids[codes]
    ...train...                               # only the shared centroids learn (the paper's eq. 3)
    dcrt.compress(net, "net.dcz", example_input=x)   # writes exactly these masks/codes/centroids
    plain = dt.strip(net)                     # a plain module with the effective weights

Pruning uses ``torch.nn.utils.prune`` (the mask is a buffer, the effective weight
``weight_orig * weight_mask`` is recomputed before every forward, so no optimizer, weight decay
or momentum can revive a pruned weight). Quantization uses ``torch.nn.utils.parametrize``: the
weight *is* ``cat([0], centroids)[codes]`` with ``centroids`` a trainable parameter and ``codes``
a fixed buffer (0 = pruned), so autograd gives each centroid the sum of its weights' gradients.
The k-means is the compressor's own (:func:`dcrt.compressor.quantize_layer`), so numpy and torch
paths cluster alike. Layers are the ``nn.Conv2d`` and ``nn.Linear`` submodules, named by their
qualified module path (``"layer1.0.conv1"``), the keys of per-layer dicts.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as tprune

from . import compressor as _c

__all__ = ["named_layers", "prune", "schedule", "quantize", "strip", "fold_batchnorm", "state", "LayerState"]


def named_layers(module: nn.Module, names=None) -> dict:
    """{qualified name: module} of the weighted layers (Conv2d, Linear) of ``module``, or of those
    named in ``names`` (a KeyError-free check: an unknown name is a ValueError listing the real ones)."""
    found = {n: m for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if names is None:
        return found
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"{unknown[:5]} name no Conv2d/Linear layer of {type(module).__name__}; its layers are "
                         f"{list(found)[:8]}{' ...' if len(found) > 8 else ''}")
    return {n: found[n] for n in names}


def _per_layer(value, name):
    return value.get(name) if isinstance(value, dict) else value


def _check_keys(value, names, what):
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what}: {unknown[:5]} name no layer; the layers are {list(names)[:8]}")


def _is_quantized(m) -> bool:
    return parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], _Shared)


def _weight(m) -> torch.Tensor:
    """The effective weight (mask or codebook applied), detached."""
    return m.weight.detach()


@torch.no_grad()
def prune(module: nn.Module, density=None, quality=None, layers=None) -> dict:
    """Magnitude pruning: per layer keep the ``density`` fraction of largest |w| (or, with
    ``quality``, |w| > quality * std(w), the paper's threshold). One value for every layer or a
    dict by layer name (a layer missing from the dict is left as it is); ``layers``: restrict to
    these names. Calling it again prunes further: the new mask is taken on the surviving weights
    and combined with the old one. Returns {name: density now}."""
    if (density is None) == (quality is None):
        raise ValueError("prune: give density= or quality= (one of them)")
    mods = named_layers(module, layers)
    _check_keys(density if density is not None else quality, list(mods), "prune")
    out = {}
    for name, m in mods.items():
        if _is_quantized(m):
            raise ValueError(f"prune: {name} is already quantized (prune before dcrt.torch.quantize)")
        d, q = _per_layer(density, name), _per_layer(quality, name)
        if d is None and q is None:
            continue
        w = _weight(m).cpu().numpy()
        if d is not None:
            d = float(d)
            cur = np.count_nonzero(w) / w.size
            if d > cur + 1e-12:
                raise ValueError(f"prune: {name}: density {d} is above its current density {cur:.4f} (pruning only "
                                 "removes weights)")
            mask = _c.prune_density(w, d)
        else:
            mask = _c.prune_threshold(w, float(q)) & (w != 0)
        tprune.custom_from_mask(m, "weight", torch.from_numpy(mask).to(m.weight.device))
        out[name] = float(mask.mean())
    return out


def schedule(final_density: float, steps: int, start: float = 1.0) -> list:
    """Densities for iterative pruning to ``final_density`` in ``steps`` rounds, each removing the
    same fraction of what survives (geometric: the paper's prune-retrain iterations):
    ``[start * r, start * r^2, ..., final_density]``."""
    if not 0.0 < final_density <= start <= 1.0:
        raise ValueError(f"schedule: need 0 < final_density <= start <= 1, got {final_density}, {start}")
    if steps < 1:
        raise ValueError("schedule: steps must be >= 1")
    r = (final_density / start) ** (1.0 / steps)
    out = [start * r ** (i + 1) for i in range(steps)]
    out[-1] = final_density
    return out


class _Shared(nn.Module):
    """The parametrization of a quantized weight: cat([0], centroids)[codes]."""

    def __init__(self, codebook: np.ndarray, codes: np.ndarray, shape):
        super().__init__()
        self.centroids = nn.Parameter(torch.from_numpy(np.ascontiguousarray(codebook[1:], np.float32)))
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int64)).reshape(shape))
        self.bits = int(round(math.log2(len(codebook))))

    def forward(self, original):
        zero = torch.zeros(1, dtype=self.centroids.dtype, device=self.centroids.device)
        return torch.cat([zero, self.centroids])[self.codes]


@torch.no_grad()
def quantize(module: nn.Module, bits=5, init: str = "linear", layers=None, seed: int = 0) -> dict:
    """Weight sharing per layer: 1-D k-means on the surviving (non-zero) weights with
    2^bits - 1 centroids (``init``: "linear", "density" or "random", the paper's three), after
    which the layer's weight is ``centroids[codes]``: the centroids are trainable parameters, the
    codes are fixed (0: pruned, exactly zero). ``bits``: one value or a dict by layer name.
    Returns {name: bits}. Pruning masks are made permanent first."""
    mods = named_layers(module, layers)
    _check_keys(bits, list(mods), "quantize")
    out = {}
    for name, m in mods.items():
        b = _per_layer(bits, name)
        if b is None:
            continue
        if _is_quantized(m):
            raise ValueError(f"quantize: {name} is already quantized")
        if tprune.is_pruned(m):
            tprune.remove(m, "weight")
        w = m.weight.detach().cpu().numpy()
        mask = w != 0
        q = _c.quantize_layer(w, mask, int(b), init, seed)
        par = _Shared(q.codebook, q.codes, w.shape).to(m.weight.device)
        parametrize.register_parametrization(m, "weight", par, unsafe=True)
        m.parametrizations.weight.original.requires_grad_(False)
        out[name] = int(b)
    return out


class LayerState:
    """What dcrt.torch did to one layer: the mask (bool, weight-shaped), and where quantized the
    codebook (float32 [2^bits], [0] = 0) and codes (uint8, weight-shaped, 0 = pruned)."""

    def __init__(self, mask, codebook=None, codes=None):
        self.mask, self.codebook, self.codes = mask, codebook, codes

    @property
    def bits(self):
        return None if self.codebook is None else int(round(math.log2(len(self.codebook))))


@torch.no_grad()
def state(module: nn.Module) -> dict:
    """{name: LayerState} of the layers dcrt.torch pruned or quantized (the others are absent)."""
    out = {}
    for name, m in named_layers(module).items():
        if _is_quantized(m):
            p = m.parametrizations.weight[0]
            cb = np.concatenate([[0.0], p.centroids.detach().cpu().numpy()]).astype(np.float32)
            codes = p.codes.cpu().numpy().astype(np.uint8)
            out[name] = LayerState(codes != 0, cb, codes)
        elif tprune.is_pruned(m):
            out[name] = LayerState(m.weight_mask.detach().cpu().numpy().astype(bool))
    return out


@torch.no_grad()
def strip(module: nn.Module, inplace: bool = False) -> nn.Module:
    """A plain module (no masks, no parametrizations) whose weights are the effective ones: for
    evaluating or exporting in torch. A copy unless ``inplace``."""
    for layer in named_layers(module).values():
        if tprune.is_pruned(layer):  # the hook's last product may carry autograd history (no deepcopy)
            setattr(layer, "weight", (layer.weight_orig * layer.weight_mask).detach())
    m = module if inplace else copy.deepcopy(module)
    for _, layer in named_layers(m).items():
        if parametrize.is_parametrized(layer, "weight"):
            if inplace:
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            else:
                # A deep copy shares the original's injected Parametrized* class, from which
                # remove_parametrizations would delete the property (breaking the original):
                # undo the parametrization on the copy's instance only.
                w = layer.weight.detach().clone()
                del layer._modules["parametrizations"]
                layer.__class__ = layer.__class__.__bases__[0]
                layer.weight = nn.Parameter(w)
        if tprune.is_pruned(layer):
            tprune.remove(layer, "weight")
    return m


@torch.no_grad()
def fold_batchnorm(module: nn.Module, example_input) -> list:
    """Fold every batch norm that reads only a Conv2d/Linear output into that layer (eval-mode
    statistics) and replace it with ``nn.Identity``, in place. Do this before quantizing when the
    model has batch norms (before or after pruning: a pruned layer keeps its mask, the scale goes
    into ``weight_orig``): a batch norm folded at export would scale each output channel of a
    quantized layer and break its shared codebook. Returns [(layer, batch norm)] folded."""
    from .graph import batchnorm_affine
    if any(s.codes is not None for s in state(module).values()):
        raise ValueError("fold_batchnorm: fold batch norms before quantizing")
    was = module.training
    module.eval()
    x = torch.as_tensor(np.asarray(example_input, np.float32)) if not isinstance(example_input, torch.Tensor) \
        else example_input
    ep = torch.export.export(strip(module), (x,))  # masks stripped: the weights are parameters
    sig = ep.graph_signature
    fqn = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    users = {n.name: len(n.users) for n in ep.graph.nodes}
    pairs = []
    for node in ep.graph.nodes:
        t = str(node.target)
        if node.op != "call_function" or not ("batch_norm" in t and t.startswith("aten.")):
            continue
        src = node.args[0]
        if getattr(src, "op", None) != "call_function" or str(src.target) not in (
                "aten.conv2d.default", "aten.linear.default") or users.get(src.name, 0) != 1:
            continue
        layer_path = fqn.get(src.args[1].name, "")[:-len(".weight")]
        mean_path = fqn.get(node.args[3].name if len(node.args) > 3 else "", "")
        if not layer_path or not mean_path.endswith(".running_mean"):
            continue
        pairs.append((layer_path, mean_path[:-len(".running_mean")]))
    done = []
    for layer_path, bn_path in pairs:
        layer, bn = module.get_submodule(layer_path), module.get_submodule(bn_path)
        scale, shift = batchnorm_affine(
            bn.weight.detach().cpu().numpy() if bn.weight is not None else np.ones(bn.num_features, np.float32),
            bn.bias.detach().cpu().numpy() if bn.bias is not None else np.zeros(bn.num_features, np.float32),
            bn.running_mean.cpu().numpy(), bn.running_var.cpu().numpy(), bn.eps)
        w = layer.weight_orig if tprune.is_pruned(layer) else layer.weight
        s = torch.from_numpy(scale).to(w)
        w.mul_(s.reshape(-1, *([1] * (w.dim() - 1))))
        b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(s)
        new_b = b * s + torch.from_numpy(shift).to(s)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_b)
        else:
            layer.bias.copy_(new_b)
        parent, _, child = bn_path.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, nn.Identity())
        done.append((layer_path, bn_path))
    module.train(was)
    return done
