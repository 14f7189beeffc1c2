"""Shared fixtures: the real simulator on 127.0.0.1. The helpers the tests import (rows built
in code, the real CLI, ...) are in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest
from helpers import APP_KEY, SECRET, SimulatorThread

from importer.simulator import SimulatorSettings
from importer.spec import ApiSpec


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorThread]]:
    """``simulator(**settings)`` starts one (``specs=[...]``: the APIs it serves, default the
    built-in ones); all are stopped after the test."""
    started: list[SimulatorThread] = []

    def start(specs: Iterable[ApiSpec] | None = None, **settings: object) -> SimulatorThread:
        settings.setdefault("app_key", APP_KEY)
        settings.setdefault("secret", SECRET)
        sim = SimulatorThread(SimulatorSettings(**settings), specs).__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)
