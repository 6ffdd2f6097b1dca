"""The round's trained model, kept for use outside nextlabel: a TorchScript module and its
model card, saved per round under the data directory (core.storage.ModelStore).

The module maps images to the mean predictive probabilities over the round's K consistent
MC-dropout masks (worker.engine.export), so it answers what the round stores as each pool
item's prediction; before it is saved, the saved bytes are loaded back and checked against
those predictions, and the card records the difference. A project keeps the models of its
newest few rounds (core.storage.MODELS_KEPT_PER_PROJECT); older ones are deleted.

A round that learns a head on a frozen backbone's embeddings exports the backbone composed
in as the module's encoder (worker.engine.export.MeanPredictive), so its module still takes
images: decoded at the backbone's side in the project's mode. Imported embeddings have no
encoder nextlabel could ship: those rounds save nothing, and the export says so.

Saving is a step of its own before the round's write. A model that cannot be saved does not
fail the round: its queue and predictions are what labelling needs and are sound without it.
The round's note then says "model not saved: <why>", the log has the traceback, and the
model export goes on serving the newest round whose model was saved (its card names it).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.model_card import CardProject, CardRound, ModelCard, Outputs, ReproductionCheck
from core.report import RoundMetrics
from core.rounds import Claim, RoundAbandoned
from core.storage import MODEL_FILE, ImageStore, ModelStore, StoredModel
from core.tables import Project, Round
from worker.engine.backbones import Backbone
from worker.engine.export import load_script, mean_predictive_module, script_bytes
from worker.engine.images import ImageSpec, decode_image, preprocessing_of
from worker.engine.networks import MCDropoutNetwork
from worker.round.data import RoundData, RoundTensors

log = logging.getLogger(__name__)

MODEL_NOT_SAVED_NOTE = "model not saved"
# Pool items the saved model is checked on against the round's stored predictions.
CHECK_ITEMS = 20
# Beyond this the check is logged as a warning. On the CPU the saved model and the round
# agree to about 1e-7; a round on CUDA computes with TF32 and may differ by about 1e-3.
CHECK_TOLERANCE = 1e-4

OUTPUT_LAYOUT = (
    "float32 [N, C]: for each image, the mean over the K dropout samples of softmax(logits); "
    "columns in the order of `classes`, each row sums to 1"
)
COMPUTED_AS = (
    "exp(logsumexp_k(log_softmax(logits_k)) - log K) over K consistent MC-dropout masks, "
    "drawn once from mask_seed and baked in as buffers: every image sees the same K masks, "
    "so an image's answer does not depend on its batch. The round computes its stored "
    "predictions the same way (and stores them rounded to 6 decimals)."
)
USAGE = """\
import json

import numpy as np
import torch
from PIL import Image

card = json.load(open("model_card.json"))
model = torch.jit.load("model.pt", map_location="cpu").eval()
mode, size = card["preprocessing"]["mode"], card["preprocessing"]["image_size"]
image = Image.open("image.png")
image.draft(mode, (size, size))
image = image.convert(mode)
if image.size != (size, size):
    image = image.resize((size, size), Image.Resampling.BILINEAR)
pixels = np.asarray(image, dtype=np.float32) / 255
x = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))[None]
with torch.no_grad():
    probs = model(x)[0]  # one probability per class, in card["classes"] order
print(card["classes"][int(probs.argmax())], float(probs.max()))
"""


@dataclass(frozen=True)
class ModelInput:
    """What the exported module reads, and the images it is checked on.

    Attributes:
        spec: the decoded image's side and channels (the card's preprocessing).
        encoder: images → the network's input (a frozen backbone); None: the identity.
        check_images: float ``[n, C, H, W]`` in [0, 1], the round's first n pool items.
    """

    spec: ImageSpec
    encoder: torch.nn.Module | None
    check_images: torch.Tensor


def pixel_input(data: RoundData, tensors: RoundTensors) -> ModelInput:
    """A network on pixels: its input is the round's own images."""
    project = data.project
    spec = ImageSpec(project.image_size, project.image_channels)
    return ModelInput(spec, None, tensors.x_pool[:CHECK_ITEMS])


def backbone_input(
    images: ImageStore,
    data: RoundData,
    tensors: RoundTensors,
    backbone: Backbone,
    *,
    max_pixels: int,
) -> ModelInput:
    """A head on a frozen backbone: the module reads images as the embed phase decodes them
    (the backbone's side, the project's mode) and runs the backbone first."""
    spec = ImageSpec(backbone.preprocessing.input_size, data.project.image_channels)
    by_id = {item.item_id: item for item in data.pool}
    checked = [by_id[item_id] for item_id in tensors.pool_ids[:CHECK_ITEMS]]
    pixels = [
        decode_image(images.get(item.file_key), spec, max_pixels=max_pixels) for item in checked
    ]
    shape = (0, spec.channels, spec.size, spec.size)
    stacked = np.stack(pixels) if pixels else np.zeros(shape, dtype=np.uint8)
    return ModelInput(spec, backbone.encoder, torch.from_numpy(stacked).float().div_(255))


@dataclass(frozen=True)
class RoundFacts:
    """What the card says about the round that the round's snapshot does not hold."""

    project_name: str
    number: int
    started_at: datetime | None


