"""Annotators and API tokens: admins create them; anyone can ask who they are."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import API_PREFIX, AdminUser, CurrentUser, SessionDep
from app.schemas import AnnotatorCreate, AnnotatorCreated, AnnotatorPublic
from app.services import annotators as service

router = APIRouter(prefix=API_PREFIX, tags=["annotators"])


@router.post(
    "/annotators",
    status_code=status.HTTP_201_CREATED,
    summary="Create an annotator or admin; the reply holds their token, shown only once",
    responses={409: {"description": "Someone has this name already"}},
)
def create_annotator(
    body: AnnotatorCreate, session: SessionDep, _admin: AdminUser
) -> AnnotatorCreated:
    annotator, token = service.create_annotator(session=session, name=body.name, role=body.role)
    public = service.to_public(session=session, annotators=[annotator])[0]
    return AnnotatorCreated(**public.model_dump(), token=token)


@router.get("/annotators", summary="List everyone with a token")
def list_annotators(session: SessionDep, _admin: AdminUser) -> list[AnnotatorPublic]:
    return service.to_public(session=session, annotators=service.list_annotators(session=session))


@router.get("/me", summary="Who this token belongs to")
def me(session: SessionDep, user: CurrentUser) -> AnnotatorPublic:
    return service.to_public(session=session, annotators=[user])[0]
