"""The layering written in the README's Architecture section: a lower layer never imports a higher one.

Every ``import`` statement of every module is read (inside functions too), relative imports resolved.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ensemble", "members", "fusion")

#: layer -> the project modules (prefixes) it may import; the verbs in ``ensemble`` may import anything.
ALLOWED = {
    "ensemble.core": ("ensemble.core",),
    "members": ("ensemble.core", "members"),
    "fusion": ("ensemble.core", "fusion"),
}


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path):
    """(line, imported module) for every import of a project package in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            # ``from . import x`` may import a submodule x
            targets = [stem] if node.module else [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets if t.split(".")[0] in PACKAGES]
    return found


def layer_of(module):
    for layer in ALLOWED:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def violations():
    bad = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            layer = layer_of(module_name(path))
            if layer is None:
                continue
            for line, target in project_imports(path):
                if target in ("ensemble", "ensemble.FORMAT_VERSION", "ensemble.__version__"):
                    continue  # the package root holds only metadata
                if not any(target == ok or target.startswith(ok + ".") for ok in ALLOWED[layer]):
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {target}")
    return bad


def test_lower_layers_never_import_higher_ones():
    assert violations() == []


def test_package_root_imports_nothing():
    tree = ast.parse((ROOT / "ensemble" / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: a foundation module importing a verb is reported, with relative imports resolved."""
    fake = tmp_path / "ensemble" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..predict import Predictor\n    import members.unet\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [t for _, t in project_imports(fake / "bad.py")] == ["ensemble.predict", "members.unet"]
    assert len(violations()) == 2


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_has_modules(layer):
    assert list((ROOT / Path(*layer.split("."))).rglob("*.py"))
