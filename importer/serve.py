"""``top-import serve``: the whole loop in a browser, over the same engine as the CLI.

A local aiohttp application (``Serve.app``) whose page (``web/``: plain HTML, CSS and a little
JavaScript, every asset in the package) lets a person choose a file and see it checked, send
it after a confirmation, watch it go (server-sent events) or stop it, and download the
workbooks. It is a thin shell over ``api.py``: ``validate_async`` checks an upload,
``run_async`` sends it with an ``on_event`` observer and a ``StopHandle``.

Safety, since the page can send with the server's credentials:

- **A token** (random, printed with the address as Jupyter prints its own) is asked of every
  request: in the address once (``/?token=...``, then a cookie: HttpOnly, SameSite=Strict), or
  in the ``X-Top-Import-Token`` header. Without it: 401.
- **Cross-site requests**: a request that changes anything is a POST that must carry the token
  in that header (a page of another site cannot read it, so cannot send it: a cookie alone is
  not enough), and one whose ``Origin`` is another site is refused (403).
- **Uploads** go to a 0700 folder of the server's, each under a name the server chooses: the
  client's file name is shown, never used as a path. An upload over ``max_upload`` bytes is
  refused with a sentence and leaves nothing behind; the loader's own checks follow.
- The credentials are the server's (its environment or importer.toml): the page shows which app
  key is used, never a secret, and never asks for one.

The server survives a bad upload, a dropped client and a request of garbage: each is one
sentence to that request. Runs live in the server, not in the page: a closed tab does not stop
one, and the page, opened again, shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

import importer
from importer.config import load_config
from importer.errors import ImporterError, UsageError
from importer.events import Event, EventKind
from importer.i18n import LANGS, N_, _, language, shown
from importer.inputs import next_name
from importer.interrupts import StopHandle
from importer.journal import KILLED, PastRun, is_url, open_journal
from importer.labels import shown_status
from importer.loader import (
    CSV_SUFFIXES,
    WORKBOOK_SUFFIXES,
    check_sheet,
    open_input,
    sheet_names,
)
from importer.rows import Outcome, Status
from importer.spec import DEFAULT_METHOD, builtin_methods, load_spec
from importer.summary import Plan

TOKEN_COOKIE = "top_import_token"
TOKEN_HEADER = "X-Top-Import-Token"
LANG_COOKIE = "top_import_lang"
SUFFIXES = CSV_SUFFIXES + WORKBOOK_SUFFIXES
MAX_UPLOAD = 200 * 1024 * 1024  # bytes (``--max-upload``, in MB on the command line)
PROBLEM_ROWS = 500  # invalid and duplicate rows a check shows (the workbook has them all)
CHUNK = 256 * 1024
WEB = Path(__file__).parent / "web"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
FINAL = "finished"
CONFIRM = "confirm"  # a run's phase while its plan waits for the person's confirmation
CONFIRM_S = 600.0  # ... for this long at most: then it is not sent (the journal lock is freed)

# What the page says, in the language of the request (``T`` in app.js).
PAGE_TEXTS = {
    "title": N_("top-import: send a spreadsheet"),
    "drop": N_("Drop a CSV, TSV, XLSX, XLSM, XLS or ODS file here, or choose one."),
    "sheet": N_("Sheet"),
    "checking": N_("Checking..."),
    "checked": N_("Checked"),
    "rows": N_("rows"),
    "mapping": N_("Columns"),
    "column": N_("Column"),
    "field": N_("Field"),
    "kept": N_("kept in the workbook, not sent"),
    "problems": N_("Rows that will not be sent"),
    "row": N_("Row"),
    "status": N_("Status"),
    "reason": N_("Reason"),
    "no_problems": N_("Every row is valid."),
    "validate_book": N_("Download the check workbook"),
    "send": N_("Send"),
    "api": N_("API"),
    "qps": N_("Calls per second (a number, or auto)"),
    "simulate": N_("The simulator (nothing reaches the platform)"),
    "gateway": N_("The platform, with app key"),
    "no_key": N_("no app key is set on the server (TOP_APP_KEY or importer.toml)"),
    "confirm": N_("{plan}\n\nSend to {target}?"),
    "planning": N_("Pre-flight: what the journal holds, the quota"),
    "sending": N_("Sending"),
    "stop": N_("Stop"),
    "eta": N_("about"),
    "pace": N_("paced at"),
    "shared": N_("the quota shared with {others} other runs"),
    "stopping": N_("Stopping: calls in flight finish, the rest are not sent."),
    "done": N_("Finished"),
    "exit": N_("exit code"),
    "result_book": N_("Download the result workbook"),
    "feed_back": N_("Fixed the failed sheet, or decided the check sheet? Choose that workbook."),
    "history": N_("Runs in the journal"),
    "value": N_("Value"),
    "uploading": N_("Uploading"),
    "running": N_("still going"),
    "killed": N_("its process died"),
    "target": N_("Sent to"),
    "simulator": N_("the simulator"),
    "platform": N_("the platform"),
    "started": N_("Started"),
    "input": N_("Input"),
    "counts": N_("Rows"),
    "labelled": N_("{label}: {value}"),
}


@dataclass
class Upload:
    """A file a person chose: where the server keeps it, and the name it had."""

    id: str
    path: Path
    name: str  # the client's file name, shown only
    size: int


@dataclass
class Run:
    """A run started from the page; the page watches it through ``snapshot``."""

    id: str
    upload: Upload
    target: str  # simulator | gateway
    handle: StopHandle = field(default_factory=StopHandle)
    task: asyncio.Task | None = None
    started: float = field(default_factory=time.time)
    phase: str = ""
    counts: Counter = field(default_factory=Counter)
    planned: int | None = None  # rows to send, from the pre-flight's plan
    total: int | None = None  # every row the plan counts: to send, and settled without a call
    pace: float | None = None  # the plan's calls/s: this run's share of the app key's quota
    sharing: int = 0  # ... shared with this many other runs sending for the app key
    exit_code: int | None = None
    message: str = ""
    workbook: str | None = None  # a download id
    plan: str = ""  # the pre-flight's line: what the run is about to send
    failures: list[dict[str, Any]] = field(default_factory=list)  # rows not sent well, why
    latest: deque = field(default_factory=lambda: deque(maxlen=LATEST_SHOWN))  # while it goes
    approval: asyncio.Future | None = None  # the confirmation of the plan, once it is shown
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def approve(self, plan: Plan) -> Awaitable[None]:
        """The pre-flight's plan, shown on the page: sending starts once it is confirmed."""
        self.plan = plan.line()
        self.phase = CONFIRM
        self.approval = asyncio.get_running_loop().create_future()
        self.changed.set()
        return self._confirmed()

    async def _confirmed(self) -> None:
        assert self.approval is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.approval), CONFIRM_S)
        except asyncio.TimeoutError:
            raise UsageError(
                _("{name}: not sent: its plan was not confirmed within {minutes} minutes.").format(
                    name=self.upload.name, minutes=int(CONFIRM_S // 60)
                )
            ) from None
        self.phase = "sending"

    def refuse(self) -> None:
        if self.approval is not None and not self.approval.done():
            self.approval.set_exception(
                UsageError(
                    _("{name}: not sent: its plan was not confirmed.").format(name=self.upload.name)
                )
            )

    def on_event(self, event: Event) -> None:  # in the server's loop: run_async runs in it
        if event.kind is EventKind.ROW and event.status is not None:
            self.counts[event.status.value] += 1
            # not_sent rows come in bulk at a stop, and say why in the workbook
            if event.status.value in ("failed", "unknown") and event.outcome is not None:
                self.latest.appendleft(
                    {"row": event.source_row, "status": event.status.value,
                     "reason": _reason(event.outcome)}
                )  # fmt: skip
        elif event.kind is EventKind.PLAN and event.plan is not None:
            plan = event.plan
            self.planned = plan.to_send
            self.pace, self.sharing = plan.rate, plan.sharing
            self.total = (
                plan.to_send + plan.already_sent + plan.duplicate + plan.invalid + plan.unknown
            ) + plan.done
        elif event.kind is EventKind.PASS_STARTED:
            self.phase = event.phase
        self.changed.set()

    def snapshot(self) -> dict[str, Any]:
        seconds = max(time.time() - self.started, 1e-9)
        settled = sum(self.counts.values())
        return {
            "id": self.id,
            "input": self.upload.name,
            "target": self.target,
            "started": self.started,
            "phase": FINAL if self.exit_code is not None else self.phase,
            "counts": dict(self.counts),
            "settled": settled,
            "planned": self.planned,
            "total": self.total,
            "pace": round(self.pace, 1) if self.pace else None,
            "sharing": self.sharing,
            "rate": round(settled / seconds, 1),
            "exit_code": self.exit_code,
            "message": self.message,
            "workbook": self.workbook,
            "plan": self.plan,
            "failures": self.failures,
            "latest": list(self.latest),
            "stopping": self.handle.interrupts.stopped,
        }


class Serve:
    """The application and what it holds: uploads, runs and downloads, in ``folder`` (0700)."""

    def __init__(
        self,
        folder: Path,
        *,
        token: str | None = None,
        max_upload: int = MAX_UPLOAD,
        options: dict[str, Any] | None = None,
        config_file: str | None = None,
        lang: str | None = None,
        specs: Path | None = None,
        results: Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        # the runs' workbooks, and the journal of simulated runs: kept when the server stops
        # (the history lists them), unlike the uploads
        self.results = Path(results) if results else self.folder / "results"
        self.token = token or secrets.token_urlsafe(24)
        self.max_upload = max_upload
        self.options = dict(options or {})
        self.config_file = config_file
        self.lang = lang
        self.specs = Path(specs) if specs else None  # a folder of spec files the page offers
        self.uploads: dict[str, Upload] = {}
        self.runs: dict[str, Run] = {}
        self.files: dict[str, tuple[Path, str]] = {}  # download id -> (path, name shown)
        self._offered: dict[tuple[Path, str], str] = {}  # ... and back

    # -- the application ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._guard], client_max_size=self.max_upload + 1024 * 1024
        )
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/assets/{name}", self._asset),
                web.get("/api/info", self._info),
                web.post("/api/uploads", self._upload),
                web.post("/api/checks", self._check),
                web.post("/api/runs", self._send),
                web.get("/api/runs", self._runs),
                web.get("/api/history", self._history),
                web.get("/api/runs/{id}/events", self._events),
                web.post("/api/runs/{id}/confirm", self._confirm),
                web.post("/api/runs/{id}/stop", self._stop),
                web.get("/api/files/{id}", self._download),
            ]
        )
        app.on_shutdown.append(self._stop_all)
        return app

    def url(self, host: str, port: int) -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/?token={self.token}"

    def _lang(self, request: web.Request) -> str:
        """The page's language: ?lang= (the switch), else its cookie, else the browser's
        (``Accept-Language``), else serve's own (``--lang``, the locale)."""
        for lang in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
            if lang in LANGS:
                return lang
        accepted = request.headers.get("Accept-Language", "").strip().lower()
        if accepted:
            return "zh" if accepted.split(",")[0].strip().startswith("zh") else "en"
        return self.lang if self.lang in LANGS else "en"

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        lang = self._lang(request)
        with language(lang):
            given = request.query.get("token")
            if request.method == "GET" and request.path == "/" and given is not None:
                if not _same(given, self.token):
                    return _refused(401)
                # the token leaves the address bar (and the history) for a cookie
                chosen = request.query.get("lang")
                target = "/" + (f"?lang={chosen}" if chosen in LANGS else "")
                found = web.HTTPFound(target)
                found.set_cookie(
                    TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/"
                )
                raise found
            if request.method == "POST":
                if not _same(request.headers.get(TOKEN_HEADER, ""), self.token):
                    return _refused(403)
                origin = request.headers.get("Origin")
                if origin is not None and origin != f"{request.scheme}://{request.host}":
                    return _refused(403)
            elif not (
                _same(request.cookies.get(TOKEN_COOKIE, ""), self.token)
                or _same(request.headers.get(TOKEN_HEADER, ""), self.token)
            ):
                return _refused(401)
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except ImporterError as exc:  # the engine's sentence, for a person
                return _said(str(exc), 400)
            except (ValueError, KeyError, TypeError, RecursionError, BadHttpMessage):
                # garbage: JSON nested beyond reason, a part header of binary bytes or a NUL
                return _said(_("The request was not understood; reload the page."), 400)
            except ConnectionError:  # the client went away (a tab closed): nobody to answer
                return web.Response(status=499)

    async def _page(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        texts: dict[str, Any] = {key: _(text) for key, text in PAGE_TEXTS.items()}
        # the status words as the workbook's dashboard shows them: 成功 (success) in Chinese
        texts["statuses"] = {status.value: shown_status(status.value) for status in Status}
        html = (WEB / "index.html").read_text(encoding="utf-8")
        html = html.replace("{{lang}}", lang).replace("{{title}}", _(PAGE_TEXTS["title"]))
        html = html.replace("{{token}}", self.token)
        html = html.replace("{{texts}}", json.dumps(texts, ensure_ascii=False))
        response = web.Response(text=html, content_type="text/html")
        if "lang" in request.query and request.query["lang"] in LANGS:
            response.set_cookie(LANG_COOKIE, lang, samesite="Strict", path="/")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=(WEB / name).read_bytes(), content_type=ASSETS[name], charset="utf-8"
        )

    async def _info(self, request: web.Request) -> web.Response:
        config = self._config({})
        return web.json_response(
            {
                "app_key": config.app_key or None,
                "api": config.api or DEFAULT_METHOD,
                "apis": sorted(self._apis()),
                "lang": self._lang(request),
            }
        )

    def _apis(self) -> dict[str, str]:
        """The APIs the page may choose: the built-in methods, the spec files of ``--specs``
        and serve's own ``--api``, each by the name shown (a client never names a path)."""
        apis = {method: method for method in builtin_methods()}
        if self.specs is not None and self.specs.is_dir():
            apis.update({path.name: str(path) for path in sorted(self.specs.glob("*.toml"))})
        own = self.options.get("api")
        if own:
            apis[Path(own).name if own.endswith(".toml") else own] = own
        return apis

    def _api(self, body: dict[str, Any]) -> dict[str, Any]:
        """``api=`` for the engine from the page's choice (one of ``_apis``), or nothing."""
        chosen = body.get("api")
        if not chosen:
            return {}
        apis = self._apis()
        if chosen not in apis:
            raise UsageError(
                _("{api} is not an API this page offers; choose one of: {apis}.").format(
                    api=repr(chosen), apis=", ".join(sorted(apis))
                )
            )
        return {"api": apis[chosen]}

    # -- uploads and checks ----------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return _said(_("Choose a file to upload."), 400)
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "filename", None) is None:
            return _said(_("Choose a file to upload."), 400)
        # the client's name is shown, never used as a path: its last part only (some clients
        # send it percent-encoded)
        name = PurePosixPath(unquote(part.filename).replace("\\", "/")).name or "upload"
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in SUFFIXES:
            return _said(
                _("{name}: top-import reads {suffixes} files; choose one of those.").format(
                    name=name, suffixes=", ".join(SUFFIXES)
                ),
                400,
            )
        upload_id = secrets.token_hex(8)
        path = self.folder / f"{upload_id}{suffix}"
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > self.max_upload:
                        raise _TooLarge()
                    out.write(chunk)
            if not part.at_eof():  # the body ended before the part's closing boundary
                raise _Cut()
        except _Cut:
            path.unlink(missing_ok=True)
            return _said(_("{name} arrived incomplete; choose it again.").format(name=name), 400)
        except _TooLarge:
            path.unlink(missing_ok=True)
            return _said(
                _(
                    "{name} is larger than the upload limit of {limit} MB; split it, or start "
                    "top-import serve with a larger --max-upload."
                ).format(name=name, limit=self.max_upload // (1024 * 1024)),
                413,
            )
        except BaseException:  # a dropped client: nothing half-written is kept
            path.unlink(missing_ok=True)
            raise
        upload = Upload(upload_id, path, name, size)
        self.uploads[upload_id] = upload
        try:
            sheets = await asyncio.to_thread(sheet_names, path)
        except ImporterError:  # not a workbook after all: the check says so
            sheets = []
        return web.json_response({"id": upload_id, "name": name, "size": size, "sheets": sheets})

    async def _check(self, request: web.Request) -> web.Response:
        body = await request.json()
        upload = self.uploads[str(body["upload"])]
        sheet = body.get("sheet") or None
        # a workbook of its own: the page may check two sheets of one upload at once
        out = self.folder / f"{upload.id}.{secrets.token_hex(4)}.validate.xlsx"
        options = self._options(lang=self._lang(request), out=str(out), **self._api(body))
        if sheet:
            options["sheet"] = sheet
        cells: dict[int | None, tuple[str, str]] = {}  # row -> the field and value it is about

        def on_event(event: Event) -> None:  # in the check's thread
            if event.kind is EventKind.PROBLEM and len(cells) < PROBLEM_ROWS:
                cells[event.source_row] = (event.field, event.value)

        result = await importer.validate_async(
            upload.path,
            config_file=self.config_file,
            input_name=upload.name,
            on_event=on_event,
            **options,
        )
        problems = []
        for row in result.rows():
            if row.get("status") in ("invalid", "duplicate") and len(problems) < PROBLEM_ROWS:
                number = row.get("source_row")
                name, value = cells.get(number, ("", ""))  # type: ignore[arg-type]
                problems.append(
                    {
                        "row": number,
                        "status": row.get("status"),
                        "field": name,
                        "value": value,
                        "reason": row.get("error") or "",
                    }
                )
        return web.json_response(
            {
                "upload": upload.id,
                "name": upload.name,
                "counts": result.counts,
                "exit_code": result.exit_code,
                "mapping": self._mapping(upload, sheet, options.get("api")),
                "problems": problems,
                "workbook": self._offer(out, next_name(upload.name, "validate")),
            }
        )

    def _mapping(self, upload: Upload, sheet: str | None, api: str | None) -> list[dict[str, Any]]:
        """Which column became which field; the others are kept in the workbook, not sent."""
        config = self._config({})
        spec = load_spec(api or config.api)
        table = open_input(upload.path, spec, sheet, config.columns)
        fields = {index: name for name, index in table.columns.items()}
        return [
            {"column": header, "field": fields.get(i)} for i, header in enumerate(table.headers)
        ]

    # -- runs -------------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        upload = self.uploads[str(body["upload"])]
        simulate = bool(body.get("simulate", True))
        run = Run(secrets.token_hex(8), upload, "simulator" if simulate else "gateway")
        out = self._kept() / f"{time.strftime('%Y%m%d-%H%M%S')}-{run.id}.result.xlsx"
        options = self._options(
            lang=self._lang(request), out=str(out), simulate=simulate, **self._api(body)
        )
        if simulate:  # a journal of their own, never the real one: see SIMULATED
            options["journal"] = str(self._kept() / SIMULATED)
        qps = body.get("qps")
        if qps not in (None, ""):
            if isinstance(qps, bool) or not isinstance(qps, (str, int, float)):
                raise ValueError(qps)
            options["qps"] = qps if qps == "auto" else float(qps)
        if body.get("sheet"):
            options["sheet"] = str(body["sheet"])
        # what the engine would refuse once started (a qps of 0, a sheet not in the workbook)
        # is refused now, as one sentence, with no run begun
        self._config({k: v for k, v in options.items() if k in ("qps", "sheet")})
        if options.get("sheet"):
            try:
                await asyncio.to_thread(check_sheet, upload.path, options["sheet"])
            except ImporterError as exc:  # named as the person knows the file
                return _said(str(exc).replace(str(upload.path), upload.name), 400)
        self.runs[run.id] = run
        run.task = asyncio.create_task(self._go(run, options, out))
        return web.json_response(run.snapshot())

    async def _go(self, run: Run, options: dict[str, Any], out: Path) -> None:
        name = next_name(run.upload.name)  # the loop's naming: t-2.result.xlsx for t.result.xlsx
        try:
            result = await importer.run_async(
                run.upload.path,
                config_file=self.config_file,
                input_name=run.upload.name,
                on_event=run.on_event,
                stop=run.handle,
                approve=run.approve,
                **options,
            )
            run.exit_code = result.exit_code
            run.message = result.summary.message
            run.failures = _failures(result)
        except importer.AbortedError as exc:
            run.exit_code, run.message = exc.result.exit_code, str(exc)
            run.failures = _failures(exc.result)
        except ImporterError as exc:
            from importer import exits

            run.exit_code, run.message = int(exits.for_error(exc)), str(exc)
        except Exception as exc:  # the server goes on; the page says what happened
            run.exit_code, run.message = 2, f"{type(exc).__name__}: {exc}"
        if out.exists():
            run.workbook = self._offer(out, name)
        run.changed.set()

    async def _runs(self, request: web.Request) -> web.Response:
        return web.json_response([run.snapshot() for run in self.runs.values()])

    async def _history(self, request: web.Request) -> web.Response:
        """The runs in the journal, and in the journal of simulated runs, newest first: input,
        started, counts, exit code, and the workbook while it is where the run wrote it."""
        config = self._config({})
        journals = [("gateway", config.journal), ("simulator", self.results / SIMULATED)]
        runs: list[dict[str, Any]] = []
        problems = []
        folders = (self.results.resolve(), Path(config.out_dir).resolve())
        for target, journal in journals:
            try:
                past = await asyncio.to_thread(_history_of, journal, config.out_dir)
            except ImporterError as exc:  # the history says so; the page goes on
                problems.append(str(exc))
                continue
            runs += [self._past(target, run, folders) for run in past]
        runs.sort(key=lambda run: run["started"], reverse=True)
        return web.json_response({"runs": runs[:HISTORY_SHOWN], "problems": problems})

    def _past(self, target: str, run: PastRun, folders: tuple[Path, ...]) -> dict[str, Any]:
        name = PurePosixPath(run.input_path.replace("\\", "/")).name
        workbook = None
        if run.workbook and run.host == socket.gethostname():
            kept = _kept_workbook(Path(run.workbook), folders)
            if kept is not None:
                workbook = self._offer(kept, next_name(name))
        if run.finished_at is None:
            state = "running"
        elif run.finished_at == KILLED:
            state = "killed"
        else:
            state = FINAL
        return {
            "target": target,
            "input": name,
            "method": run.method,
            "host": run.host,
            "started": run.started_at,
            "state": state,
            "counts": run.counts,
            "exit_code": run.exit_code,
            "workbook": workbook,
        }

    async def _events(self, request: web.Request) -> web.StreamResponse:
        run = self.runs[request.match_info["id"]]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        while True:
            run.changed.clear()
            snapshot = run.snapshot()
            try:
                await response.write(f"data: {json.dumps(snapshot)}\n\n".encode())
            except ConnectionError:  # the tab closed: the run goes on, reopening shows it
                return response
            if snapshot["exit_code"] is not None:
                return response
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(run.changed.wait(), 1.0)
            await asyncio.sleep(0.2)  # a ceiling on how often the page is told: 5 a second

    async def _confirm(self, request: web.Request) -> web.Response:
        run = self.runs[request.match_info["id"]]
        if run.approval is None or run.approval.done():
            return _said(_("There is no plan waiting for a confirmation; reload the page."), 400)
        run.approval.set_result(None)
        run.changed.set()
        return web.json_response(run.snapshot())

    async def _stop(self, request: web.Request) -> web.Response:
        run = self.runs[request.match_info["id"]]
        run.refuse()  # a plan not confirmed: nothing is sent
        run.handle.stop()
        run.changed.set()
        return web.json_response(run.snapshot())

    async def _stop_all(self, _app: web.Application) -> None:
        """Ctrl-C on serve: every run stops as Ctrl-C stops one, and writes its workbook."""
        tasks = [run.task for run in self.runs.values() if run.task and not run.task.done()]
        for run in self.runs.values():
            run.refuse()
            run.handle.stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _download(self, request: web.Request) -> web.FileResponse:
        path, name = self.files[request.match_info["id"]]
        return web.FileResponse(
            path,
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quoted(name)}"},
        )

    # -- helpers ----------------------------------------------------------------------------

    def _offer(self, path: Path, name: str) -> str:
        """A download id for ``path`` (the same one each time the history lists it)."""
        known = self._offered.get((path, name))
        if known is not None:
            return known
        file_id = secrets.token_hex(8)
        self.files[file_id] = (path, name)
        self._offered[(path, name)] = file_id
        return file_id

    def _kept(self) -> Path:
        """The folder of what outlives the server (0700): the runs' workbooks, the journal of
        the simulated runs."""
        self.results.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.results

    def _options(self, **extra: Any) -> dict[str, Any]:
        return {**self.options, "progress": False, **extra}

    def _config(self, extra: dict[str, Any]) -> Any:
        given = {k: v for k, v in {**self.options, **extra}.items() if v is not None}
        return load_config(given, os.environ, Path(self.config_file) if self.config_file else None)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


