"""Annotators and their API tokens."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.schemas import AnnotatorPublic
from app.security import generate_token, hash_token
from app.services import Conflict, NotFound
from core.tables import Annotator, Project, ProjectMember, Role


def create_annotator(
    *, session: Session, name: str, role: Role, project_ids: Iterable[int] = ()
) -> tuple[Annotator, str]:
    """Create an annotator; returns it with its token, the only time the token exists."""
    ids = sorted(set(project_ids))
    _require_projects(session=session, project_ids=ids)
    token = generate_token()
    annotator = Annotator(name=name, role=role, token_hash=hash_token(token))
    session.add(annotator)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"An annotator named {name!r} already exists.") from None
    session.add_all(ProjectMember(project_id=pid, annotator_id=annotator.id) for pid in ids)
    session.commit()
    return annotator, token


def rotate_token(*, session: Session, annotator: Annotator) -> str:
    token = generate_token()
    annotator.token_hash = hash_token(token)
    session.commit()
    return token


def get_annotator(*, session: Session, annotator_id: int) -> Annotator:
    annotator = session.get(Annotator, annotator_id)
    if annotator is None:
        raise NotFound(f"Annotator {annotator_id} does not exist.")
    return annotator


def list_annotators(*, session: Session) -> Sequence[Annotator]:
    return session.scalars(select(Annotator).order_by(Annotator.id)).all()


def project_ids_of(*, session: Session, annotator_ids: Iterable[int]) -> dict[int, list[int]]:
    ids = list(annotator_ids)
    memberships: dict[int, list[int]] = defaultdict(list)
    rows = session.execute(
        select(ProjectMember.annotator_id, ProjectMember.project_id)
        .where(ProjectMember.annotator_id.in_(ids))
        .order_by(ProjectMember.project_id)
    )
    for annotator_id, project_id in rows:
        memberships[annotator_id].append(project_id)
    return memberships


def to_public(*, session: Session, annotators: Sequence[Annotator]) -> list[AnnotatorPublic]:
    memberships = project_ids_of(session=session, annotator_ids=[a.id for a in annotators])
    return [
        AnnotatorPublic(
            id=a.id,
            name=a.name,
            role=a.role,
            created_at=a.created_at,
            project_ids=memberships.get(a.id, []),
        )
        for a in annotators
    ]


def _require_projects(*, session: Session, project_ids: list[int]) -> None:
    found = set(session.scalars(select(Project.id).where(Project.id.in_(project_ids))))
    missing = [pid for pid in project_ids if pid not in found]
    if missing:
        raise NotFound(f"Project(s) {', '.join(map(str, missing))} do not exist.")
