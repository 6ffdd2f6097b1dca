"""Uploads: images, zips with labels.csv, and every kind of bad file."""

from __future__ import annotations

import io
import zipfile

import httpx
from sqlalchemy import func, select

from app.services.imports import ZipLimits, iter_zip, open_zip
from core.tables import Item, Split
from tests.app.conftest import Api, png_bytes, zip_bytes

CORRUPT_PNG = png_bytes(999)[:40]  # a PNG header with its pixel data cut off


def _count_items(api: Api) -> int:
    with api.app.state.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Item)) or 0


def test_upload_50_images_and_a_zip_with_corrupt_file_and_labels_csv(api: Api) -> None:
    project = api.project()
    pid = project["id"]
    images = [(f"img{seed:03d}.png", png_bytes(seed)) for seed in range(50)]
    archive = zip_bytes(
        {
            "batch/a.png": png_bytes(100),
            "batch/b.png": png_bytes(101),
            "batch/broken.png": CORRUPT_PNG,
            "val/v1.png": png_bytes(200),
            "val/v2.png": png_bytes(201),
            "labels.csv": b"filename,label\nval/v1.png,cat\nv2.png,dog\n",
        }
    )
    response = api.upload(pid, [*images, ("more.zip", archive)])
    assert response.status_code == 200, response.text
    report = response.json()
    assert len(report["created"]) == 54
    assert report["skipped"] == [
        {"name": "batch/broken.png", "reason": report["skipped"][0]["reason"]}
    ]
    assert "corrupt" in report["skipped"][0]["reason"] or "image" in report["skipped"][0]["reason"]

    counts = api.get(f"/api/v1/projects/{pid}").json()["counts"]
    assert counts == {
        "items": 54,
        "pool": 52,
        "validation": 2,
        "labelled": 0,
        "near_duplicates": 0,
        "duplicates_skipped": 0,
    }
    page = api.get(f"/api/v1/projects/{pid}/items", params={"status": "validation"}).json()
    known = {item["filename"]: item["known_label"] for item in page["items"]}
    assert known == {"val/v1.png": "cat", "val/v2.png": "dog"}
    first = api.get(f"/api/v1/items/{report['created'][0]}").json()
    assert (first["filename"], first["width"], first["height"]) == ("img000.png", 8, 8)
    assert first["split"] == "pool"


def test_duplicates_are_skipped_within_and_across_uploads(api: Api) -> None:
    pid = api.project()["id"]
    first = api.upload(pid, [("a.png", png_bytes(1)), ("a-again.png", png_bytes(1))]).json()
    assert len(first["created"]) == 1
    assert first["skipped"] == [{"name": "a-again.png", "reason": "duplicate"}]
    second = api.upload(pid, [("b.png", png_bytes(1)), ("c.png", png_bytes(2))]).json()
    assert len(second["created"]) == 1
    assert second["skipped"] == [{"name": "b.png", "reason": "duplicate"}]
    # The same image may live in another project.
    other = api.project("other")["id"]
    assert len(api.upload(other, [("a.png", png_bytes(1))]).json()["created"]) == 1


def test_non_image_and_corrupt_files_are_skipped_and_the_rest_kept(api: Api) -> None:
    pid = api.project()["id"]
    report = api.upload(
        pid,
        [("notes.txt", b"hello"), ("ok.png", png_bytes(5)), ("broken.png", CORRUPT_PNG)],
    ).json()
    assert len(report["created"]) == 1
    reasons = {skip["name"]: skip["reason"] for skip in report["skipped"]}
    assert set(reasons) == {"notes.txt", "broken.png"}
    assert "not an image" in reasons["notes.txt"]


def test_image_over_pixel_limit_is_skipped(api: Api) -> None:
    api.app.state.settings.max_image_pixels = 100
    pid = api.project()["id"]
    report = api.upload(pid, [("big.png", png_bytes(1, size=11)), ("ok.png", png_bytes(2))])
    body = report.json()
    assert len(body["created"]) == 1
    assert body["skipped"][0]["name"] == "big.png"
    assert "limit is 100" in body["skipped"][0]["reason"]


def test_zip_with_path_traversal_names_skips_them(api: Api) -> None:
    pid = api.project()["id"]
    archive = zip_bytes(
        {
            "../evil.png": png_bytes(1),
            "/etc/abs.png": png_bytes(2),
            "ok/../../up.png": png_bytes(3),
            "C:/win.png": png_bytes(4),
            "fine/good.png": png_bytes(5),
        }
    )
    report = api.upload(pid, [("x.zip", archive)]).json()
    assert len(report["created"]) == 1
    unsafe = sorted(s["name"] for s in report["skipped"] if s["reason"] == "unsafe path")
    assert unsafe == ["../evil.png", "/etc/abs.png", "C:/win.png", "ok/../../up.png"]


