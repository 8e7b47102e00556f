"""Runtime and tools apart: the runtime package never imports the tools, and its wheel carries none of them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "components" / "yolo_edge"
TOOLS = ROOT / "tools" / "yolo_edge_tools"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(RUNTIME.parent).parts[:-1])  # e.g. yolo_edge.backends
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_runtime_imports_nothing_from_the_tools():
    arrows = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.startswith("yolo_edge_tools"))
              for path in RUNTIME.rglob("*.py")}
    assert not {path: modules for path, modules in arrows.items() if modules}
    # The tools' own modules are where the runtime used to keep them: none of those names is in the runtime.
    tool_names = {path.stem for path in TOOLS.glob("*.py")} - {"__init__"}
    assert not tool_names & {path.stem for path in RUNTIME.rglob("*.py")}


def test_the_import_check_sees_relative_imports():
    modules = imported_modules(RUNTIME / "controller.py")
    assert "yolo_edge.transitions" in modules and "yolo_edge.run" in modules


@pytest.mark.slow
def test_the_runtime_wheel_holds_no_tool_module(tmp_path: Path):
    # From a copy of what the component build puts in the wheel's source tree (no stale build/ folder).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "components"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("yolo_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert "yolo_edge/controller.py" in modules and "yolo_edge/backends/onnx.py" in modules
    assert not [name for name in modules if not name.startswith("yolo_edge/")], modules
    tool_names = {f"yolo_edge/{path.name}" for path in TOOLS.glob("*.py")} - {"yolo_edge/__init__.py"}
    assert not tool_names & set(modules)
