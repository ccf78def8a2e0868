"""The pure logic must never need a JVM: udfs/ and features/ do not import pyflink."""
import ast
from pathlib import Path

import pytest

from lifeguard import PROJECT_ROOT

PURE_MODULES = sorted(p for folder in ("udfs", "features") for p in (PROJECT_ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_does_not_import_pyflink(path: Path):
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.split(".")[0] == "pyflink" for name in imported)


def test_there_are_pure_modules_to_check():
    assert len(PURE_MODULES) >= 5
