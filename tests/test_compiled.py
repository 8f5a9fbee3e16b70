"""The modules setup.py compiles with mypyc keep to what compiled code does as Python does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compiled_modules() -> list[Path]:
    """The sources setup.py lists in COMPILED, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets):
            assert isinstance(node.value, ast.List)
            return [ROOT / ast.literal_eval(item) for item in node.value.elts]
    raise AssertionError("setup.py has no COMPILED list")


def test_compiled_modules_exist() -> None:
    modules = compiled_modules()
    assert modules and all(path.is_file() for path in modules), modules


def test_no_await_in_except_or_finally_of_compiled_modules() -> None:
    """mypyc 2.4 keeps no exception state of its own per coroutine: one suspended in an except
    block, or in a finally block while an exception passes, leaves that exception as the one
    being handled for whatever runs next on the thread, and a compiled finally block that
    awaits raises it again when it resumes (seen: a blocklist change of one test answered with
    a storage error an earlier test's offline storage had raised). So the compiled modules
    await nothing in except and finally blocks; what must happen either way comes after the
    try statement."""
    found = []
    for path in compiled_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Try | ast.TryStar):
                continue
            blocks = [("except", handler.body) for handler in node.handlers] + [("finally", node.finalbody)]
            for kind, body in blocks:
                for statement in body:
                    for inner in ast.walk(statement):
                        if isinstance(inner, ast.Await | ast.AsyncWith | ast.AsyncFor):
                            found.append(f"{path.relative_to(ROOT)}:{inner.lineno}: await in {kind}")
    assert not found, found
