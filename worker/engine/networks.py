"""MC-dropout networks with consistent dropout masks.

Three networks, chosen from the image settings (or named by the user):

* ``mnist_cnn``: the BatchBALD paper's MNIST CNN, for small grey images.
* ``resnet18``: torchvision's ResNet-18 trunk (random init, or a local weights file) with an
  MC-dropout head ``fc -> ReLU -> dropout -> fc``.
* ``FeatureHead``: the same kind of head on a frozen backbone's cached embeddings
  (``efficientnet_lite0``, ``custom`` and ``embeddings``; worker.engine.backbones).

Each network splits into ``trunk`` (the deterministic part before the first dropout, which
MC inference may compute once per item) and ``head`` (everything from the first dropout on).
Dropout is functional: in training it draws per-item masks from an explicit generator; for
consistent MC dropout :meth:`MCDropoutNetwork.sample_masks` draws K masks once and
:meth:`MCDropoutNetwork.forward_mc` applies the same K masks to every item, so an item's K
outputs do not depend on which other items share its batch.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import EMBEDDING_NETWORKS, resolve_network

logger = logging.getLogger(__name__)

RESNET_HIDDEN = 128
# Hidden units of the head on frozen features.
FEATURE_HIDDEN = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

Masks = dict[str, Tensor]
"""Dropout site name -> ``[K, *site_shape]`` keep-masks already scaled by ``1 / (1 - p)``."""


@dataclass(frozen=True)
class NetworkSpec:
    """What the network must fit: classes, channels, side length and optional overrides.

    Attributes:
        num_classes: C, at least 2.
        in_channels: 1 (grey) or 3 (RGB).
        image_size: square side in pixels after the pipeline's resize.
        name: ``"auto"``, ``"mnist_cnn"`` or ``"resnet18"``.
        dropout: dropout probability at every dropout site.
        weights_path: a local ResNet-18 state-dict file; never downloaded.
    """

    num_classes: int
    in_channels: int
    image_size: int
    name: str = "auto"
    dropout: float = 0.5
    weights_path: str | None = None


def resolve_network_name(spec: NetworkSpec) -> str:
    """The concrete network for a spec (core.catalog.resolve_network owns the rule)."""
    return resolve_network(spec.name, channels=spec.in_channels, size=spec.image_size)


def build_network(
    spec: NetworkSpec, *, seed: int | None = None, feature_dim: int | None = None
) -> MCDropoutNetwork:
    """A freshly initialised network for ``spec``.

    Args:
        spec: the network settings.
        seed: when given, initialise the weights from this seed without touching the global
            RNG state; otherwise torch's global RNG initialises them as usual.
        feature_dim: the embedding size, for the networks that learn on embeddings.

    Raises:
        ValueError: invalid spec, or a weights file that does not fit ResNet-18.
    """
    _check_spec(spec)
    name = resolve_network_name(spec)
    if name in EMBEDDING_NETWORKS and feature_dim is None:
        raise ValueError(f"network {name!r} learns on embeddings: give their feature_dim")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        network: MCDropoutNetwork
        if name in EMBEDDING_NETWORKS:
            assert feature_dim is not None
            network = FeatureHead(spec, feature_dim)
        elif name == "mnist_cnn":
            network = MnistCNN(spec)
        else:
            network = ResNet18MCDropout(spec)
    logger.info(
        "built %s: %d parameters, %d classes, %d channels, %d px",
        name,
        sum(p.numel() for p in network.parameters()),
        spec.num_classes,
        spec.in_channels,
        spec.image_size,
    )
    return network


def _check_spec(spec: NetworkSpec) -> None:
    if spec.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {spec.num_classes}")
    if spec.in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {spec.in_channels}")
    if spec.image_size < 4:
        raise ValueError(f"image_size must be >= 4 px, got {spec.image_size}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {spec.dropout}")


def _dropout(x: Tensor, p: float, *, channels: bool, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout with per-item masks drawn from ``generator`` (training only).

    ``channels=True`` drops whole feature maps like ``nn.Dropout2d``.
    """
    if p == 0.0:
        return x
    shape = (x.shape[0], x.shape[1], 1, 1) if channels else x.shape
    keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - p, generator=generator)
    return x * keep / (1 - p)


