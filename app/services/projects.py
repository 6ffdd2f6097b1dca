"""Projects, memberships and who may see what."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import bindparam, case, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.schemas import EmbeddingProgressPublic, ProjectCounts, ProjectCreate, ProjectUpdate
from app.services import Conflict, Invalid, NotFound, dialect_insert
from core.embedding_progress import view_progress
from core.hotkeys import hotkey_problems, normalise_key
from core.rounds import open_round
from core.tables import Annotator, EmbeddingProgress, Item, Project, ProjectMember, Role, Split


def create_project(*, session: Session, data: ProjectCreate) -> Project:
    fields = data.model_dump()
    fields["hotkeys"] = checked_hotkeys(classes=data.classes, hotkeys=data.hotkeys)
    _check_custom_backbone(fields)
    project = Project(**fields)
    session.add(project)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {data.name!r} already exists.") from None
    return project


_VISIBLE_PROJECT = select(
    Project,
    exists().where(
        ProjectMember.project_id == Project.id, ProjectMember.annotator_id == bindparam("me")
    ),
).where(Project.id == bindparam("project_id"))


def get_visible_project(*, session: Session, user: Annotator, project_id: int) -> Project:
    """The project, if `user` may see it. Non-members get the same 404 as a missing project,
    so a token cannot probe which projects exist."""
    row = session.execute(_VISIBLE_PROJECT, {"project_id": project_id, "me": user.id}).one_or_none()
    if row is None or not (row[1] or user.role == Role.admin):
        raise project_not_visible(project_id)
    project: Project = row[0]
    return project


def project_not_visible(project_id: int) -> NotFound:
    return NotFound(f"Project {project_id} does not exist or you are not a member of it.")


def member_project_ids(*, session: Session, user: Annotator) -> set[int] | None:
    """Ids of the user's projects; None for admins, who see every project."""
    if user.role == Role.admin:
        return None
    query = select(ProjectMember.project_id).where(ProjectMember.annotator_id == user.id)
    return set(session.scalars(query))


def find_project(*, session: Session, ref: str) -> Project:
    """A project by id or by name (for the CLI)."""
    project = session.get(Project, int(ref)) if ref.isdigit() else None
    if project is None:
        project = session.scalar(select(Project).where(Project.name == ref))
    if project is None:
        raise NotFound(f"No project with id or name {ref!r}.")
    return project


def list_visible_projects(*, session: Session, user: Annotator) -> Sequence[Project]:
    query = select(Project).order_by(Project.id)
    if user.role != Role.admin:
        query = query.join(ProjectMember, ProjectMember.project_id == Project.id).where(
            ProjectMember.annotator_id == user.id
        )
    return session.scalars(query).all()


def checked_hotkeys(*, classes: list[str], hotkeys: dict[str, str]) -> dict[str, str]:
    """An admin's class → key map as stored (keys lower-cased); Invalid (422) naming each
    problem: a key that is not one visible character, one given twice, one the page uses
    for an action, a class the project does not have."""
    problems = hotkey_problems(classes, hotkeys)
    if problems:
        raise Invalid(f"hotkeys: {'; '.join(problems)}.")
    return {name: normalise_key(key) for name, key in hotkeys.items()}


# Settings where null means "the default" and may be sent to return to it.
_NULLABLE_SETTINGS = ("queue_size", "near_duplicate_distance")


def update_project(*, session: Session, project: Project, data: ProjectUpdate) -> Project:
    changes = {
        field: value
        for field, value in data.model_dump(exclude_unset=True).items()
        if value is not None or field in _NULLABLE_SETTINGS
    }
    if "hotkeys" in changes:  # checked before anything changes
        changes["hotkeys"] = checked_hotkeys(classes=project.classes, hotkeys=changes["hotkeys"])
    if changes.get("network", "custom") != "custom":  # leaving "custom" forgets its model
        changes = {"custom_backbone": None, "custom_weights": None, **changes}
    _check_custom_backbone({**_backbone_settings(project), **changes})
    for field, value in changes.items():
        setattr(project, field, value)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {data.name!r} already exists.") from None
    return project


