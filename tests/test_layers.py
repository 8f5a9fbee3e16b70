"""The layering rules of DESIGN.md: xmpp/ is sans-IO, and imports point down only."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "schnack"

FORBIDDEN_IN_CORE = {"asyncio", "socket", "ssl", "selectors", "select", "aiohttp", "uvloop", "trio"}
# A package may import only the packages listed for it (besides itself and the standard library).
ALLOWED = {
    "xmpp": set(),
    "server": {"xmpp"},
    "client": {"xmpp"},
    "cli": {"xmpp", "server", "client"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(SRC.parent).with_suffix("").parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                name = ".".join((*base, node.module)) if node.module else ".".join(base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def test_core_does_no_io() -> None:
    bad = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for path in (SRC / "xmpp").rglob("*.py")
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert bad == []


def test_imports_point_down() -> None:
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            for line, name in _imports(path):
                parts = name.split(".")
                if (
                    parts[0] == "schnack" and len(parts) > 1 and parts[1] in ALLOWED
                    and parts[1] != layer and parts[1] not in allowed
                ):
                    bad.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert bad == []
