"""The layering written in the README's Architecture section: a lower layer never imports a higher one.

Every ``import`` statement of every module is read (inside functions too), relative imports resolved.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ensemble", "members", "fusion")

#: The modules of member training: what inference, evaluation and reporting never import.
TRAINING = ("ensemble.train", "members.training", "members.config", "members.batches", "members.validation",
            "members.optim", "members.warmstart", "members.parallel", "members.stacked_training", "members.presets",
            "members.overrides", "members.losses", "members.workers")
#: The network definitions and checkpoints inference may load (members' modules that train nothing).
NETWORKS = ("members.unet", "members.blocks", "members.stacked", "members.checkpoint")

#: layer -> the project modules (prefixes) it may import; the verbs in ``ensemble`` may import anything.
ALLOWED = {
    "ensemble.core": ("ensemble.core",),
    "members": ("ensemble.core", "members"),
    "fusion": ("ensemble.core", "fusion"),
    "ensemble.reporting": ("ensemble.core", "ensemble.reporting"),
    "ensemble.inference": ("ensemble.core", "ensemble.inference", "fusion", *NETWORKS),
    "ensemble.evaluation": ("ensemble.core", "ensemble.evaluation", "ensemble.inference", "ensemble.reporting",
                            "fusion", *NETWORKS),
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


def test_inference_and_evaluation_never_import_training():
    """What serves and scores a run loads no training code (no joblib, no optimiser, no presets)."""
    bad = [f"{path.relative_to(ROOT)}:{line} imports {target}"
           for package in ("inference", "evaluation", "reporting")
           for path in sorted((ROOT / "ensemble" / package).rglob("*.py"))
           for line, target in project_imports(path)
           if any(target == t or target.startswith(t + ".") for t in TRAINING)]
    assert bad == []


#: The most positional parameters a function of the packages may take (``self``/``cls`` not counted); the
#: rest are keyword-only, so a call names what it passes and a new option cannot shift the others.
MAX_POSITIONAL = 6


def long_signatures(root=ROOT):
    """``path:line name (n)`` of every function of the packages with more than :data:`MAX_POSITIONAL`
    positional parameters."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                    if len(names) > MAX_POSITIONAL:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({len(names)})")
    return found


def test_no_function_takes_more_than_six_positional_parameters():
    assert long_signatures() == []


def test_the_signature_check_sees_a_long_one(tmp_path):
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "ensemble" / "m.py").write_text("def f(a, b, c, d, e, f, g, *, h=1):\n    pass\n"
                                                "def ok(self, a, b, c, d, e, f, *, g=1):\n    pass\n")
    assert long_signatures(tmp_path) == ["ensemble/m.py:1 f (7)"]


#: Modules ``ensemble/`` may hold beside its sub-packages: the verbs and the surfaces (API, CLI).
MAX_FLAT_MODULES = 10


def test_ensemble_keeps_its_modules_in_sub_packages():
    flat = sorted(p.name for p in (ROOT / "ensemble").glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, flat
    assert {p.name for p in (ROOT / "ensemble").iterdir() if (p / "__init__.py").exists()} >= \
        {"core", "inference", "evaluation", "reporting"}


#: The most lines a module of the packages may have: past it, a module holds more than one concern.
MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {str(path.relative_to(ROOT)): n for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


#: The most parameters a public function of the packages takes, ``*args`` and ``**keywords`` counted as one each:
#: more options travel in one options object (``InferenceOptions``, ``PredictSettings``, ``EvaluateSettings``,
#: ``TrainOptions``), or as keywords that build it in one place.
MAX_PARAMETERS = 8


def test_no_public_function_takes_more_than_eight_parameters():
    wide = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
                    continue
                args = node.args
                names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
                count = len(names) - (names[:1] in (["self"], ["cls"])) + bool(args.vararg) + bool(args.kwarg)
                if count > MAX_PARAMETERS:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count})")
    assert not wide, f"public functions with more than {MAX_PARAMETERS} parameters: {wide}"
