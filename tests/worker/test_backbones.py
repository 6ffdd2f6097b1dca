"""worker.engine.backbones on real weights and real photos: the shipped EfficientNet-Lite0,
a team's own torchvision and timm weights, and the errors a person gets for bad ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from sklearn.datasets import load_sample_image
from torch import nn
from torch.nn import functional as F

from worker.engine.backbones import (
    DEFAULT_LITE0_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneError,
    resolve_backbone,
)

torch.set_num_threads(min(2, torch.get_num_threads()))
CPU = torch.device("cpu")
IMAGENET_CLASSES: list[str] = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
# scikit-learn's china.jpg is the Summer Palace in Beijing: a Chinese palace with a pagoda-like
# tower over a lake. Any of these is what a person would call it in ImageNet's vocabulary.
TEMPLE_LIKE = {"palace", "monastery", "bell cote", "stupa", "pagoda", "church", "castle", "dome"}
SMALL = 64  # the custom backbones' side in these tests: enough for ResNet-18, fast


def centre_square(name: str, fraction: float = 0.875) -> torch.Tensor:
    """A sample photo's centre square, uint8 ``[3, S, S]``: ImageNet's evaluation crop."""
    photo = load_sample_image(name)
    height, width = photo.shape[:2]
    side = int(min(height, width) * fraction)
    top, left = (height - side) // 2, (width - side) // 2
    crop = np.ascontiguousarray(photo[top : top + side, left : left + side])
    return torch.from_numpy(crop).permute(2, 0, 1)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """china.jpg and flower.jpg, ``[2, 3, 373, 373]`` uint8 (the backbone resizes them)."""
    return torch.stack([centre_square("china.jpg"), centre_square("flower.jpg")])


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return resolve_backbone("efficientnet_lite0")


def top5(backbone: Backbone, photos: torch.Tensor) -> list[list[str]]:
    logits_N_1000 = backbone.imagenet_logits(photos, device=CPU)
    return [[IMAGENET_CLASSES[i] for i in row.topk(5).indices] for row in logits_N_1000]


# --------------------------------------------------------------------------- shipped weights


def test_lite0_sees_a_palace_and_a_flower_at_its_training_side(photos: torch.Tensor) -> None:
    china, flower = top5(resolve_backbone("efficientnet_lite0", input_size=224), photos)
    assert china[0] in TEMPLE_LIKE, china
    # ImageNet-1k has no dahlia; "daisy" is its flower, and the model says so first.
    assert flower[0] == "daisy", flower


def test_lite0_still_recognises_the_photos_at_the_default_side(
    lite0: Backbone, photos: torch.Tensor
) -> None:
    china, flower = top5(lite0, photos)
    assert china[0] in TEMPLE_LIKE, china
    assert "daisy" in flower, flower


def test_lite0_describes_itself(lite0: Backbone) -> None:
    assert lite0.name == "efficientnet_lite0"
    assert lite0.dim == 1280
    assert lite0.preprocessing.input_size == DEFAULT_LITE0_INPUT_SIZE
    assert lite0.preprocessing.channels == 3
    # (x - 127) / 128 on 0-255 pixels, the EfficientNet-Lite training normalisation
    assert lite0.preprocessing.mean == pytest.approx((127 / 255,) * 3)
    assert lite0.preprocessing.std == pytest.approx((128 / 255,) * 3)
    assert len(lite0.weights_digest) == 16
    assert lite0.weights_digest in lite0.space_key


def test_resolving_again_returns_the_loaded_backbone(lite0: Backbone) -> None:
    assert resolve_backbone("efficientnet_lite0") is lite0
    assert resolve_backbone("efficientnet_lite0", input_size=DEFAULT_LITE0_INPUT_SIZE) is lite0


def test_space_key_changes_with_the_input_side(lite0: Backbone) -> None:
    other = resolve_backbone("efficientnet_lite0", input_size=112)
    assert other.space_key != lite0.space_key
    assert other.weights_digest == lite0.weights_digest


# --------------------------------------------------------------------------- embed()


def test_embed_gives_finite_float32_rows_deterministically(
    lite0: Backbone, photos: torch.Tensor
) -> None:
    first = lite0.embed(photos, device=CPU)
    again = lite0.embed(photos, device=CPU)
    assert first.shape == (2, 1280)
    assert first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    # two different photos, two different vectors
    assert F.cosine_similarity(first[0], first[1], dim=0) < 0.9


def test_embed_does_not_depend_on_the_chunk_size(lite0: Backbone) -> None:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (7, 3, 40, 40), dtype=torch.uint8, generator=generator)
    in_threes = lite0.embed(pixels, chunk_size=3, device=CPU)
    at_once = lite0.embed(pixels, chunk_size=64, device=CPU)
    torch.testing.assert_close(in_threes, at_once, rtol=1e-4, atol=1e-4)


def test_grey_pixels_are_embedded_as_their_rgb_repetition(lite0: Backbone) -> None:
    grey = centre_square("flower.jpg").float().mean(dim=0, keepdim=True).to(torch.uint8)[None]
    as_grey = lite0.embed(grey, device=CPU)
    as_rgb = lite0.embed(grey.expand(-1, 3, -1, -1).contiguous(), device=CPU)
    assert as_grey.shape == (1, 1280)
    torch.testing.assert_close(as_grey, as_rgb)


def test_embed_takes_non_square_and_empty_input(lite0: Backbone) -> None:
    wide = torch.from_numpy(np.array(load_sample_image("china.jpg"))).permute(2, 0, 1)[None]
    assert lite0.embed(wide, device=CPU).shape == (1, 1280)
    assert lite0.embed(torch.zeros(0, 1, 28, 28, dtype=torch.uint8)).shape == (0, 1280)


def test_embed_refuses_floats_and_odd_channels(lite0: Backbone) -> None:
    with pytest.raises(ValueError, match="uint8"):
        lite0.embed(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 1 or 3, H, W\]"):
        lite0.embed(torch.zeros(1, 2, 32, 32, dtype=torch.uint8))


# --------------------------------------------------------------------------- custom weights


def resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(resnet18_state(0), path)
    return path


def custom(model: str, weights: Path, input_size: int | None = SMALL) -> Backbone:
    return resolve_backbone(
        "custom", custom_model=model, custom_weights=str(weights), input_size=input_size
    )


def reference_features(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """ResNet-18's pooled features computed by hand: torchvision's model, fc removed."""
    network = torchvision.models.resnet18(weights=None)
    network.load_state_dict(state)
    network.fc = nn.Identity()
    x = F.interpolate(pixels.float() / 255, size=(SMALL, SMALL), mode="bilinear", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return network.eval()((x - mean) / std)


def test_torchvision_weights_load_and_embed_like_the_model_itself(
    resnet18_file: Path, photos: torch.Tensor
) -> None:
    backbone = custom("torchvision:resnet18", resnet18_file)
    assert backbone.dim == 512
    vectors = backbone.embed(photos, device=CPU)
    assert vectors.shape == (2, 512)
    torch.testing.assert_close(
        vectors, reference_features(resnet18_state(0), photos), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(BackboneError, match="no ImageNet classifier"):
        backbone.imagenet_logits(photos)


def test_wrapped_prefixed_weights_with_another_classifier_load(
    tmp_path: Path, photos: torch.Tensor
) -> None:
    """A DataParallel checkpoint fine-tuned on 10 classes: "module." keys under
    "state_dict", and an fc of another shape, which is dropped."""
    state = resnet18_state(0)
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    path = tmp_path / "finetuned.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    vectors = custom("torchvision:resnet18", path).embed(photos, device=CPU)
    torch.testing.assert_close(vectors, reference_features(resnet18_state(0), photos))


def test_timm_weights_load_and_agree_with_torchvision(
    resnet18_file: Path, photos: torch.Tensor
) -> None:
    """timm's ResNet-18 names its parameters as torchvision's does: the same file through
    both libraries gives the same features, a cross-check of two implementations."""
    from_timm = custom("timm:resnet18", resnet18_file)
    from_torchvision = custom("torchvision:resnet18", resnet18_file)
    assert from_timm.dim == 512
    assert from_timm.preprocessing == from_torchvision.preprocessing
    assert from_timm.space_key != from_torchvision.space_key
    torch.testing.assert_close(
        from_timm.embed(photos, device=CPU),
        from_torchvision.embed(photos, device=CPU),
        rtol=1e-4,
        atol=1e-4,
    )


def test_custom_space_key_follows_the_weights_content(tmp_path: Path, resnet18_file: Path) -> None:
    copy = tmp_path / "copy.pt"
    shutil.copyfile(resnet18_file, copy)
    other = tmp_path / "other.pt"
    torch.save(resnet18_state(1), other)
    base = custom("torchvision:resnet18", resnet18_file)
    assert custom("torchvision:resnet18", copy).space_key == base.space_key
    assert custom("torchvision:resnet18", other).space_key != base.space_key
    assert custom("torchvision:resnet18", resnet18_file, 96).space_key != base.space_key


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(BackboneError, match=r"weights file '.*nowhere\.pt' cannot be read"):
        custom("torchvision:resnet18", missing)


def test_a_corrupt_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BackboneError, match="is not a readable PyTorch file"):
        custom("torchvision:resnet18", path)


def test_a_file_without_a_state_dict_is_named(tmp_path: Path) -> None:
    path = tmp_path / "stats.pt"
    torch.save({"epoch": 3, "best_accuracy": 0.9}, path)
    with pytest.raises(BackboneError, match="holds no state dict"):
        custom("torchvision:resnet18", path)


def test_weights_of_another_architecture_name_the_keys_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pt"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(BackboneError) as raised:
        custom("torchvision:resnet18", path)
    message = str(raised.value)
    assert "do not fit torchvision resnet18" in message
    assert "missing keys, such as conv1.weight" in message
    assert "unexpected keys, such as features.0.0.weight" in message


def test_weights_for_grey_images_name_the_misshaped_key(tmp_path: Path) -> None:
    """A ResNet-18 trained on grey images (as worker.engine.networks builds one): its first
    convolution reads one channel, the backbone's three."""
    state = resnet18_state(0)
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    path = tmp_path / "grey.pt"
    torch.save(state, path)
    with pytest.raises(BackboneError, match="1 keys with another shape") as raised:
        custom("torchvision:resnet18", path)
    assert "conv1.weight (64, 1, 7, 7) (the model has (64, 3, 7, 7))" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        ("resnet999", None, "unknown backbone 'resnet999'"),
        ("custom", None, "needs custom_model"),
        ("custom", "keras:resnet50", "must read '<family>:<model>'"),
        ("custom", "torchvision:resnet19", "torchvision has no classification model 'resnet19'"),
        ("custom", "timm:not_a_model", "timm has no model 'not_a_model'"),
    ],
)
def test_unknown_names_are_refused(
    resnet18_file: Path, name: str, model: str | None, message: str
) -> None:
    with pytest.raises(BackboneError, match=message):
        resolve_backbone(name, custom_model=model, custom_weights=str(resnet18_file))


def test_settings_that_do_not_go_together_are_refused(resnet18_file: Path) -> None:
    with pytest.raises(BackboneError, match="custom_weights"):
        resolve_backbone("custom", custom_model="torchvision:resnet18", custom_weights=None)
    with pytest.raises(BackboneError, match="go with backbone 'custom' only"):
        resolve_backbone("efficientnet_lite0", custom_weights=str(resnet18_file))
    with pytest.raises(BackboneError, match="input_size must be from 32"):
        resolve_backbone("efficientnet_lite0", input_size=8)
