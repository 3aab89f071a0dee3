"""The layers, declared once here (and shown in the README's "Layers" table): the torch-free layer never imports
torch or a module of the torch layer; training imports down, never the other way round.

Two checks, over every module found by walking the package folders (new modules are covered without editing this
file): the imports of each module read with `ast` (at module level and inside functions), and a subprocess that
imports every torch-free module while importing torch (or any other optional dependency) raises.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The torch-free layer: the package itself, and these modules with everything below them. The rest of `hbci` and
# `hbci.export` is the torch layer.
TORCH_FREE = ("hbci.runtime", "hbci.calibration", "hbci.synth", "hbci.metrics", "hbci.datasets", "hbci.bench",
              "hbci.caption_order")
TORCH_FREE_EXACT = ("hbci",)
# Torch-free modules that may import torch (and the torch layer) inside a function, to compare against torch eager
# and to build models when torch is there.
LAZY_TORCH = ("hbci.bench",)
TORCH = ("torch", "torchvision", "open_clip")
# Optional dependencies (the pip extras): a torch-free module imports them only inside the function that needs them.
OPTIONAL = ("onnx", "onnxscript", "safetensors", "tqdm", "matplotlib", "tensorrt", "cuda", "modelopt", "usearch",
            "pymilvus", "milvus_lite", "fastapi", "starlette", "uvicorn", "pydantic", "yaml", "paho", "prometheus_client")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def torch_free(module: str) -> bool:
    return module in TORCH_FREE_EXACT or _under(module, TORCH_FREE)


def discover() -> dict[str, Path]:
    """Every module of the distribution: {import name: file}, from pyproject's package-dir mapping."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dir.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = discover()


def imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in a file, resolved to the longest known name."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, top, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, top, child.lineno))
            visit(child, inside)

    visit(tree, True)
    return found


def test_the_walk_finds_the_layers():
    free = {m for m in MODULES if torch_free(m)}
    for expected in ("hbci", "hbci.runtime.cli", "hbci.runtime.monitor", "hbci.runtime.sources", "hbci.runtime.demo",
                     "hbci.runtime.pipeline", "hbci.runtime.windows", "hbci.runtime.bundle", "hbci.calibration.gate",
                     "hbci.metrics", "hbci.datasets.msrvtt"):
        assert expected in free, expected
    assert "hbci.model" in MODULES and not torch_free("hbci.model")
    assert "hbci.export.bundle" in MODULES and not torch_free("hbci.export.bundle")
    assert "hbci.runtime" not in {m for m in MODULES if m.startswith("hbci.export")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if torch_free(m)))
def test_torch_free_modules_import_nothing_from_the_torch_layer(module):
    problems = []
    for name, top, line in imports(module, MODULES[module]):
        if _under(name, TORCH) and (top or not _under(module, LAZY_TORCH)):
            problems.append(f"line {line}: imports {name}")
        elif name in MODULES and not torch_free(name) and (top or not _under(module, LAZY_TORCH)):
            problems.append(f"line {line}: imports {name} (torch layer)")
        elif top and _under(name, OPTIONAL):
            problems.append(f"line {line}: imports the optional {name} at module level")
    assert not problems, f"{module}: " + "; ".join(problems)


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: a torch-free module must not import it")
        return None

sys.meta_path.insert(0, Blocker())
import importlib
failed = []
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except Exception as exc:
        failed.append(f"{{module}}: {{type(exc).__name__}}: {{exc}}")
print("FAILED", failed)
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
sys.exit(1 if failed else 0)
"""


def test_every_torch_free_module_imports_where_torch_cannot():
    modules = sorted(m for m in MODULES if torch_free(m))
    code = BLOCKER.format(blocked=TORCH + OPTIONAL, modules=modules)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED []" in result.stdout and "LOADED []" in result.stdout


def test_the_readme_shows_the_same_list():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("<!-- layers: the list in tests/test_layers.py -->"):].split("\n\n")[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[3:]]
    shown = {cell.strip().strip("`").removesuffix(".**") for cell, layer in rows if layer.strip() == "torch-free"}
    assert shown == set(TORCH_FREE) | set(TORCH_FREE_EXACT)
