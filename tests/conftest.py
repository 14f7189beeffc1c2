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


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for this test process (one per xdist worker), started on first
    use; the tests skip, saying why, only where no server binary is installed."""
    import pgserver

    if pgserver.binaries() is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql-15)")
    server = pgserver.Server()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def pg_journal(pg_server, request):
    """The URL of an empty database of its own on ``pg_server`` (no password in it)."""
    import re

    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:50]
    name += f"_{abs(hash(request.node.nodeid)) % 10**6}"
    return pg_server.create_database(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``journals`` runs on each journal (``journal_kind``)."""
    if metafunc.definition.get_closest_marker("journals"):
        metafunc.parametrize("journal_kind", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)  # autouse: in every test's closure, so a marked test can be given it
def journal_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default journal (a SQLite file in the test's reports/), or a database of its own on
    ``pg_server`` given to every command the test runs as ``TOP_JOURNAL`` (with the password in
    ``PGPASSWORD``): the same test, the same assertions, on the journal several hosts share."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgresql":
        server = request.getfixturevalue("pg_server")
        monkeypatch.setenv("TOP_JOURNAL", request.getfixturevalue("pg_journal"))
        monkeypatch.setenv("PGPASSWORD", server.password)
    return kind
