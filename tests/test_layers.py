"""The package layers import only downwards (flashnpu/__init__.py): spec <- hw, sw <- cosim <- flashnpu."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What each layer may import of flashnpu, besides itself.
ALLOWED = {
    "spec": set(),
    "hw": {"spec"},
    "sw": {"spec"},
    "cosim": {"spec", "hw", "sw"},
}


def _imports(path: Path):
    """Every ``flashnpu.<layer>`` a module imports, anywhere in it (lazy imports included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "flashnpu":
                yield node.lineno, parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downwards(layer):
    bad = set()
    for path in sorted((ROOT / layer).glob("*.py")):
        for line, target in _imports(path):
            if target in ALLOWED or target == "":
                if target != layer and target not in ALLOWED[layer]:
                    bad.add(f"{layer}/{path.name}:{line} imports flashnpu.{target or '(top)'}")
            elif target != layer:
                # flashnpu.<module> of the top package (driver, cli, bench, ...): above every layer.
                bad.add(f"{layer}/{path.name}:{line} imports flashnpu.{target}")
    assert not bad, "\n".join(sorted(bad))
