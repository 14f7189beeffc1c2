"""Where the calls go: the configured gateway, or a simulator started in this process.

``run --simulate`` needs no credentials: the simulator brings its own app key and secret, and
serves the built-in APIs plus the spec this run sends to. Its successes go to a temporary
journal (unless ``--journal`` names one), so they never make a real run skip a row. A spec
that needs a session needs ``TOP_SESSION`` here as on the platform (the simulator checks only
that there is one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from importer.config import Config
from importer.errors import UsageError
from importer.i18n import _
from importer.journal import is_url, redacted
from importer.processes import pid_alive
from importer.protocol import LOOPBACK_HOSTS, Credentials
from importer.spec import ApiSpec

SIMULATED_JOURNAL = "simulated.sqlite"  # the journal of its own of a simulated send
# Temporary folders (+ pid): the CLI's for a --simulate run's journal; an API call's for its
# input written from a DataFrame or rows, its workbook with out=False and that journal.
SIMULATED_FOLDER = "top-import-simulated-"
API_FOLDER = "top-import-api-"
_SCRATCH = (SIMULATED_FOLDER, API_FOLDER)


def scratch_folder(prefix: str) -> tempfile.TemporaryDirectory:
    """A private temporary folder (``prefix``: one of the two above), removed at the end; those
    of processes that were killed before they could remove theirs go now."""
    for kind in _SCRATCH:
        for stale in Path(tempfile.gettempdir()).glob(f"{kind}*"):
            pid = stale.name[len(kind) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def wants_own_journal(config: Config, journal_given: bool) -> bool:
    """A simulated send keeps its successes in a journal of its own (unless ``--journal``
    names one), so they never make a real run skip a row."""
    return config.simulate and not config.dry_run and not journal_given


def with_own_journal(config: Config, folder: Path) -> Config:
    """``config`` with the journal of its own, in the temporary ``folder``."""
    return replace(config, journal=folder / SIMULATED_JOURNAL)


def _own_journal(journal: Path | str) -> bool:
    if not isinstance(journal, Path):
        return False  # a database's URL
    return journal.name == SIMULATED_JOURNAL and journal.parent.name.startswith(_SCRATCH)


class SendTarget:
    """The gateway to send to: the configured one, or an in-process simulator."""

    def __init__(
        self,
        config: Config,
        credentials: Credentials | None,
        spec: ApiSpec,
        say: Callable[[str], None],
    ) -> None:
        self._config = config
        self._say = say
        self._credentials = credentials
        self._spec = spec
        self._simulator = None

    async def __aenter__(self) -> tuple[str, Credentials]:
        if not self._config.simulate:
            assert self._credentials is not None
            check_gateway_url(self._config.gateway)
            return self._config.gateway, self._credentials
        from importer.simulator import Simulator, SimulatorSettings, builtin_specs

        settings = SimulatorSettings()
        # The simulator serves the built-in APIs and the one this run sends to (a spec file).
        specs = {s.method: s for s in [*builtin_specs(), self._spec]}.values()
        self._simulator = Simulator(settings, specs=specs)
        await self._simulator.__aenter__()
        journal = self._config.journal
        if _own_journal(journal):
            said = _(
                "simulating the platform at {url} (app key {app_key}); a journal of its own, "
                "removed at the end (--journal PATH keeps one)"
            )
        else:
            said = _("simulating the platform at {url} (app key {app_key}); journal {journal}")
        shown = redacted(journal) if is_url(journal) else journal  # never a password
        self._say(said.format(url=self._simulator.url, app_key=settings.app_key, journal=shown))
        # A spec that needs a session needs TOP_SESSION here too, as on the real gateway: a
        # trial run that passed only because the simulator made one up would fail there.
        credentials = Credentials(settings.app_key, settings.secret, self._config.session)
        return self._simulator.url, credentials

    async def __aexit__(self, *exc: object) -> None:
        if self._simulator is not None:
            await self._simulator.__aexit__(*exc)


def check_gateway_url(url: str) -> None:
    """Plain HTTP would show the session key to the network: allowed only to this machine."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise UsageError(
            _(
                "--gateway {url} is plain HTTP; use https:// (plain HTTP is only for a simulator "
                "on 127.0.0.1)."
            ).format(url=url)
        )
