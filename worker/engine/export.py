"""A trained MC-dropout network as one self-contained TorchScript module: images in, the
mean predictive probabilities over K consistent dropout masks out.

The module is an `encoder` (images → the network's input) followed by the network. The
encoder is the identity while networks read pixels; a frozen pretrained backbone (images →
features) in front of a feature head fills the same slot, and the exported module still
takes images. The K masks are drawn exactly as `worker.engine.training.mc_log_probs` draws
them (once, on the CPU, from the seed) and kept as buffers, so for the round's seed the
module answers what the round stored for each pool item; loading it needs torch alone.
"""

from __future__ import annotations

import copy
import io
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from worker.engine.networks import Masks, MCDropoutNetwork

# Batch size of the example the module is traced with: more than one, so that nothing in
# the traced graph can special-case a single item; the traced module takes any N.
_TRACE_BATCH = 3


class MeanPredictive(nn.Module):
    """``[N, C, H, W]`` images in [0, 1] → ``[N, classes]`` mean of the K samples' softmax.

    Computed in log space as ``exp(logsumexp_K(log_softmax(logits)) - log K)``, as the round
    stores its predictions (worker.round.write).
    """

    def __init__(self, encoder: nn.Module, network: MCDropoutNetwork, masks: Masks) -> None:
        super().__init__()
        self.encoder = encoder
        self.network = network
        self.sites = tuple(masks)
        for site, mask_K_F in masks.items():
            self.register_buffer(_buffer_name(site), mask_K_F)
        self.log_mc_samples = math.log(next(iter(masks.values())).shape[0])

    def forward(self, images_N_C_H_W: Tensor) -> Tensor:
        masks = {site: getattr(self, _buffer_name(site)) for site in self.sites}
        logits_K_N_C = self.network.forward_mc(self.encoder(images_N_C_H_W), masks)
        log_probs_K_N_C = F.log_softmax(logits_K_N_C.float(), dim=-1)
        return (torch.logsumexp(log_probs_K_N_C, dim=0) - self.log_mc_samples).exp()


def _buffer_name(site: str) -> str:
    return f"mask_{site}"


def mean_predictive_module(
    network: MCDropoutNetwork,
    *,
    mc_samples: int,
    seed: int,
    image_shape: tuple[int, int, int],
    encoder: nn.Module | None = None,
) -> torch.jit.ScriptModule:
    """The traced, CPU-resident module of a trained network under its K seeded masks.

    Args:
        network: the trained network; left as it is (a CPU copy is traced).
        mc_samples: K, as the round's inference used.
        seed: the seed of the round's masks (`mc_log_probs`'s `seed`).
        image_shape: ``(channels, H, W)`` of one input image.
        encoder: images → the network's input; the identity when None.
    """
    cpu_network = copy.deepcopy(network).cpu().eval()
    masks = cpu_network.sample_masks(mc_samples, torch.Generator().manual_seed(seed))
    module = MeanPredictive(encoder or nn.Identity(), cpu_network, masks).eval()
    example_N_C_H_W = torch.zeros(_TRACE_BATCH, *image_shape)
    with torch.no_grad():
        traced: torch.jit.ScriptModule = torch.jit.trace(module, example_N_C_H_W)
    return traced


def script_bytes(module: torch.jit.ScriptModule) -> bytes:
    """The module as the bytes `torch.jit.load` reads back."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def load_script(data: bytes) -> torch.jit.ScriptModule:
    """A saved module read back, on the CPU, ready to predict."""
    module: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return module.eval()
