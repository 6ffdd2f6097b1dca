"""Projects and their members. Annotators see the projects they belong to; admins, all."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.params import AnnotatorId, ProjectId
from app.deps import (
    API_PREFIX,
    AdminUser,
    CurrentUser,
    DispatcherDep,
    EmbeddingsDep,
    SessionDep,
    SettingsDep,
)
from app.schemas import AnnotatorPublic, ProjectCreate, ProjectPublic, ProjectUpdate
from app.services import annotators as annotator_service
from app.services import projects as service
from core.embeddings import imported_space_key
from core.storage import ModelStore
from core.tables import Project

router = APIRouter(prefix=f"{API_PREFIX}/projects", tags=["projects"])


def _public(session: SessionDep, project: Project) -> ProjectPublic:
    public = ProjectPublic.model_validate(project)
    public.counts = service.project_counts(session=session, project_id=project.id)
    public.embedding = service.embedding_progress(session=session, project=project)
    return public


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a project",
    responses={409: {"description": "A project with this name exists"}},
)
def create_project(body: ProjectCreate, session: SessionDep, _admin: AdminUser) -> ProjectPublic:
    return _public(session, service.create_project(session=session, data=body))


@router.get("", summary="Projects you can see")
def list_projects(session: SessionDep, user: CurrentUser) -> list[ProjectPublic]:
    projects = service.list_visible_projects(session=session, user=user)
    return [_public(session, project) for project in projects]


@router.get("/{project_id}", summary="One project, with item counts")
def get_project(project_id: ProjectId, session: SessionDep, user: CurrentUser) -> ProjectPublic:
    return _public(
        session, service.get_visible_project(session=session, user=user, project_id=project_id)
    )


@router.patch(
    "/{project_id}",
    summary="Change a project's name or learning settings",
    responses={409: {"description": "Another project has this name"}},
)
def update_project(
    project_id: ProjectId,
    body: ProjectUpdate,
    session: SessionDep,
    admin: AdminUser,
    dispatcher: DispatcherDep,
) -> ProjectPublic:
    """A change of representation (network, backbone, image size or channels) on frozen
    features queues a round at once: it embeds the images anew and refreshes the queue."""
    project = service.get_visible_project(session=session, user=admin, project_id=project_id)
    before = service.representation_of(project)
    updated = service.update_project(session=session, project=project, data=body)
    reembed = service.reembed_round(session=session, project=updated, before=before)
    if reembed is not None:
        dispatcher.send_soon(reembed)
    return _public(session, updated)


@router.delete(
    "/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a project with its items, labels and rounds",
)
def delete_project(
    project_id: ProjectId,
    session: SessionDep,
    admin: AdminUser,
    settings: SettingsDep,
    embeddings: EmbeddingsDep,
) -> Response:
    """The project's rows go with it, and so do the files that are its alone: its exported
    models and the vectors imported for it (SQLite may give a new project the same id).
    Images and backbone embeddings are content-addressed and may be shared: they stay."""
    project = service.get_visible_project(session=session, user=admin, project_id=project_id)
    service.delete_project(session=session, project=project)
    ModelStore(settings.model_dir).drop_project(project_id)
    embeddings.space(imported_space_key(project_id)).clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{project_id}/members/{annotator_id}", summary="Add an annotator to the project")
def add_member(
    project_id: ProjectId, annotator_id: AnnotatorId, session: SessionDep, admin: AdminUser
) -> AnnotatorPublic:
    project = service.get_visible_project(session=session, user=admin, project_id=project_id)
    annotator = annotator_service.get_annotator(session=session, annotator_id=annotator_id)
    service.add_member(session=session, project=project, annotator=annotator)
    return annotator_service.to_public(session=session, annotators=[annotator])[0]


@router.delete(
    "/{project_id}/members/{annotator_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an annotator from the project (their labels stay)",
)
def remove_member(
    project_id: ProjectId, annotator_id: AnnotatorId, session: SessionDep, admin: AdminUser
) -> Response:
    project = service.get_visible_project(session=session, user=admin, project_id=project_id)
    annotator = annotator_service.get_annotator(session=session, annotator_id=annotator_id)
    service.remove_member(session=session, project=project, annotator=annotator)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