def test_zip_bomb_is_refused_whole_with_nothing_written(api: Api) -> None:
    pid = api.project()["id"]
    bomb = zip_bytes({"ok.png": png_bytes(1), "zeros.png": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 200_000
    response = api.upload(pid, [("plain.png", png_bytes(2)), ("bomb.zip", bomb)])
    assert response.status_code == 413
    assert "zip bomb" in response.json()["detail"]
    assert _count_items(api) == 0
    assert not [p for p in api.app.state.settings.image_dir.rglob("*") if p.is_file()]


def test_zip_with_too_many_members_is_refused(api: Api) -> None:
    api.app.state.settings.max_zip_members = 3
    pid = api.project()["id"]
    archive = zip_bytes({f"{i}.png": png_bytes(i) for i in range(4)})
    response = api.upload(pid, [("many.zip", archive)])
    assert response.status_code == 413
    assert "4 entries" in response.json()["detail"]
    assert _count_items(api) == 0


def test_unreadable_zip_is_skipped_and_the_rest_kept(api: Api) -> None:
    pid = api.project()["id"]
    response = api.upload(
        pid, [("fake.zip", b"PK\x03\x04 definitely not a zip"), ("ok.png", png_bytes(1))]
    )
    assert response.status_code == 200
    report = response.json()
    assert len(report["created"]) == 1
    assert report["skipped"][0]["name"] == "fake.zip"
    assert "zip file cannot be read" in report["skipped"][0]["reason"]


def test_labels_csv_with_unknown_class_refuses_then_skips_that_file_with_reason(api: Api) -> None:
    pid = api.project()["id"]
    archive = zip_bytes(
        {
            "a.png": png_bytes(1),
            "b.png": png_bytes(2),
            "labels.csv": b"a.png,cat\nb.png,unicorn\nmissing.png,dog\n",
        }
    )
    # A label would be lost: nothing is written (issue 18; tests/app/test_import_labels.py).
    refused = api.upload(pid, [("v.zip", archive)])
    assert refused.status_code == 422
    assert _count_items(api) == 0
    response = api.post(
        f"/api/v1/projects/{pid}/items",
        params={"skip_problems": "true"},
        files=[("files", ("v.zip", archive, "application/zip"))],
    )
    report = response.json()
    assert len(report["created"]) == 1
    reasons = {s["name"]: s["reason"] for s in report["problems"]}
    assert (
        "'unicorn'" in reasons["b.png"] and "not one of the project's classes" in reasons["b.png"]
    )
    assert "not among the files imported" in reasons["missing.png"]


def test_upload_over_size_limit_is_413(small_limit_api: Api) -> None:
    api = small_limit_api
    pid = api.project()["id"]
    big = png_bytes(1, size=200)
    response = api.upload(pid, [("big.png", big)])
    assert response.status_code == 413
    assert "upload limit" in response.json()["detail"]
    assert _count_items(api) == 0


def test_chunked_upload_over_size_limit_is_413_while_reading(small_limit_api: Api) -> None:
    api = small_limit_api
    pid = api.project()["id"]
    boundary = "nextlabelboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="b.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes(1, size=200)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks() -> httpx.SyncByteStream:  # no Content-Length: the server must count
        return iter(body[i : i + 4096] for i in range(0, len(body), 4096))  # type: ignore[return-value]

    response = api.client.post(
        f"/api/v1/projects/{pid}/items",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {api.admin_token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert response.status_code == 413
    assert "upload limit" in response.json()["detail"]
    assert _count_items(api) == 0


def test_list_items_pages_and_filters(api: Api) -> None:
    pid = api.project()["id"]
    ids = api.upload_images(pid, 7)
    ann = api.user("ann", projects=[pid])
    api.label(ids[0], "cat", ann)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, int | str] = {"limit": 3, "status": "unlabelled"}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.get(f"/api/v1/projects/{pid}/items", ann, params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[1:]
    labelled = api.get(f"/api/v1/projects/{pid}/items", ann, params={"status": "labelled"}).json()
    assert [(i["id"], i["my_label"], i["label_count"]) for i in labelled["items"]] == [
        (ids[0], "cat", 1)
    ]


def test_image_endpoint_serves_bytes_with_cache_headers(api: Api) -> None:
    pid = api.project()["id"]
    data = png_bytes(3)
    item_id = api.upload(pid, [("x.png", data)]).json()["created"][0]
    response = api.get(f"/api/v1/items/{item_id}/image")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    # A browser's cache is shared by whoever uses it: a cached copy answers only the token
    # that fetched it (tests/e2e/test_image_cache.py checks this in Chromium).
    assert response.headers["vary"] == "Authorization"
    etag = response.headers["etag"]
    again = api.client.get(
        f"/api/v1/items/{item_id}/image",
        headers={"Authorization": f"Bearer {api.admin_token}", "If-None-Match": etag},
    )
    assert again.status_code == 304
    assert again.headers["vary"] == "Authorization"


def test_validation_items_are_never_served_by_next(api: Api) -> None:
    pid = api.project()["id"]
    archive = zip_bytes({"v.png": png_bytes(1), "labels.csv": b"v.png,cat\n"})
    api.upload(pid, [("v.zip", archive)])
    ann = api.user("ann", projects=[pid])
    assert api.next(pid, ann, n=5) == []
    with api.app.state.session_factory() as session:
        assert session.scalar(select(Item.split)) == Split.validation


def test_zip_member_reader_rejects_corrupt_member() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", png_bytes(1))
    raw = bytearray(buffer.getvalue())
    raw[40] ^= 0xFF  # flip a byte of the compressed data: CRC or inflate must fail
    opened = open_zip(io.BytesIO(bytes(raw)), size=len(raw), limits=ZipLimits(10, 200, None))
    results = list(iter_zip(opened))
    assert len(results) == 1
    assert getattr(results[0], "reason", "").startswith("corrupt zip entry")
