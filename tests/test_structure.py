"""The package's shape: layers, no import cycles, lazy imports only where said why,
documented public API, and the ONNX inference path free of TensorFlow."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "birdkeras"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_layers_contract_holds():
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--no-cache"], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_import_cycle():
    graph = grimp.build_graph("birdkeras")  # function-level imports count too
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(imported, module):
                cycles.append(f"{module} -> {imported}")
    assert not cycles, cycles


def _function_level_imports(tree):
    """(line, module) of every import inside a function body."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, inner.module or ""))
    return found


def test_function_level_imports_say_why():
    unexplained = []
    for path in MODULES:
        lines = path.read_text().splitlines()
        for line, module in _function_level_imports(ast.parse(path.read_text())):
            text = lines[line - 1]
            comment = text.split("# noqa: PLC0415", 1)
            # Only the first import of a group needs the reason; the rest say "noqa".
            said = len(comment) == 2 and (comment[1].strip(" -") or "PLC0415" in lines[line - 2])
            if not said:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module}")
    assert not unexplained, unexplained


def _params(node) -> list[str]:
    args = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    return [a for a in args if a not in ("self", "cls")]


def test_public_api_is_documented():
    """Public classes have a docstring (with Args: when they take arguments), and public
    functions with more than three parameters document them (Args:, and Returns: when
    they return something)."""
    missing = []
    for path in MODULES:
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        where = _module_name(path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                doc = ast.get_docstring(node) or ""
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef)
                             and n.name == "__init__"), None)
                init_doc = (ast.get_docstring(init) or "") if init else ""
                if not doc:
                    missing.append(f"{where}.{node.name}: no docstring")
                elif init and len(_params(init)) > 1 and "Args:" not in doc + init_doc:
                    missing.append(f"{where}.{node.name}: no Args:")
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                if len(_params(node)) <= 3:
                    continue
                doc = ast.get_docstring(node) or ""
                returns = node.returns is not None and not (
                    isinstance(node.returns, ast.Constant) and node.returns.value is None)
                if "Args:" not in doc or (returns and "Returns:" not in doc):
                    missing.append(f"{where}.{node.name}: Args:/Returns:")
    assert not missing, missing


@pytest.mark.parametrize("module", ["birdkeras.export.runtime", "birdkeras.infer",
                                    "birdkeras.infer.predicting", "birdkeras.model.mel",
                                    "birdkeras.export.card", "birdkeras.audio.io"])
def test_the_cpu_inference_path_imports_no_tensorflow(module):
    code = (f"import sys, {module}; bad = [m for m in ('tensorflow', 'keras', 'jax') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