def _apply_mask(x_K_n_F: Tensor, mask_K_F: Tensor) -> Tensor:
    """Multiplies ``[K, n, F, ...]`` activations by ``[K, F]`` masks, shared by all n items."""
    K, F_ = mask_K_F.shape
    spatial = [1] * (x_K_n_F.dim() - 3)
    return x_K_n_F * mask_K_F.reshape(K, 1, F_, *spatial)


class MCDropoutNetwork(nn.Module, ABC):
    """A classifier with dropout that can run K consistent MC-dropout samples.

    Subclasses define ``trunk`` (deterministic, before the first dropout), the training
    ``head`` and ``head_mc`` (the head under K given masks). Everything is per-instance;
    nothing is stored on the class but constants.
    """

    num_classes: int
    dropout: float
    mean: Tensor  # input normalisation buffers, registered per instance
    std: Tensor
    light_head: bool = False
    """True when the head is cheap next to the trunk, so trunk-once chunks may be larger."""
    input_ndim: int = 4
    """The rank of one batch of inputs: 4 for images ``[n, C, H, W]``, 2 for features."""

    @property
    def input_layout(self) -> str:
        return "[N, channels, H, W]" if self.input_ndim == 4 else "[N, features]"

    @abstractmethod
    def trunk(self, x: Tensor) -> Tensor:
        """Deterministic features before the first dropout site."""

    @abstractmethod
    def head(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Logits from features; dropout (from ``generator``) only in training mode."""

    @abstractmethod
    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """Dropout site name -> the shape of one sample's mask at that site."""

    @abstractmethod
    def head_mc(self, features_K_n: Tensor, masks: Masks) -> Tensor:
        """``[K, n, C]`` logits from features ``[K, n, ...]`` (K copies or K computed)."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.head(self.trunk(x), generator)

    def sample_masks(
        self, num_samples: int, generator: torch.Generator, device: torch.device | None = None
    ) -> Masks:
        """K keep-masks per dropout site, drawn once on the CPU from ``generator``.

        Drawing on the CPU makes the masks, and so the scores, identical on CPU and GPU.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        keep = 1.0 - self.dropout
        masks = {}
        for name, shape in self.mask_shapes().items():
            mask = torch.empty(num_samples, *shape).bernoulli_(keep, generator=generator)
            masks[name] = (mask / keep if keep < 1.0 else mask).to(device)
        return masks

    def head_mc_shared(self, features: Tensor, masks: Masks) -> Tensor:
        """``[K, n, C]`` logits from features ``[n, ...]`` shared by all K samples.

        The default broadcasts the features to K copies; networks override it where the
        structure allows sharing more work.
        """
        K = next(iter(masks.values())).shape[0]
        return self.head_mc(features[None].expand(K, *features.shape), masks)

    def forward_mc(self, x: Tensor, masks: Masks, *, trunk_once: bool = True) -> Tensor:
        """``[K, n, C]`` logits of ``x`` under the K given masks.

        Args:
            x: ``[n, channels, H, W]`` images.
            masks: from :meth:`sample_masks`; the same masks give the same outputs for an
                item whatever else is in the batch.
            trunk_once: compute the deterministic trunk once per item and share it among the
                K samples; ``False`` stacks K copies of the images through the whole network
                (the same numbers up to rounding, K times the trunk compute).
        """
        if trunk_once:
            return self.head_mc_shared(self.trunk(x), masks)
        K = next(iter(masks.values())).shape[0]
        n = x.shape[0]
        stacked = x[None].expand(K, *x.shape).reshape(K * n, *x.shape[1:])
        features = self.trunk(stacked)
        return self.head_mc(features.reshape(K, n, *features.shape[1:]), masks)


class MnistCNN(MCDropoutNetwork):
    """The BatchBALD paper's MNIST CNN, for grey images up to ~32 px.

    conv 1->32 5x5, Dropout2d, maxpool, ReLU; conv 32->64 5x5, Dropout2d, maxpool, ReLU;
    fc ->128, dropout, ReLU; fc 128->C; every dropout p=0.5. Below 16 px the convolutions pad
    by 2 so two poolings still leave a feature map; the flattened size is computed.

    A Dropout2d mask is a non-negative scalar per channel, so it commutes with maxpool and
    ReLU: the trunk is ``relu(maxpool(conv1(x)))`` and the first mask is applied after it,
    which computes exactly the paper's network. Since conv2 is linear, its output under mask
    m is ``sum_c m_c conv2_c(h_c)``: :meth:`head_mc_shared` computes the 32 per-channel
    contributions once per item and mixes them with the K masks in one matrix product,
    instead of running conv2 K times.

    References:
        Kirsch, van Amersfoort & Gal, "BatchBALD", NeurIPS 2019, appendix (MNIST model).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.num_classes = spec.num_classes
        self.dropout = spec.dropout
        self.padding = 0 if spec.image_size >= 16 else 2
        self.conv1 = nn.Conv2d(spec.in_channels, 32, kernel_size=5, padding=self.padding)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=self.padding)
        self.side = _conv_pool_side(_conv_pool_side(spec.image_size, self.padding), self.padding)
        if self.side < 1:
            raise ValueError(f"image_size {spec.image_size} is too small for mnist_cnn")
        self.fc1 = nn.Linear(64 * self.side * self.side, 128)
        self.fc2 = nn.Linear(128, spec.num_classes)
        mean, std = (MNIST_MEAN, MNIST_STD) if spec.in_channels == 1 else (0.5, 0.25)
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def trunk(self, x: Tensor) -> Tensor:
        return F.relu(F.max_pool2d(self.conv1((x - self.mean) / self.std), 2))

    def head(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.dropout if self.training else 0.0
        h = _dropout(features, p, channels=True, generator=generator)
        h = _dropout(self.conv2(h), p, channels=True, generator=generator)
        return self._classify(F.relu(F.max_pool2d(h, 2)).flatten(1), generator)

    def _classify(self, flat: Tensor, generator: torch.Generator | None) -> Tensor:
        p = self.dropout if self.training else 0.0
        return self.fc2(F.relu(_dropout(self.fc1(flat), p, channels=False, generator=generator)))

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"conv1": (32,), "conv2": (64,), "fc1": (128,)}

    def head_mc(self, features_K_n: Tensor, masks: Masks) -> Tensor:
        K, n = features_K_n.shape[:2]
        h = _apply_mask(features_K_n, masks["conv1"]).reshape(K * n, *features_K_n.shape[2:])
        return self._head_mc_after_conv2(self.conv2(h).reshape(K, n, 64, -1), masks)

    def head_mc_shared(self, features: Tensor, masks: Masks) -> Tensor:
        n, channels = features.shape[:2]
        taps = self.conv2.kernel_size[0] * self.conv2.kernel_size[1]
        # im2col, then one [n*L, 25] x [25, 64] product per input channel c.
        cols = F.unfold(features, self.conv2.kernel_size, padding=self.padding)
        L = cols.shape[-1]
        cols_c_nL_t = (
            cols.view(n, channels, taps, L).permute(1, 0, 3, 2).reshape(channels, -1, taps)
        )
        weight_c_t_o = self.conv2.weight.view(64, channels, taps).permute(1, 2, 0)
        parts_c_nLo = torch.bmm(cols_c_nL_t, weight_c_t_o).view(channels, -1)
        mixed_K_nLo = masks["conv1"] @ parts_c_nLo  # sum_c m_kc * conv2_c(h_c)
        K = mixed_K_nLo.shape[0]
        conv2_K_n_o_L = mixed_K_nLo.view(K, n, L, 64).transpose(2, 3)
        assert self.conv2.bias is not None
        conv2_K_n_o_L = conv2_K_n_o_L + self.conv2.bias.view(1, 1, 64, 1)
        return self._head_mc_after_conv2(conv2_K_n_o_L, masks)

    def _head_mc_after_conv2(self, conv2_K_n_o_L: Tensor, masks: Masks) -> Tensor:
        K, n = conv2_K_n_o_L.shape[:2]
        side = math.isqrt(conv2_K_n_o_L.shape[-1])
        h = conv2_K_n_o_L.reshape(K * n, 64, side, side)
        h = F.relu(F.max_pool2d(h, 2)).reshape(K, n, 64, -1)
        h = _apply_mask(h, masks["conv2"]).reshape(K * n, -1)
        h = _apply_mask(self.fc1(h).reshape(K, n, -1), masks["fc1"])
        return self.fc2(F.relu(h))


def _conv_pool_side(side: int, padding: int) -> int:
    return (side + 2 * padding - 4) // 2


class ResNet18MCDropout(MCDropoutNetwork):
    """torchvision ResNet-18 trunk with an MC-dropout head ``fc -> ReLU -> dropout -> fc``.

    Dropout sits only in the head, so MC inference runs the trunk once per item and the small
    head K times. The trunk starts from random weights, or from ``spec.weights_path`` (a local
    state dict; the first convolution is summed over RGB for grey images).
    """

    light_head = True

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.num_classes = spec.num_classes
        self.dropout = spec.dropout
        backbone = torchvision.models.resnet18(weights=None)
        if spec.weights_path is not None:
            _load_resnet_weights(backbone, Path(spec.weights_path))
        if spec.in_channels == 1:
            _make_grey(backbone, pretrained=spec.weights_path is not None)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.fc1 = nn.Linear(512, RESNET_HIDDEN)
        self.fc2 = nn.Linear(RESNET_HIDDEN, spec.num_classes)
        channels = spec.in_channels
        mean = torch.tensor(IMAGENET_MEAN if channels == 3 else [sum(IMAGENET_MEAN) / 3])
        std = torch.tensor(IMAGENET_STD if channels == 3 else [sum(IMAGENET_STD) / 3])
        self.register_buffer("mean", mean[:, None, None], persistent=False)
        self.register_buffer("std", std[:, None, None], persistent=False)

    def trunk(self, x: Tensor) -> Tensor:
        return F.relu(self.fc1(self.backbone((x - self.mean) / self.std)))

    def head(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.dropout if self.training else 0.0
        return self.fc2(_dropout(features, p, channels=False, generator=generator))

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"head": (RESNET_HIDDEN,)}

    def head_mc(self, features_K_n: Tensor, masks: Masks) -> Tensor:
        return self.fc2(_apply_mask(features_K_n, masks["head"]))


class FeatureHead(MCDropoutNetwork):
    """An MC-dropout head on frozen embeddings: ``standardise -> fc -> ReLU -> dropout -> fc``.

    The inputs are a frozen backbone's features ``[n, D]`` (worker.engine.backbones), cached
    once per image, so a round trains only this head: seconds on a CPU. The features are
    standardised with the statistics of the round's whole set (labelled and unlabelled: no
    labels are read), set by :meth:`fit_scaling` before training. Dropout sits after the
    hidden layer, so MC inference runs the first layer once per item and the K masks on the
    hidden units only (as in the ResNet head).
    """

    light_head = True
    input_ndim = 2

    def __init__(self, spec: NetworkSpec, feature_dim: int, hidden: int = FEATURE_HIDDEN) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.num_classes = spec.num_classes
        self.dropout = spec.dropout
        self.feature_dim = feature_dim
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.fc2 = nn.Linear(hidden, spec.num_classes)
        # Persistent: an exported head must carry the scaling it was trained with.
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))

    def fit_scaling(self, features_N_D: Tensor) -> None:
        """Per-dimension mean and standard deviation of the round's features (label-free)."""
        with torch.no_grad():
            self.mean.copy_(features_N_D.mean(dim=0))
            self.std.copy_(features_N_D.std(dim=0).clamp_min(1e-6))

    def trunk(self, x: Tensor) -> Tensor:
        return F.relu(self.fc1((x - self.mean) / self.std))

    def head(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.dropout if self.training else 0.0
        return self.fc2(_dropout(features, p, channels=False, generator=generator))

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"head": (self.fc1.out_features,)}

    def head_mc(self, features_K_n: Tensor, masks: Masks) -> Tensor:
        return self.fc2(_apply_mask(features_K_n, masks["head"]))


def _load_resnet_weights(backbone: nn.Module, path: Path) -> None:
    """Loads a local ResNet-18 state dict (raw, or under "state_dict"), ignoring its fc."""
    if not path.is_file():
        raise ValueError(f"weights_path {str(path)!r} is not a file")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not _is_fc(k)}
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        raise ValueError(f"{path} does not fit ResNet-18: {exc}") from exc
    missing = [k for k in result.missing_keys if not _is_fc(k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit ResNet-18: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    logger.info("loaded ResNet-18 trunk weights from %s", path)


def _is_fc(key: str) -> bool:
    return key.removeprefix("module.").startswith("fc.")


def _make_grey(backbone: torchvision.models.ResNet, *, pretrained: bool) -> None:
    """One input channel. Pretrained RGB filters are summed, which keeps their features
    meaningful on grey input; a random trunk just gets a freshly initialised 1-channel conv."""
    grey = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if pretrained:
        with torch.no_grad():
            grey.weight.copy_(backbone.conv1.weight.sum(dim=1, keepdim=True))
    backbone.conv1 = grey
