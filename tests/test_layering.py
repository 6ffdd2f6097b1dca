"""The layering contracts in pyproject.toml hold, and breaking one fails the check.

`lint-imports` runs in the README's test command; this test shows that it bites: on a copy
of the tree where core/ imports the worker, or the API imports torch, it exits non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.settings import REPO_ROOT

LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_of_the_packages(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in ("core", "app", "worker", "simulate", "nextlabel_client"):
        shutil.copytree(REPO_ROOT / package, tree / package, ignore=_no_caches)
    shutil.copy(REPO_ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _no_caches(_dir: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def test_the_layering_contracts_hold() -> None:
    result = _lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert f"{len(contracts['contracts'])} kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/broken.py", "import worker.round.run\n", "core imports neither app nor worker"),
        ("app/broken.py", "import torch\n", "app imports neither worker nor torch"),
        ("worker/broken.py", "from app import schemas\n", "worker does not import app"),
        ("simulate/broken.py", "import core.tables\n", "simulate reaches the service over"),
        ("nextlabel_client/broken.py", "import app.schemas\n", "nextlabel_client, the public"),
    ],
)
def test_a_deliberate_violation_fails_the_check(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_of_the_packages(tmp_path)
    (tree / module).write_text(line)
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout
