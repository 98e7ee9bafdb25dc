"""The package's layers (pyproject.toml's import-linter contract, docs/design.md "Layers") hold, and
the check would catch an import that points upward."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([*LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_import_points_down_the_layers():
    result = _lint(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """A copy of the package with one model module that imports the trainer (models sit below the engine)."""
    shutil.copytree(ROOT / "src" / "maskvlp", tmp_path / "src" / "maskvlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "src" / "maskvlp" / "models" / "upward.py").write_text(
        "def late():\n    from maskvlp.engine.trainer import train  # function-level imports count too\n    return train\n")
    result = _lint(tmp_path / "src", tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "maskvlp.models.upward -> maskvlp.engine.trainer" in result.stdout


def test_the_config_layer_knows_every_registered_objective():
    from maskvlp.config import OBJECTIVE_NAMES
    from maskvlp.objectives import objective_names

    assert sorted(OBJECTIVE_NAMES) == objective_names()


def test_no_module_imports_itself_back():
    """No import cycles between modules (layers forbid cycles across layers; this covers those inside one)."""
    import grimp

    graph = grimp.build_graph("maskvlp", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if graph.chain_exists(importer=imported, imported=importer):
                cycles.append(graph.find_shortest_chain(importer=imported, imported=importer) + (imported,))
    assert not cycles, cycles[:5]
