"""What the browser tests build on: a real nextlabel server, digits projects, page checks.

The server is uvicorn running `create_app()` in a subprocess, on 127.0.0.1 with a data folder
of its own (SQLite, local images, the embedded broker; no worker). A subprocess, not a
thread, because one test stops the server and starts it again on the same port.

Only the first admin is made behind the API's back (through app.services, as `nextlabel
create-user` does); everything else goes through the public REST API, like the UI itself.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import ConsoleMessage, Page
from sklearn.datasets import load_digits
from sqlalchemy.orm import Session

from app.services.annotators import create_annotator
from core.db import make_engine
from core.settings import Settings
from core.tables import Role

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# What Chromium logs by itself when a fetch finds no server: expected while a test has
# stopped the server on purpose, and nothing else is.
REFUSED = re.compile(r"Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET)")


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`uvicorn app.main:create_app` in a subprocess; stop() and start() keep port and data."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "NEXTLABEL_DATA_DIR": str(self.data_dir),
            "NEXTLABEL_ENVIRONMENT": "test",
            "NEXTLABEL_EMBEDDED_WORKER": "false",
            "NEXTLABEL_LOG_LEVEL": "WARNING",
        }

    def start(self) -> None:
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, environment="test", embedded_worker=False)


def bootstrap_admin(server: Server, name: str = "admin") -> str:
    """The first admin, made in the database as `nextlabel create-user --role admin` does."""
    engine = make_engine(server.settings().resolved_database_url)
    try:
        with Session(engine) as session:
            _, token = create_annotator(session=session, name=name, role=Role.admin)
    finally:
        engine.dispose()
    return token


def start_server(tmp_path: Path) -> Server:
    server = Server(tmp_path, free_port())
    server.start()
    return server


# --------------------------------------------------------------------------- the API


class Api:
    """The REST API as the tests use it to set up and to check what the UI did."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=f"{base_url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code < 400, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        if not response.content:
            return None
        kind = response.headers.get("content-type", "")
        return response.json() if "json" in kind else response.text

    def labels(self, project_id: int) -> list[dict[str, Any]]:
        """The project's current labels, from the JSON export."""
        exported = self("GET", f"/projects/{project_id}/export", params={"format": "json"})
        data = json.loads(exported) if isinstance(exported, str) else exported
        return list(data["labels"] if isinstance(data, dict) else data)

    def metrics(self, project_id: int) -> dict[str, Any]:
        return self("GET", f"/projects/{project_id}/metrics")


def digit_pngs(count: int, offset: int = 0) -> list[tuple[str, bytes, int]]:
    """(file name, PNG bytes, true digit): scikit-learn's 8×8 digits scaled to 28×28."""
    digits = load_digits()
    out = []
    for index in range(offset, offset + count):
        pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((28, 28), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        digit = int(digits.target[index])
        out.append((f"digit-{index:04d}.png", buffer.getvalue(), digit))
    return out


def validation_zip(images: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of images with a labels.csv: the API imports them as validation items."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["filename", "label"])
        for name, data, digit in images:
            archive.writestr(name, data)
            writer.writerow([name, str(digit)])
        archive.writestr("labels.csv", rows.getvalue())
    return buffer.getvalue()


@dataclass
class Project:
    id: int
    name: str
    classes: list[str]
    annotator_id: int
    annotator_token: str
    truth: dict[str, int] = field(default_factory=dict)  # file name → digit

    def digit_of(self, filename: str) -> int:
        return self.truth[filename]


_PROJECT_NUMBERS = itertools.count(1)


def create_project(
    server: Server, admin_token: str, *, pool: int = 40, validation: int = 0, **settings: Any
) -> Project:
    """A digits project with pool (and optionally validation) images and a new annotator."""
    admin = Api(server.url, admin_token)
    tag = next(_PROJECT_NUMBERS)
    classes = [str(digit) for digit in range(10)]
    # The tests look the truth up by the file name `next` serves, which annotators get only
    # where the project shows file names; tests of the hidden default pass False.
    settings.setdefault("show_filenames", True)
    created = admin(
        "POST", "/projects", json={"name": f"digits-{tag}", "classes": classes, **settings}
    )  # fmt: skip
    # Images are unique per project only, so every project may use the same digits.
    pool_images = digit_pngs(pool)
    files = [("files", (name, data, "image/png")) for name, data, _ in pool_images]
    report = admin("POST", f"/projects/{created['id']}/items", files=files)
    assert len(report["created"]) == pool, report
    if validation:
        archive = validation_zip(digit_pngs(validation, offset=pool))
        report = admin(
            "POST", f"/projects/{created['id']}/items",
            files=[("files", ("validation.zip", archive, "application/zip"))],
        )  # fmt: skip
        assert len(report["created"]) == validation, report
    annotator = admin("POST", "/annotators", json={"name": f"annotator-{tag}", "role": "annotator"})
    admin("PUT", f"/projects/{created['id']}/members/{annotator['id']}")
    truth = {name: digit for name, _, digit in pool_images}
    return Project(
        created["id"], created["name"], classes, annotator["id"], annotator["token"], truth
    )


# --------------------------------------------------------------------------- the browser


@dataclass
class Console:
    """Everything a page logged as an error, and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = message.text
        if any(pattern.search(text) for pattern in self.allowed):
            return
        self.errors.append(f"console.error: {text} ({message.location.get('url', '')})")


def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    """Save a PNG under test-artifacts/ (kept by CI as an artefact, ignored by git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        page.evaluate("window.scrollTo(0, 0)")  # a sticky top bar is drawn where it belongs
    page.screenshot(path=str(path), full_page=full_page)
    return path


# The dashboard at phone width (390 px), for every test that shows its panels there: every
# element wider than its box must be a region that scrolls sideways (overflow-x auto or
# scroll) and is marked as such (data-overflowing: a hint and edge shadows); nothing may
# reach past the right edge of the screen except inside such a region.
OVERFLOW_REPORT = """() => {
    const width = document.documentElement.clientWidth;
    const unmarked = [];
    const outside = [];
    const inScroller = (node) => {
        for (let up = node.parentElement; up; up = up.parentElement) {
            if (['auto', 'scroll'].includes(getComputedStyle(up).overflowX)) return true;
        }
        return false;
    };
    const name = (node) => node.id ? `#${node.id}` : `${node.tagName}.${node.className}`;
    for (const node of document.querySelectorAll('#dashboard *')) {
        if (!node.getClientRects().length) continue;
        const style = getComputedStyle(node);
        if (node.scrollWidth > node.clientWidth + 1 && node.clientWidth > 0) {
            const scrolls = ['auto', 'scroll'].includes(style.overflowX);
            if (scrolls && !node.hasAttribute('data-overflowing') && node.tagName !== 'PRE') {
                unmarked.push(name(node));
            }
        }
        const box = node.getBoundingClientRect();
        if (box.right > width + 1 && !inScroller(node)) outside.push(name(node));
    }
    return { unmarked, outside };
}"""

# --------------------------------------------------------------------------- the labelling page

# The class buttons' hotkeys, in class order: on a digits project each digit's own key
# (core/hotkeys.py).
KEYS = "0123456789"

SHOWN = """previous => {
    const now = window.nextlabel && window.nextlabel.current;
    const img = document.querySelector('#stage img');
    return Boolean(now && now.id !== previous && img && img.src === now.url && img.complete);
}"""


def wait_for_next_image(page: Page, previous: int | None) -> int:
    """Wait until an item other than `previous` is on the stage, its image drawn."""
    page.wait_for_function(SHOWN, arg=previous)
    return int(page.evaluate("nextlabel.current.id"))


def wait_until_sent(page: Page) -> None:
    # Predicates are written as functions: Playwright evaluates a bare expression with eval()
    # in the page, which the pages' Content-Security-Policy refuses.
    page.wait_for_function("() => nextlabel.pending.length === 0")
