"""The package's shape, checked: layers as folders, imports one way, the analysis without torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ablation"
# The layers, lowest first: a module imports only from its own layer or those before it.
# The top level (cli, tune, predict, the package face) sits above them all.
LAYERS = ("core", "kernels", "models", "tasks", "training", "running", "analysis")
TOP = "top"


def layer_of(module: str) -> str:
    """'ablation.models.cell' -> 'models'; 'ablation.cli' -> 'top'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else TOP


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
            for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent == PACKAGE}


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the package imports by absolute path"
            if (node.module or "").startswith("ablation"):
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules() else node.module
                             for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ablation"))
    return found


def test_every_module_sits_in_a_layer_folder_or_at_the_top():
    top = sorted(m for m in modules() if layer_of(m) == TOP)
    assert top == ["ablation.__init__", "ablation.__main__", "ablation.cli", "ablation.predict", "ablation.tune"]


def test_imports_run_down_the_layers():
    """core <- kernels <- models <- tasks <- training <- running <- analysis <- the top: no module
    imports (even lazily, inside a function) from a layer above its own."""
    rank = {name: k for k, name in enumerate((*LAYERS, TOP))}
    upward = sorted(f"{m} -> {dep}" for m, p in modules().items() for dep in imports(p)
                    if dep != "ablation" and rank[layer_of(dep)] > rank[layer_of(m)])
    assert upward == [], f"imports that run up the layers: {upward}"


def test_no_import_circle():
    mods = modules()
    graph = {m: {d for d in imports(p) if d in mods} - {m} for m, p in mods.items()}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    circles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert circles == [], f"import circles through: {circles}"


def test_the_analysis_and_core_do_not_import_torch():
    """Reading records, tabulating, plotting and writing the pages: no model code, so no torch."""
    light = sorted(m for m in modules() if layer_of(m) in ("core", "analysis"))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in light)
            + "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout
