from __future__ import annotations

from tests.app.conftest import Api


def test_project_roundtrip(api: Api) -> None:
    project = api.project()
    ids = api.upload_images(project["id"], 5)
    ann = api.user("ann", projects=[project["id"]])
    served = api.next(project["id"], ann, n=2)
    assert len(served) == 2
    response = api.label(served[0]["item"]["id"], "cat", ann)
    assert response.status_code == 201, response.text
    assert set(ids) >= {s["item"]["id"] for s in served}