def save_round_model(
    *,
    store: ModelStore,
    session_factory: sessionmaker[Session],
    claim: Claim,
    data: RoundData,
    tensors: RoundTensors,
    model: MCDropoutNetwork,
    seed: int,
    log_probs_N_K_C: torch.Tensor | None,
    metrics: RoundMetrics,
    model_input: ModelInput | None = None,
) -> RoundMetrics:
    """Save the round's model and card, then prune the project's older models.

    Args:
        store: where models are kept.
        session_factory: to read the project's name and the round's number.
        claim: the round being run.
        data: its snapshot (classes, image settings, K).
        tensors: its pool images, the first of which the saved model is checked on.
        model: the trained network.
        seed: the round's seed, which drew the masks of its pool predictions.
        log_probs_N_K_C: the round's pool predictions (None without a pool).
        metrics: the round's report, which the card includes.
        model_input: what the module reads (default: the round's pixels); None for a round on
            imported embeddings, which saves nothing.

    Returns:
        `metrics`, with a note when the model could not be saved.
    """
    if model_input is None:
        log.info("round %s learns on imported embeddings: no model exported", claim.round_id)
        return metrics
    started = time.perf_counter()
    try:
        facts = read_round_facts(session_factory, claim)
        saved = _save(store, claim, data, model_input, model, seed, log_probs_N_K_C, metrics, facts)
    except RoundAbandoned:
        raise
    except Exception as exc:  # any failure to save leaves the round itself as it is
        log.exception("round %s: the trained model was not saved", claim.round_id)
        return _with_note(metrics, f"{MODEL_NOT_SAVED_NOTE}: {type(exc).__name__}: {exc}")
    log.info(
        "round %s: model saved to %s in %.2f s",
        claim.round_id,
        saved.model_path,
        time.perf_counter() - started,
    )
    _prune(store, claim.project_id)
    return metrics


def read_round_facts(session_factory: sessionmaker[Session], claim: Claim) -> RoundFacts:
    """The project's name, the round's number within it and when the round started."""
    with session_factory() as session:
        name = session.scalar(select(Project.name).where(Project.id == claim.project_id))
        started_at = session.scalar(select(Round.started_at).where(Round.id == claim.round_id))
        number = session.scalar(
            select(func.count())
            .select_from(Round)
            .where(Round.project_id == claim.project_id, Round.id <= claim.round_id)
        )
    if name is None:
        raise RoundAbandoned("project deleted")
    return RoundFacts(name, int(number or 0), started_at)


def _save(
    store: ModelStore,
    claim: Claim,
    data: RoundData,
    model_input: ModelInput,
    model: MCDropoutNetwork,
    seed: int,
    log_probs_N_K_C: torch.Tensor | None,
    metrics: RoundMetrics,
    facts: RoundFacts,
) -> StoredModel:
    project = data.project
    with warnings.catch_warnings():
        # torch 2.10+ calls TorchScript deprecated; it is still what torch.jit.load reads
        # with torch alone, which is the point of the export.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        # A backbone's branches on the input's shape are fixed by the traced size, which is
        # the card's size: the warning says just that.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        spec = model_input.spec
        module = mean_predictive_module(
            model,
            mc_samples=project.mc_samples,
            seed=seed,
            image_shape=(spec.channels, spec.size, spec.size),
            encoder=model_input.encoder,
        )
        model_bytes = script_bytes(module)
        check = reproduction_check(
            load_script(model_bytes),
            model_input.check_images,
            log_probs_N_K_C,
            device=metrics.device or "cpu",
        )
    card = model_card(claim, data, seed, metrics, facts, check, spec)
    return store.put(
        claim.project_id,
        claim.round_id,
        model=model_bytes,
        card=card.model_dump_json(indent=2).encode(),
    )


@torch.no_grad()
def reproduction_check(
    module: torch.jit.ScriptModule,
    check_images: torch.Tensor,
    log_probs_N_K_C: torch.Tensor | None,
    *,
    device: str,
) -> ReproductionCheck:
    """The saved module on the first pool items against the predictions the round stores."""
    n = min(CHECK_ITEMS, len(check_images))
    if log_probs_N_K_C is None or n == 0:
        return ReproductionCheck(items=0, max_abs_difference=None, device=device)
    K = log_probs_N_K_C.shape[1]
    # As worker.round.write computes the stored probabilities.
    stored_n_C = (torch.logsumexp(log_probs_N_K_C[:n].double(), dim=1) - math.log(K)).exp()
    saved_n_C = module(check_images[:n].cpu().float()).double()
    difference = float((saved_n_C - stored_n_C).abs().max())
    if difference > CHECK_TOLERANCE:
        log.warning(
            "saved model differs from the round's predictions by up to %.2e (round on %s)",
            difference,
            device,
        )
    return ReproductionCheck(items=n, max_abs_difference=difference, device=device)


def model_card(
    claim: Claim,
    data: RoundData,
    seed: int,
    metrics: RoundMetrics,
    facts: RoundFacts,
    check: ReproductionCheck,
    spec: ImageSpec,
) -> ModelCard:
    project = data.project
    return ModelCard(
        model_file=MODEL_FILE,
        project=CardProject(id=project.id, name=facts.project_name),
        round=CardRound(id=claim.round_id, number=facts.number, started_at=facts.started_at),
        classes=list(project.classes),
        network=project.resolved_network,
        preprocessing=preprocessing_of(spec),
        outputs=Outputs(
            layout=OUTPUT_LAYOUT,
            mc_samples=project.mc_samples,
            mask_seed=seed,
            computed_as=COMPUTED_AS,
        ),
        metrics=metrics,
        check=check,
        created_at=datetime.now(UTC),
        torch_version=torch.__version__,
        usage=USAGE,
    )


def _prune(store: ModelStore, project_id: int) -> None:
    try:
        dropped = store.prune(project_id)
    except OSError:
        # The new model is saved; old files left behind cost disk, not correctness.
        log.warning("could not prune the older models of project %s", project_id, exc_info=True)
        return
    if dropped:
        log.info("project %s: pruned the models of rounds %s", project_id, dropped)


def _with_note(metrics: RoundMetrics, note: str) -> RoundMetrics:
    return metrics.model_copy(update={"note": "; ".join(filter(None, [metrics.note, note]))})