FAILURES_SHOWN = 50  # the workbook's failed and check sheets have them all
HISTORY_SHOWN = 50  # the latest runs the history lists
# Simulated runs keep a journal of their own beside their workbooks, as a simulated CLI run
# keeps one (so a rehearsal never makes a real run skip a row); unlike the CLI's, it is kept,
# so that the history lists them after a restart.
SIMULATED = "simulated-journal.sqlite"
LATEST_SHOWN = 10  # the latest rows that failed or are unknown, while a run goes
_NOT_WELL = ("failed", "unknown", "not_sent")


def _kept_workbook(path: Path, folders: tuple[Path, ...]) -> Path | None:
    """``path`` if it is a workbook in one of ``folders`` (serve's own, the runs' out_dir):
    whatever else a journal row names (it is only a row: anyone who can write the journal
    writes it) is never offered for download."""
    if path.suffix.lower() not in (".xlsx", ".csv"):
        return None
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_file() or not any(real.is_relative_to(folder) for folder in folders):
        return None
    return real


def _history_of(journal: Path | str, folder: Path) -> list[PastRun]:
    """The latest runs in ``journal`` (none while it does not exist: looking creates nothing)."""
    if not is_url(journal) and not Path(journal).is_file():
        return []
    opened = open_journal(journal, folder)
    try:
        with opened.errors():
            return opened.history(HISTORY_SHOWN)
    finally:
        opened.close()


