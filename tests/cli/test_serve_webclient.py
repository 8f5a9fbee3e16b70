"""``schnack serve`` names the web client's URL at start, or says in one line how to install it."""

from __future__ import annotations

import signal
from pathlib import Path

from schnack.server.modules.webclient import find_installation

from ..conftest import require_service
from .proc import serve


def announced(tmp_path: Path, extra: str = "") -> str:
    """What ``schnack serve`` prints at start, up to its last line; then it is stopped."""
    tmp_path.mkdir()
    config = tmp_path / "schnack.toml"
    config.write_text(
        'domains = ["example.test"]\ndata_dir = "state"\n[listen]\n'
        'c2s = ["127.0.0.1:0"]\nc2s_tls = ["127.0.0.1:0"]\nhttp = ["127.0.0.1:0"]\nhttps = ["127.0.0.1:0"]\n'
        + extra
    )
    proc, seen = serve(config)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    assert code == 0, seen + (proc.stderr.read() if proc.stderr else "")
    return seen


def test_serve_names_the_web_clients_url_or_says_how_to_install_it(tmp_path: Path) -> None:
    missing = announced(tmp_path / "a", '[modules.webclient]\ndirectory = "nowhere"\n')
    lines = [line for line in missing.splitlines() if "web client" in line]
    assert len(lines) == 1, missing
    assert "not installed" in lines[0] and "make web" in lines[0] and "npm" in lines[0]
    installed = find_installation(None)
    require_service(installed is not None, "converse.js is not installed (make web)")
    assert installed is not None
    present = announced(tmp_path / "b")
    (line,) = [line for line in present.splitlines() if "web client" in line]
    assert f"/web/ (converse.js {installed.version})" in line and line.split()[2].startswith("https://example.test:")
