"""Shapes, network choice and consistent MC dropout of worker.engine.networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from worker.engine.networks import (
    FeatureHead,
    MCDropoutNetwork,
    MnistCNN,
    NetworkSpec,
    ResNet18MCDropout,
    build_network,
    resolve_network_name,
)
from worker.engine.scores import validate_log_probs
from worker.engine.training import TrainConfig, fit, mc_log_probs

torch.set_num_threads(min(2, torch.get_num_threads()))
CPU = torch.device("cpu")


def images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("channels", "size", "name", "expected"),
    [
        (1, 28, "auto", "mnist_cnn"),
        (1, 32, "auto", "mnist_cnn"),
        (1, 33, "auto", "efficientnet_lite0"),
        (3, 28, "auto", "efficientnet_lite0"),
        (3, 28, "mnist_cnn", "mnist_cnn"),
        (1, 28, "resnet18", "resnet18"),
        (1, 28, "embeddings", "embeddings"),
    ],
)
def test_network_choice_follows_image_settings(
    channels: int, size: int, name: str, expected: str
) -> None:
    spec = NetworkSpec(num_classes=10, in_channels=channels, image_size=size, name=name)
    assert resolve_network_name(spec) == expected
    network = build_network(spec, seed=0, feature_dim=16)
    kinds = {"mnist_cnn": MnistCNN, "resnet18": ResNet18MCDropout}
    assert isinstance(network, kinds.get(expected, FeatureHead))


def test_a_head_on_embeddings_needs_their_size() -> None:
    spec = NetworkSpec(num_classes=3, in_channels=3, image_size=64)
    with pytest.raises(ValueError, match="feature_dim"):
        build_network(spec, seed=0)


def test_the_feature_head_gives_consistent_mc_samples_and_learns() -> None:
    generator = torch.Generator().manual_seed(0)
    centres_C_D = torch.randn(3, 32, generator=generator) * 3
    y = torch.arange(3).repeat(40)
    x = centres_C_D[y] + torch.randn(len(y), 32, generator=generator)
    head = build_network(NetworkSpec(3, 3, 64, name="efficientnet_lite0"), seed=0, feature_dim=32)
    assert isinstance(head, FeatureHead)
    head.fit_scaling(x)

    fit(head, x, y, config=TrainConfig(seed=0, min_steps=200), device=torch.device("cpu"))
    log_probs_N_K_C = mc_log_probs(head, x, mc_samples=5, seed=1, device=torch.device("cpu"))
    one_at_a_time = torch.cat(
        [
            mc_log_probs(head, x[i : i + 1], mc_samples=5, seed=1, device=torch.device("cpu"))
            for i in range(4)
        ]
    )

    assert log_probs_N_K_C.shape == (120, 5, 3)
    torch.testing.assert_close(log_probs_N_K_C[:4], one_at_a_time)
    accuracy = (log_probs_N_K_C.exp().mean(1).argmax(1) == y).float().mean()
    assert accuracy > 0.95
    assert log_probs_N_K_C.exp().std(dim=1).max() > 0  # the K samples disagree somewhere


def test_paper_cnn_has_the_paper_layout_at_28px() -> None:
    network = build_network(NetworkSpec(10, 1, 28), seed=0)
    assert isinstance(network, MnistCNN)
    assert (network.conv1.in_channels, network.conv1.out_channels) == (1, 32)
    assert network.conv1.kernel_size == (5, 5) and network.conv2.kernel_size == (5, 5)
    assert (network.fc1.in_features, network.fc1.out_features) == (1024, 128)
    assert network.fc2.out_features == 10 and network.dropout == 0.5


@pytest.mark.parametrize(
    ("channels", "size", "name"),
    [(1, 28, "mnist_cnn"), (1, 8, "mnist_cnn"), (1, 17, "mnist_cnn"), (3, 32, "mnist_cnn"),
     (1, 32, "resnet18"), (3, 40, "resnet18")],
)  # fmt: skip
def test_output_shapes(channels: int, size: int, name: str) -> None:
    network = build_network(NetworkSpec(7, channels, size, name=name), seed=0).eval()
    x = images(5, channels, size)
    assert network(x).shape == (5, 7)
    masks = network.sample_masks(4, torch.Generator().manual_seed(0))
    assert network.forward_mc(x, masks).shape == (4, 5, 7)
    log_probs = mc_log_probs(network, x, mc_samples=4, seed=0, device=CPU)
    assert log_probs.shape == (5, 4, 7) and log_probs.device.type == "cpu"
    validate_log_probs(log_probs)  # finite and normalised


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet18"])
def test_item_alone_and_in_a_big_batch_gets_the_same_k_outputs(name: str) -> None:
    network = build_network(NetworkSpec(10, 1, 28, name=name), seed=1)
    pool = images(64, 1, 28, seed=2)
    # Small chunks put items 31 and 63 in later chunks: masks must not be redrawn per chunk.
    together = mc_log_probs(network, pool, mc_samples=8, seed=5, chunk_size=16, device=CPU)
    for i in (0, 31, 63):
        alone = mc_log_probs(network, pool[i : i + 1], mc_samples=8, seed=5, device=CPU)
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
    # The K samples really differ (dropout is on), and only the seed decides the masks.
    assert float((together[:, 0] - together[:, 1]).abs().max()) > 1e-3
    other_seed = mc_log_probs(network, pool, mc_samples=8, seed=6, device=CPU)
    assert float((other_seed - together).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet18"])
def test_trunk_once_equals_the_full_stacked_path(name: str) -> None:
    network = build_network(NetworkSpec(10, 1, 28, name=name), seed=3)
    pool = images(20, 1, 28, seed=4)
    once = mc_log_probs(network, pool, mc_samples=6, seed=7, trunk_once=True, device=CPU)
    full = mc_log_probs(network, pool, mc_samples=6, seed=7, trunk_once=False, device=CPU)
    torch.testing.assert_close(once, full, atol=1e-5, rtol=1e-5)


def test_chunking_and_half_storage_do_not_change_results() -> None:
    network = build_network(NetworkSpec(10, 1, 28), seed=0)
    pool = images(50, 1, 28, seed=1)
    reference = mc_log_probs(network, pool, mc_samples=5, seed=3, device=CPU)
    chunked = mc_log_probs(network, pool, mc_samples=5, seed=3, chunk_size=7, device=CPU)
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=1e-5)
    half = mc_log_probs(
        network, pool, mc_samples=5, seed=3, device=CPU, storage_dtype=torch.float16
    )
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), reference, atol=1e-2, rtol=1e-2)


@torch.no_grad()
def test_training_dropout_draws_from_the_given_generator() -> None:
    network = build_network(NetworkSpec(10, 1, 28), seed=0).train()
    x = images(8, 1, 28)
    first = network(x, torch.Generator().manual_seed(1))
    again = network(x, torch.Generator().manual_seed(1))
    other = network(x, torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert float((first - other).abs().max()) > 1e-4
    network.eval()  # no dropout: deterministic whatever the generator
    torch.testing.assert_close(network(x), network(x, torch.Generator().manual_seed(3)))


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first = build_network(NetworkSpec(10, 1, 28), seed=42)
    second = build_network(NetworkSpec(10, 1, 28), seed=42)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_networks_keep_no_mutable_state_on_the_class() -> None:
    for cls in (MCDropoutNetwork, MnistCNN, ResNet18MCDropout):
        for name, value in vars(cls).items():
            if name.startswith("__"):
                continue
            assert not isinstance(value, list | dict | set | torch.Tensor), (cls, name)


def test_resnet_loads_local_weights_and_sums_rgb_filters_for_grey(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    rgb = build_network(NetworkSpec(4, 3, 64, "resnet18", weights_path=str(path)), seed=1)
    assert isinstance(rgb, ResNet18MCDropout)
    assert torch.equal(rgb.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    grey = build_network(NetworkSpec(4, 1, 64, "resnet18", weights_path=str(path)), seed=1)
    assert isinstance(grey, ResNet18MCDropout)
    expected = reference.conv1.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(grey.backbone.conv1.weight, expected)


def test_bad_weights_and_specs_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="ResNet-18"):
        build_network(NetworkSpec(4, 3, 64, "resnet18", weights_path=str(bad)))
    with pytest.raises(ValueError, match="not a file"):
        build_network(NetworkSpec(4, 3, 64, "resnet18", weights_path=str(tmp_path / "missing.pt")))
    with pytest.raises(ValueError, match="unknown network"):
        build_network(NetworkSpec(4, 3, 64, name="vgg"))
    with pytest.raises(ValueError, match="in_channels"):
        build_network(NetworkSpec(4, 2, 64))
    with pytest.raises(ValueError, match="num_classes"):
        build_network(NetworkSpec(1, 1, 28))
    with pytest.raises(ValueError, match="dropout"):
        build_network(NetworkSpec(4, 1, 28, dropout=1.0))
