"""Imports flow one way (docs/DESIGN.md §1): nothing imports the CLI, and moa.nn imports only torch.

The source tree is read with ``ast``, so an import inside a function counts as much as one
at the top of a module.
"""

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "moa"
#: the entry points that are allowed to start the CLI
ENTRY_MODULES = {"moa.__main__", "moa.train.__main__"}
#: optional ecosystems a moa.nn module may import: the Triton kernels, which moa.nn.triton_mix
#: imports lazily (inside a function, behind a one-line error naming the extra)
NN_OPTIONAL_IMPORTS = {"moa.nn.triton_kernels": {"triton"}}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.append((node.lineno, mod))
            # `from moa import cli` imports the module moa.cli: a name taken from a package may be a module
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names if mod == "moa"]
    return found


def layering_violations(src: Path = SRC) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.py")):
        name = module_name(path, src)
        for line, mod in imported_modules(path, src):
            where = f"{path.relative_to(src.parent)}:{line} imports {mod}"
            if (mod == "moa.cli" or mod.startswith("moa.cli.")) and not (
                    name == "moa.cli" or name.startswith("moa.cli.") or name in ENTRY_MODULES):
                problems.append(f"{where} (only moa.cli and the __main__ entry points may import the CLI)")
            if name == "moa.nn" or name.startswith("moa.nn."):
                top = mod.split(".")[0]
                ok = (top in ("torch", "__future__") or top in sys.stdlib_module_names
                      or mod == "moa.nn" or mod.startswith("moa.nn.") or top in NN_OPTIONAL_IMPORTS.get(name, ()))
                if not ok:
                    problems.append(f"{where} (moa.nn imports only torch, the standard library and moa.nn)")
    return problems


def test_nothing_imports_the_cli_and_nn_imports_only_torch():
    assert layering_violations() == []


def test_the_checker_catches_each_kind_of_violation(tmp_path):
    root = tmp_path / "moa"
    for pkg in ("", "cli", "experiments", "nn"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__main__.py").write_text("from moa.cli import main\n")  # allowed: an entry point
    (root / "cli" / "x.py").write_text("from moa.cli import y\n")  # allowed: the CLI itself
    (root / "experiments" / "a.py").write_text("def f():\n    from moa.cli.sample import load_run\n")
    (root / "experiments" / "b.py").write_text("from moa import cli\n")
    (root / "nn" / "c.py").write_text("import numpy\nimport math\nimport torch.nn\nfrom . import d\n")
    (root / "nn" / "e.py").write_text("from ..data import x\n")
    problems = layering_violations(root)
    assert len(problems) == 4, problems
    assert any("experiments/a.py:2 imports moa.cli.sample" in p for p in problems)
    assert any("experiments/b.py:1 imports moa.cli" in p for p in problems)
    assert any("nn/c.py:1 imports numpy" in p for p in problems)
    assert any("nn/e.py:1 imports moa.data" in p for p in problems)
