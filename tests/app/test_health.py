"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from core.logs import configure_logging
from core.settings import REPO_ROOT, Settings
from tests.app.conftest import Api


def test_healthz_and_readyz(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_503_when_the_broker_is_unreachable(settings: Settings) -> None:
    # Nothing listens on port 1: the Redis ping fails fast.
    app = create_app(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


@pytest.mark.redis
def test_readyz_pings_a_real_redis(settings: Settings) -> None:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    app = create_app(settings.model_copy(update={"broker_url": "redis://127.0.0.1:6379/15"}))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == "ok"


def test_prometheus_metrics_count_requests_labels_and_next(api: Api) -> None:
    pid = api.project()["id"]
    api.upload_images(pid, 3)
    (served,) = api.next(pid, api.admin_token)
    api.label(served["item"]["id"], "cat", api.admin_token)
    text = api.client.get("/metrics").text
    assert "nextlabel_labels_created_total 1.0" in text
    assert 'nextlabel_next_items_served_total{strategy="random"} 1.0' in text
    assert (
        'nextlabel_http_requests_total{method="GET",route="/api/v1/projects/{project_id}/next",'
        'status="200"} 1.0'
    ) in text
    assert 'nextlabel_http_request_duration_seconds_bucket{le="0.5",method="POST"' in text


def test_ui_pages_are_served_or_a_clear_404(api: Api) -> None:
    for path, name in (("/", "index.html"), ("/dashboard", "dashboard.html")):
        response = api.client.get(path)
        if (REPO_ROOT / "frontend" / name).is_file():
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
        else:
            assert response.status_code == 404
            assert name in response.json()["detail"]


def test_openapi_lists_the_api(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/projects/{project_id}/next",
        "/api/v1/items/{item_id}/labels",
        "/api/v1/projects/{project_id}/export",
        "/readyz",
    ):
        assert path in paths


def test_the_api_and_cli_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import app.main, app.cli\n"
        "app.main.create_app\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    env = {**os.environ, "NEXTLABEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("NEXTLABEL_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_logs_are_json_in_production_and_text_in_development(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "INFO"}))
    logging.getLogger("nextlabel.test").info("round queued", extra={"round_id": 7})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert (record["message"], record["round_id"], record["level"]) == ("round queued", 7, "info")
    configure_logging(settings.model_copy(update={"log_format": "text", "log_level": "INFO"}))
    logging.getLogger("nextlabel.test").info("round queued", extra={"round_id": 8})
    text = capsys.readouterr().err.strip().splitlines()[-1]
    assert text.endswith("nextlabel.test: round queued round_id=8")
    production = Settings(environment="production", secret_key="s3cret", log_format="auto")
    assert production.json_logs and not settings.json_logs
    configure_logging(settings)