def _backbone_settings(project: Project) -> dict[str, Any]:
    return {
        "network": project.network,
        "custom_backbone": project.custom_backbone,
        "custom_weights": project.custom_weights,
    }


def _check_custom_backbone(settings: dict[str, Any]) -> None:
    """Network "custom" names its model and weights; other networks must not (they would be
    accepted and ignored). Whether the file fits is checked where it is read, by the worker."""
    named = [field for field in ("custom_backbone", "custom_weights") if settings.get(field)]
    if settings.get("network") == "custom" and len(named) < 2:
        raise Invalid(
            "network 'custom' needs custom_backbone (such as 'torchvision:resnet50') and "
            "custom_weights (the weights file's path on the worker)."
        )
    if settings.get("network") != "custom" and named:
        raise Invalid(
            f"{' and '.join(named)} apply only with network 'custom', not "
            f"{settings.get('network')!r}."
        )


# Settings that change what a round's embeddings are.
_REPRESENTATION = ("network", "custom_backbone", "custom_weights", "image_size", "image_channels")


def representation_of(project: Project) -> tuple[object, ...]:
    """The settings that decide what a round's embeddings are."""
    return tuple(getattr(project, field) for field in _REPRESENTATION)


def reembed_round(*, session: Session, project: Project, before: tuple[object, ...]) -> int | None:
    """Queue a round when an update changed the representation of a project on frozen
    features (a value that changed, not one resent as it was); the id of the round to send,
    or None (no change, or a round already active)."""
    if representation_of(project) == before or not project.learns_on_embeddings:
        return None
    opened = open_round(session=session, project=project, trigger="settings")
    return opened.id if opened is not None else None


def embedding_progress(*, session: Session, project: Project) -> EmbeddingProgressPublic | None:
    if not project.learns_on_embeddings:
        return None
    row = session.get(EmbeddingProgress, project.id)
    if row is None:
        return None
    return EmbeddingProgressPublic.model_validate(asdict(view_progress(row)))


def delete_project(*, session: Session, project: Project) -> None:
    # Items, labels, rounds... go with it through ON DELETE CASCADE. Stored image files are
    # content-addressed and may be shared with other projects, so they stay.
    session.execute(delete(Project).where(Project.id == project.id))
    session.commit()


def add_member(*, session: Session, project: Project, annotator: Annotator) -> None:
    insert = dialect_insert(session)
    statement = insert(ProjectMember).values(project_id=project.id, annotator_id=annotator.id)
    session.execute(statement.on_conflict_do_nothing())
    session.commit()


def remove_member(*, session: Session, project: Project, annotator: Annotator) -> None:
    session.execute(
        delete(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.annotator_id == annotator.id
        )
    )
    session.commit()


def project_counts(*, session: Session, project_id: int) -> ProjectCounts:
    labelled = func.sum(case((Item.label_count > 0, 1), else_=0))
    # Near duplicates ride along in the same scan: the dashboard polls these counts.
    flagged = func.sum(case((Item.near_duplicate_of.is_not(None), 1), else_=0))
    skipped = func.sum(case((Item.duplicate_skipped.is_(True), 1), else_=0))
    rows = session.execute(
        select(Item.split, func.count(), labelled, flagged, skipped)
        .where(Item.project_id == project_id)
        .group_by(Item.split)
    ).all()
    counts = {split: (total, done or 0) for split, total, done, _, _ in rows}
    pool, labelled_pool = counts.get(Split.pool, (0, 0))
    validation, _ = counts.get(Split.validation, (0, 0))
    return ProjectCounts(
        items=pool + validation,
        pool=pool,
        validation=validation,
        labelled=labelled_pool,
        near_duplicates=sum(row[3] or 0 for row in rows),
        duplicates_skipped=sum(row[4] or 0 for row in rows),
    )
