"""The layout holds its rules: imports point down (import-linter's contracts in pyproject.toml),
the package's own imports sit at the top of each module (the commands' modules excepted), and
only the command line prints."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamcrystal"


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's command, in this environment
    run = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "3 kept" in run.stdout


def test_the_package_imports_its_own_modules_at_the_top_of_each_module():
    """Except the command line's commands, which import their work when they run, so that
    parsing (``--help``) loads no science, cluster or catalog library (tests/cli/test_cli.py)."""
    inside = []
    for path in modules():
        if path.parent.name == "cli" and path.name in ("analysis.py", "serving.py", "options.py"):
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for node in ast.walk(function)
                           if isinstance(node, ast.ImportFrom)
                           and (node.level > 0 or (node.module or "").startswith("streamcrystal"))]
    assert inside == []


def test_only_the_command_line_prints():
    printing = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for path in modules() if "cli" not in path.parts
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert printing == []
