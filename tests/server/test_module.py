"""The module API: a module reaches the modules it depends on by their class."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.module import Module, NoOptions
from schnack.server.modules.pep import Pep
from schnack.server.modules.upload import Upload

from ..harness import running


class Probe(Module[NoOptions]):
    """A module outside the server's set, asking for others."""

    name = "probe"
    depends = ("pep",)


async def test_required_and_optional_return_the_enabled_module(server: Server) -> None:
    probe = Probe(server, NoOptions())
    assert probe.required(Pep) is server.modules["pep"]
    assert probe.optional(Upload) is server.modules["upload"]


async def test_a_module_that_is_not_enabled(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"disable": ["webclient", "upload"]}) as server:
        probe = Probe(server, NoOptions())
        assert probe.optional(Upload) is None
        with pytest.raises(ConfigError, match="needs module 'upload'"):
            probe.required(Upload)
