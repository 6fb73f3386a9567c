"""The paper's four networks at their true (Caffe) shapes, plus its per-layer
compression settings (Tables 2-5 of Han et al., ICLR 2016).
"""
from __future__ import annotations


from .nn import (LRN, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Softmax, he_init)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lenet_300_100(seed: int = 0) -> Sequential:
    m = Sequential([Linear(784, 300, "ip1"), ReLU("relu1"), Linear(300, 100, "ip2"), ReLU("relu2"),
                    Linear(100, 10, "ip3"), Softmax("prob")], input_shape=(784,), name="lenet-300-100")
    return he_init(m, seed)


def lenet5(seed: int = 0) -> Sequential:
    """Caffe's LeNet (20-50-500): conv 5x5 ×20, pool, conv 5x5 ×50, pool, ip 500, ip 10."""
    m = Sequential([
        Conv2d(1, 20, 5, name="conv1"), MaxPool2d(2, 2, name="pool1"),
        Conv2d(20, 50, 5, name="conv2"), MaxPool2d(2, 2, name="pool2"),
        Flatten("flatten"), Linear(800, 500, "ip1"), ReLU("relu1"), Linear(500, 10, "ip2"), Softmax("prob"),
    ], input_shape=(1, 28, 28), name="lenet-5")
    return he_init(m, seed)


def alexnet(seed: int = 0) -> Sequential:
    """Caffe's BVLC AlexNet: 227x227 input, LRN, grouped conv2/4/5, ceil-mode pooling."""
    m = Sequential([
        Conv2d(3, 96, 11, stride=4, name="conv1"), ReLU("relu1"), LRN(5, 1e-4, 0.75, name="norm1"),
        MaxPool2d(3, 2, name="pool1"),
        Conv2d(96, 256, 5, padding=2, groups=2, name="conv2"), ReLU("relu2"), LRN(5, 1e-4, 0.75, name="norm2"),
        MaxPool2d(3, 2, name="pool2"),
        Conv2d(256, 384, 3, padding=1, name="conv3"), ReLU("relu3"),
        Conv2d(384, 384, 3, padding=1, groups=2, name="conv4"), ReLU("relu4"),
        Conv2d(384, 256, 3, padding=1, groups=2, name="conv5"), ReLU("relu5"), MaxPool2d(3, 2, name="pool5"),
        Flatten("flatten"),
        Linear(9216, 4096, "fc6"), ReLU("relu6"), Dropout(0.5, "drop6"),
        Linear(4096, 4096, "fc7"), ReLU("relu7"), Dropout(0.5, "drop7"),
        Linear(4096, 1000, "fc8"), Softmax("prob"),
    ], input_shape=(3, 227, 227), name="alexnet", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return he_init(m, seed)


def vgg16(seed: int = 0) -> Sequential:
    layers, c = [], 3
    for block, (n, width) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, n + 1):
            layers += [Conv2d(c, width, 3, padding=1, name=f"conv{block}_{i}"), ReLU(f"relu{block}_{i}")]
            c = width
        layers.append(MaxPool2d(2, 2, name=f"pool{block}"))
    layers += [Flatten("flatten"),
               Linear(25088, 4096, "fc6"), ReLU("relu6"), Dropout(0.5, "drop6"),
               Linear(4096, 4096, "fc7"), ReLU("relu7"), Dropout(0.5, "drop7"),
               Linear(4096, 1000, "fc8"), Softmax("prob")]
    m = Sequential(layers, input_shape=(3, 224, 224), name="vgg16", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return he_init(m, seed)


ARCHITECTURES = {"lenet-300-100": lenet_300_100, "lenet-5": lenet5, "alexnet": alexnet, "vgg16": vgg16}

#: The paper's per-layer settings: density after pruning (Weights% (P)), weight bits
#: (P+Q) and relative-index bits, Tables 2-5.
PAPER = {
    "lenet-300-100": {
        "density": {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26},
        "bits": {"ip1": 6, "ip2": 6, "ip3": 6}, "index_bits": 5},
    "lenet-5": {
        "density": {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19},
        "bits": {"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5}, "index_bits": 5},
    "alexnet": {
        "density": {"conv1": 0.84, "conv2": 0.38, "conv3": 0.35, "conv4": 0.37, "conv5": 0.37,
                    "fc6": 0.09, "fc7": 0.09, "fc8": 0.25},
        "bits": {"conv1": 8, "conv2": 8, "conv3": 8, "conv4": 8, "conv5": 8, "fc6": 5, "fc7": 5, "fc8": 5},
        "index_bits": 4},
    "vgg16": {
        "density": {"conv1_1": 0.58, "conv1_2": 0.22, "conv2_1": 0.34, "conv2_2": 0.36, "conv3_1": 0.53,
                    "conv3_2": 0.24, "conv3_3": 0.42, "conv4_1": 0.32, "conv4_2": 0.27, "conv4_3": 0.34,
                    "conv5_1": 0.35, "conv5_2": 0.29, "conv5_3": 0.36, "fc6": 0.04, "fc7": 0.04, "fc8": 0.23},
        "bits": {**{f"conv{b}_{i}": 8 for b, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)] for i in range(1, n + 1)},
                 "fc6": 5, "fc7": 5, "fc8": 5},
        "index_bits": 5},
}


def build(arch: str, seed: int = 0, weights: str | None = None) -> Sequential:
    """Build a zoo network by name, optionally loading parameters from an npz file."""
    try:
        ctor = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}") from None
    m = ctor(seed)
    if weights is not None:
        m.load_npz(weights)
    return m