def _reason(outcome: Outcome) -> str:
    """A row's reason as the workbook's error column says it, in the run's language."""
    return shown(outcome.error) if outcome.error else outcome.sub_msg or outcome.msg or ""


def _failures(result: importer.Result) -> list[dict[str, Any]]:
    """The rows of a run that failed, are unknown or were not sent, with the reason beside."""
    rows = []
    for row in result.rows():
        if row.get("status") in _NOT_WELL:
            rows.append(
                {
                    "row": row.get("source_row"),
                    "status": row.get("status"),
                    "reason": row.get("error") or row.get("sub_msg") or row.get("msg") or "",
                }
            )
            if len(rows) >= FAILURES_SHOWN:
                break
    return rows


class _TooLarge(Exception):
    pass


class _Cut(Exception):
    pass


def _same(given: str, token: str) -> bool:
    # a header's bytes that are not text come as surrogates: never the token, never an error
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def _said(sentence: str, status: int) -> web.Response:
    return web.json_response({"error": sentence}, status=status)


def _refused(status: int) -> web.Response:
    sentence = (
        _(
            "This page needs its token: open the address top-import serve printed "
            "(http://...?token=...)."
        )
        if status == 401
        else _("Refused: a request that changes anything must come from the page itself.")
    )
    return web.Response(text=sentence, status=status, content_type="text/plain")


def _quoted(name: str) -> str:
    return quote(name, safe="")


def private_folder(parent: Path | None = None) -> Path:
    """A new 0700 folder for one server's uploads and workbooks."""
    return Path(tempfile.mkdtemp(prefix="top-import-serve-", dir=parent))


async def serve_forever(
    server: Serve, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    runner = web.AppRunner(server.app(), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # Ctrl-C or a kill (SIGTERM): the runs stop as Ctrl-C stops one, then the server
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        bound = runner.addresses[0][1] if runner.addresses else port  # --port 0: a free one
        on_ready(server.url(host, bound))
        await stopped.wait()
    finally:
        await runner.cleanup()
