"""The shape DESIGN.md draws, checked: layers point down, modules say what they export."""

import ast
import subprocess
import sys
from pathlib import Path

import tinystack

PACKAGE = Path(tinystack.__file__).parent
ROOT = PACKAGE.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), str(ROOT / ".importlinter")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts or path.name in ("__main__.py",):
            continue
        yield path


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_every_module_declares_what_it_exports():
    missing = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        if not tree.body or path.name == "__init__.py" and len(tree.body) <= 1:
            continue
        names = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                 if isinstance(t, ast.Name)}
        if "__all__" not in names:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
