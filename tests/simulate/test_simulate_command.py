"""`nextlabel simulate` without the simulator in the API: registered lazily, forwarded whole.

The simulator (simulate/) talks to the service over HTTP or starts it as a process; the API
(app/) must install and run without the simulator's dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli

REPO = Path(__file__).resolve().parents[2]
SIMULATE_OPTIONS = ("--dataset", "--strategy", "--batch-size", "--seeds", "--mc-samples", "--url")


def test_nextlabel_simulate_help_is_the_simulators_own() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"], prog_name="nextlabel")
    assert result.exit_code == 0, result.output
    assert "Usage: nextlabel simulate [OPTIONS]" in result.output
    for option in SIMULATE_OPTIONS:
        assert option in result.output


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_nextlabel_simulate_forwards_its_arguments(tmp_path: Path) -> None:
    # A bad --seeds fails in simulate.cli's own checks, before any service starts. In a
    # subprocess: the command sets up logging and a SIGTERM handler for its process.
    argv = ["nextlabel", "simulate", "-b", "5", "--seeds=none", "--out", str(tmp_path)]
    completed = _python(f"import sys; sys.argv = {argv!r}; from app.cli import main; main()")
    assert completed.returncode == 2, completed.stderr
    assert "seeds must be a count or a comma list, not 'none'" in completed.stderr
    assert "nextlabel simulate --help" in completed.stderr


def test_importing_the_cli_leaves_the_simulator_unimported() -> None:
    completed = _python(
        "import sys, app.cli; "
        "print(sorted(m for m in ('simulate', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_simulate_without_its_dependencies_names_the_extra() -> None:
    # None in sys.modules makes `import matplotlib` raise ModuleNotFoundError, as when the
    # API was installed without the simulator's extra.
    completed = _python(
        "import sys; sys.modules['matplotlib'] = None; sys.argv = ['nextlabel', 'simulate']; "
        "from app.cli import main; main()"
    )
    assert completed.returncode == 1
    assert "pip install 'nextlabel[sim]'" in completed.stderr


def test_the_simulator_imports_nothing_from_the_service() -> None:
    service_packages = {"app", "core", "worker"}
    for path in sorted((REPO / "simulate").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            imported = {name.split(".")[0] for name in names}
            assert not imported & service_packages, f"{path.name} imports {imported}"
