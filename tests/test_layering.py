"""Where each package may reach: the ground (lifeguard/: config, schemas, the user profile) imports nothing
above it; the pure logic (udfs/, features/) needs no JVM; jobs and models build on those; tools sit apart
and may use everything, while nothing of the product imports them. The job shipped to a cluster carries
every package it imports."""
import ast
import sys
from pathlib import Path

import pytest

from lifeguard import PROJECT_ROOT
from tools.local import JOB_FOLDERS

# package -> the project's packages it may import (besides itself).
ALLOWED = {
    "lifeguard": set(),
    "udfs": {"lifeguard"},
    "feature_repo": {"lifeguard"},
    "features": {"lifeguard", "feature_repo"},
    "jobs": {"lifeguard", "udfs", "features", "feature_repo"},
    "models": {"lifeguard", "udfs"},
    "review": {"lifeguard", "udfs"},
    "tools": {"lifeguard", "udfs", "features", "feature_repo", "jobs", "models", "review"},
}
PURE = ("udfs", "features")


def _modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    return {name.split(".")[0] for name in names}


def _project_imports(package: str) -> set[str]:
    return {top for path in _modules(package) for top in _imported(path) if top in ALLOWED} - {package}


def test_every_package_of_the_project_has_a_rule():
    packages = {p.name for p in PROJECT_ROOT.iterdir() if (p / "__init__.py").exists()} - {"tests"}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_lies_below_it(package: str):
    assert _project_imports(package) <= ALLOWED[package], f"{package} imports {_project_imports(package) - ALLOWED[package]}"


@pytest.mark.parametrize("path", [p for package in PURE for p in _modules(package)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_does_not_import_pyflink(path: Path):
    assert "pyflink" not in _imported(path)


def test_a_submitted_job_ships_every_package_it_imports():
    shipped = {folder for folder in JOB_FOLDERS if (PROJECT_ROOT / folder / "__init__.py").exists()}
    reached, frontier = set(), {"jobs"}
    while frontier:
        package = frontier.pop()
        reached.add(package)
        frontier |= _project_imports(package) - reached
    assert reached <= shipped and "tools" not in shipped


def test_the_rules_see_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a ground module importing a tool is found."""
    (tmp_path / "lifeguard").mkdir()
    (tmp_path / "lifeguard" / "__init__.py").write_text("")
    (tmp_path / "lifeguard" / "bad.py").write_text("from tools.cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "PROJECT_ROOT", tmp_path)
    assert _project_imports("lifeguard") == {"tools"}
