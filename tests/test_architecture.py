"""The package's shape, checked: the analysis never loads torch, and imports run one way."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ablation"
# Reading records, tabulating, plotting and writing the README: no model code, so no torch
# (it was 2.2 s of `ablation table`'s 4 s start).
ANALYSIS = ("spec", "config", "records", "stats", "aggregate", "readings", "render", "plots", "tb_export")


def test_the_analysis_does_not_import_torch():
    code = ("import sys\n"
            + "".join(f"import ablation.{m}\n" for m in ANALYSIS)
            + "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ablation")):
            parts = (node.module or "").split(".")
            name = parts[0] if node.level == 1 else (parts[1] if len(parts) > 1 else "")
            found.update([name] if name else [a.name for a in node.names])
    return found


def test_no_import_circle():
    """cli -> grid -> executors -> job -> train -> model -> cell -> fused, and so on: a module
    never imports (even lazily, inside a function) one that imports it back."""
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    graph = {m: imports(p) & set(modules) - {m} for m, p in modules.items()}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    circles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert circles == [], f"import circles through: {circles}"
    assert "executors" in graph["grid"] and "job" in graph["executors"] and "train" in graph["job"]
