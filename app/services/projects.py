"""Projects, memberships and who may see what."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, case, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.schemas import ProjectCounts, ProjectCreate, ProjectUpdate
from app.services import Conflict, Invalid, NotFound, dialect_insert
from core.hotkeys import hotkey_problems, normalise_key
from core.tables import Annotator, Item, Project, ProjectMember, Role, Split


def create_project(*, session: Session, data: ProjectCreate) -> Project:
    fields = data.model_dump()
    fields["hotkeys"] = checked_hotkeys(classes=data.classes, hotkeys=data.hotkeys)
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


def update_project(*, session: Session, project: Project, data: ProjectUpdate) -> Project:
    changes = {
        field: value
        for field, value in data.model_dump(exclude_unset=True).items()
        if value is not None or field == "queue_size"
    }
    if "hotkeys" in changes:  # checked before anything changes
        changes["hotkeys"] = checked_hotkeys(classes=project.classes, hotkeys=changes["hotkeys"])
    for field, value in changes.items():
        setattr(project, field, value)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {data.name!r} already exists.") from None
    return project


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
    rows = session.execute(
        select(Item.split, func.count(), labelled)
        .where(Item.project_id == project_id)
        .group_by(Item.split)
    ).all()
    counts = {split: (total, done or 0) for split, total, done in rows}
    pool, labelled_pool = counts.get(Split.pool, (0, 0))
    validation, _ = counts.get(Split.validation, (0, 0))
    return ProjectCounts(
        items=pool + validation, pool=pool, validation=validation, labelled=labelled_pool
    )
