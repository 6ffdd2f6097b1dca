"""Items: upload images or zips, page through a project's items, fetch an image."""

from __future__ import annotations

import functools
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from app.api.errors import ValidationErrorMessage, ValidationProblem
from app.api.params import ItemCursor, ItemId, ProjectId
from app.api.responses import model_response
from app.deps import (
    API_PREFIX,
    AdminUser,
    CurrentUser,
    DispatcherDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.images import sniff_media_type
from app.schemas import (
    ImportReport,
    ItemPage,
    ItemPublic,
    ItemStatus,
    SkippedFile,
    StoredText,
)
from app.services import Invalid, NotFound
from app.services import items as service
from app.services.imports import (
    Entry,
    ImportRefused,
    Listing,
    ZipLimits,
    open_zip,
    plan_import,
    write_import,
    zip_listing,
)
from app.services.manifests import LabelUse, is_manifest_name, parse_manifest
from app.services.projects import get_visible_project
from core.settings import Settings

router = APIRouter(prefix=API_PREFIX, tags=["items"])

ZIP_MAGIC = b"PK\x03\x04"
# Total bytes a zip may expand to, as a multiple of the upload limit. Images barely
# compress, so an honest archive stays near 1×; this only stops absurd declared sizes.
ZIP_EXPANSION_OF_UPLOAD_LIMIT = 4
# Content-addressed: the bytes behind an item never change, so the browser keeps them
# (`immutable`: not even revalidated on reload). But who may see them depends on the token,
# and a browser's cache is shared by everyone who uses it: `Vary: Authorization` makes it
# answer only a request with the same Authorization header as the one that fetched the
# copy, so another token, or none, goes to the server and its checks. `private` keeps
# shared caches (proxies, CDNs) from storing a per-user answer at all.
IMAGE_CACHE_HEADERS = {
    "Cache-Control": "private, max-age=31536000, immutable",
    "Vary": "Authorization",
}


@router.post(
    "/projects/{project_id}/items",
    response_model=ImportReport,
    summary="Upload images or zips, with their labels if they have any (dry_run checks first)",
    description="Images, zips of images, and manifests (labels.csv, labels.jsonl, "
    "manifest.csv, manifest.jsonl: `filename,label[,split]`), loose or inside a zip. Class "
    "folders (`cat/x.png`, optionally under `train/` or `val/`) label their files when some "
    "folder is named after one of the project's classes. A label becomes a training label "
    "(by the `import` account) or a validation item: the manifest row's split, else a train/ "
    "or val/ folder, else `labels_as`, else labels.csv validates and anything else trains. "
    "A problem that would lose a label (unknown class, a row naming no file, a duplicate "
    "row, a labelled file that is not an image) refuses the whole upload with a 422 listing "
    "each, unless `skip_problems`. Importing the same files and labels again changes nothing.",
    responses={413: {"description": "Upload or unpacked zip too large"}},
)
def upload_items(
    project_id: ProjectId,
    files: Annotated[
        list[UploadFile], File(description="Images, .zip files and manifests.", min_length=1)
    ],
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    admin: AdminUser,
    dry_run: Annotated[
        bool, Query(description="Check everything, answer what would happen, write nothing.")
    ] = False,
    labels_as: Annotated[
        LabelUse | None, Query(description="What labels without a split of their own become.")
    ] = None,
    skip_problems: Annotated[
        bool, Query(description="Import what has no problem; `problems` lists what was left.")
    ] = False,
) -> Response:
    _check_filenames(files)
    project = get_visible_project(session=session, user=admin, project_id=project_id)
    # Open (and check) every zip before importing anything: a zip bomb rejects the whole
    # request with nothing written.
    listing = Listing()
    for upload in files:
        listing.extend(_listing(upload, settings))
    plan = plan_import(
        session=session,
        project=project,
        listing=listing,
        labels_as=labels_as,
        max_pixels=settings.max_image_pixels,
    )
    if dry_run:
        return model_response(plan.report(dry_run=True))
    try:
        report = write_import(
            session=session, store=store, project=project, plan=plan, skip_problems=skip_problems
        )
    except ImportRefused as refused:
        return _refusal(refused)
    if report.round_queued is not None:
        dispatcher.send_soon(report.round_queued)
    return model_response(report)


def _refusal(refused: ImportRefused) -> Response:
    """A 422 in the shape every 422 has, one entry per problem."""
    problems = [
        ValidationProblem(loc=["body", "files", problem.name], msg=problem.reason, type="import")
        for problem in refused.report.problems
    ]
    message = ValidationErrorMessage(detail=str(refused), errors=problems)
    return model_response(message, status_code=422)


_FILENAME = TypeAdapter(StoredText)


def _check_filenames(files: list[UploadFile]) -> None:
    """A 422 naming each upload whose name the database cannot store, before any import."""
    errors: list[dict[str, Any]] = []
    for index, upload in enumerate(files):
        try:
            _FILENAME.validate_python(upload.filename or "")
        except ValidationError as exc:
            loc = ("body", "files", index, "filename")
            errors += [{**error, "loc": loc} for error in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)


def _listing(upload: UploadFile, settings: Settings) -> Listing:
    name = upload.filename or "upload"
    if is_manifest_name(name):
        return Listing(manifests=[parse_manifest(upload.file.read(), name=name)])
    head = upload.file.read(len(ZIP_MAGIC))
    upload.file.seek(0)
    if not (name.lower().endswith(".zip") or head == ZIP_MAGIC):
        return Listing(entries=[Entry(name, functools.partial(_read_upload, upload))])
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    limits = ZipLimits(
        max_members=settings.max_zip_members,
        max_ratio=settings.max_zip_ratio,
        max_total_bytes=ZIP_EXPANSION_OF_UPLOAD_LIMIT * settings.max_upload_bytes,
    )
    try:
        archive: zipfile.ZipFile = open_zip(upload.file, size=size, limits=limits)
    except Invalid as exc:
        # A broken zip is a corrupt file like any other: skipped, the rest kept.
        return Listing(skipped=[SkippedFile(name=name, reason=str(exc))])
    return zip_listing(archive)


def _read_upload(upload: UploadFile) -> bytes:
    # Called twice (to check, then to store): the spooled upload is seekable.
    upload.file.seek(0)
    return upload.file.read()


@router.get("/projects/{project_id}/items", summary="A page of the project's items")
def list_items(
    project_id: ProjectId,
    session: SessionDep,
    user: CurrentUser,
    status_filter: Annotated[
        ItemStatus | None, Query(alias="status", description="Only items in this state.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: ItemCursor = None,
) -> ItemPage:
    get_visible_project(session=session, user=user, project_id=project_id)
    return service.list_items(
        session=session,
        project_id=project_id,
        annotator_id=user.id,
        status=status_filter,
        limit=limit,
        cursor=cursor,
    )


@router.get("/items/{item_id}", summary="One item, with your label if you gave one")
def get_item(item_id: ItemId, session: SessionDep, user: CurrentUser) -> ItemPublic:
    item = service.get_visible_item(session=session, user=user, item_id=item_id)
    return service.to_public(session=session, items=[item], annotator_id=user.id)[0]


@router.get(
    "/items/{item_id}/image",
    summary="The image bytes (immutable: cache them)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, 304: {}},
)
def get_image(
    item_id: ItemId, request: Request, session: SessionDep, store: StoreDep, user: CurrentUser
) -> Response:
    item = service.get_visible_item(session=session, user=user, item_id=item_id)
    etag = f'"{item.sha256}"'
    headers = {"ETag": etag, **IMAGE_CACHE_HEADERS}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        data = store.get(item.file_key)
    except FileNotFoundError:
        raise NotFound(f"The image file of item {item_id} is missing from storage.") from None
    return Response(content=data, media_type=sniff_media_type(data), headers=headers)
