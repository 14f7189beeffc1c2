"""`top-import serve` over HTTP, as a browser and a hostile page would speak to it: the token,
cross-site requests, uploads (a path in the name, over the limit, the wrong kind), garbage,
the check, a run watched to its end and one stopped midway, a dropped client, the language."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import stat
from pathlib import Path

import openpyxl
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from helpers import ticket, write_csv

from importer.journal import RunEnd, SQLiteJournal
from importer.serve import TOKEN_COOKIE, TOKEN_HEADER, Serve

TOKEN = "test-token-0123456789"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
WAIT_S = 60  # a ceiling: each wait ends as soon as the server says so


@pytest.fixture
async def page(tmp_path):
    """A client of a server with the simulator as its gateway; its requests carry the token."""
    server = Serve(tmp_path / "serve", token=TOKEN, max_upload=1024 * 1024)
    async with TestClient(TestServer(server.app())) as client:
        client.session.cookie_jar.update_cookies({TOKEN_COOKIE: TOKEN})
        yield client, server


@contextlib.asynccontextmanager
async def _gateway_page(tmp_path, sim, monkeypatch):
    """A client (with the token) of a server whose gateway is ``sim``: its TOP_* settings in the
    server's environment, as a real deployment has them; a journal of its own in ``tmp_path``."""
    for name, value in sim.env().items():
        if name.startswith("TOP_"):
            monkeypatch.setenv(name, value)
    server = Serve(tmp_path / "serve", token=TOKEN, options={"journal": str(tmp_path / "j.sqlite")})
    async with TestClient(TestServer(server.app())) as client:
        client.session.cookie_jar.update_cookies({TOKEN_COOKIE: TOKEN})
        yield client, server


def _file(name: str, content: bytes) -> FormData:
    form = FormData()
    form.add_field("file", io.BytesIO(content), filename=name)
    return form


async def _upload(client: TestClient, name: str, content: bytes) -> dict:
    response = await client.post("/api/uploads", data=_file(name, content), headers=_token())
    assert response.status == 200, await response.text()
    return await response.json()


def _token() -> dict[str, str]:
    return {TOKEN_HEADER: TOKEN}


async def _start(client: TestClient, upload_id: str, **given) -> dict:
    """Start a run and confirm its plan once the page would show it."""
    started = await client.post("/api/runs", json={"upload": upload_id, **given}, headers=_token())
    run = await started.json()
    plan = await _plan_of(client, run["id"])
    assert "to send" in plan["plan"]
    confirmed = await client.post(f"/api/runs/{run['id']}/confirm", headers=_token())
    assert confirmed.status == 200
    return run


async def _plan_of(client: TestClient, run_id: str) -> dict:
    """The run's state once its pre-flight plan waits for a confirmation."""
    async with client.get(f"/api/runs/{run_id}/events", timeout=WAIT_S) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                seen = json.loads(line[6:])
                if seen["phase"] == "confirm" or seen["exit_code"] is not None:
                    return seen
    raise AssertionError("the stream ended before the plan")


async def _events_until_the_end(client: TestClient, run_id: str) -> list[dict]:
    seen = []
    async with client.get(f"/api/runs/{run_id}/events", timeout=WAIT_S) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["exit_code"] is not None:
                    return seen
    raise AssertionError(f"the stream ended before the run: {seen[-1:]}")


# -- who may ask --------------------------------------------------------------------------------


async def test_without_the_token_every_request_is_401_and_the_token_becomes_a_cookie(tmp_path):
    server = Serve(tmp_path / "serve", token=TOKEN)
    async with TestClient(TestServer(server.app())) as client:
        for path in ("/", "/assets/app.js", "/api/info", "/api/runs", "/?token=wrong"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 401, path
            assert "token" in await response.text()
        first = await client.get(f"/?token={TOKEN}", allow_redirects=False)
        assert first.status == 302 and first.headers["Location"] == "/"  # out of the address
        cookie = first.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = await client.get("/")  # the cookie now
        assert page.status == 200
        assert 'name="top-import-token"' in await page.text()


async def test_a_post_without_the_token_header_or_from_another_site_is_refused(page):
    client, server = page
    form = _file("t.csv", b"case_id\n1\n")
    assert (await client.post("/api/uploads", data=form)).status == 403  # the cookie alone
    other_site = {**_token(), "Origin": "https://evil.example"}
    response = await client.post("/api/checks", json={"upload": "x"}, headers=other_site)
    assert response.status == 403
    assert list(server.folder.iterdir()) == []  # nothing was taken in


# -- uploads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../tmp/evil.csv", "..\\..\\evil.csv", "/etc/evil.csv"])
async def test_a_path_in_an_upload_name_is_only_shown_never_used(page, tmp_path, name):
    client, server = page
    uploaded = await _upload(client, name, b"case_id\n1\n")
    assert uploaded["name"] == "evil.csv"
    [kept] = server.folder.iterdir()
    assert kept.name == f"{uploaded['id']}.csv"  # the server's name for it
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.folder.stat().st_mode) == 0o700
    assert not (tmp_path.parent / "evil.csv").exists() and not Path("/tmp/evil.csv").exists()


async def test_an_upload_over_the_limit_is_refused_with_a_sentence_and_leaves_nothing(page):
    client, server = page
    big = b"case_id\n" + b"1\n" * (1024 * 1024)
    response = await client.post("/api/uploads", data=_file("big.csv", big), headers=_token())
    assert response.status == 413
    error = (await response.json())["error"]
    assert "big.csv" in error and "--max-upload" in error and "1 MB" in error
    assert list(server.folder.iterdir()) == []


async def test_a_file_of_another_kind_is_refused_naming_the_kinds_read(page):
    client, server = page
    response = await client.post("/api/uploads", data=_file("x.exe", b"MZ"), headers=_token())
    assert response.status == 400
    assert ".xlsx" in (await response.json())["error"]
    assert list(server.folder.iterdir()) == []


async def test_garbage_is_one_sentence_and_the_server_goes_on(page):
    client, _server = page
    for body in (b"not json", b'{"upload": "no-such-upload"}', b"[]"):
        response = await client.post("/api/checks", data=body, headers=_token())
        assert response.status == 400
        assert "reload the page" in (await response.json())["error"]
    empty = await client.post("/api/uploads", data=b"--x--", headers=_token())
    assert empty.status == 400
    assert (await client.get("/api/info")).status == 200


# -- the loop -----------------------------------------------------------------------------------


async def test_a_check_shows_counts_the_columns_and_the_rows_not_sent_with_reasons(page):
    client, _server = page
    uploaded = await _upload(
        client, "with_errors.xlsx", (SAMPLES / "with_errors.xlsx").read_bytes()
    )
    response = await client.post("/api/checks", json={"upload": uploaded["id"]}, headers=_token())
    check = await response.json()
    assert check["counts"] == {"valid": 6, "invalid": 7, "duplicate": 1}
    assert {"column": "note", "field": None} in check["mapping"]  # kept, not sent
    assert {"column": "case_id", "field": "case_id"} in check["mapping"]
    problems = {p["row"]: p for p in check["problems"]}
    assert len(problems) == 8 and problems[3]["reason"] == "user_identify is required but empty"
    # the field and the value, each in a column of its own, beside the reason
    assert (problems[3]["field"], problems[3]["value"]) == ("user_identify", "")
    assert (problems[4]["field"], problems[4]["value"]) == ("tenant_id", "abc")
    duplicate = next(p for p in problems.values() if p["status"] == "duplicate")
    assert duplicate["field"] == "" and "same payload as row" in duplicate["reason"]
    assert {p["status"] for p in problems.values()} == {"invalid", "duplicate"}
    book = await client.get(f"/api/files/{check['workbook']}")
    assert "with_errors.validate.xlsx" in book.headers["Content-Disposition"]
    sheets = openpyxl.load_workbook(io.BytesIO(await book.read())).sheetnames
    assert "results" in sheets


async def test_nothing_is_sent_before_the_plan_is_confirmed_and_a_refused_plan_sends_nothing(
    tmp_path, simulator, monkeypatch
):
    sim = simulator()
    async with _gateway_page(tmp_path, sim, monkeypatch) as (client, _server):
        write_csv(tmp_path / "t.csv", [ticket(0), ticket(1)])
        uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
        started = await client.post(
            "/api/runs", json={"upload": uploaded["id"], "simulate": False}, headers=_token()
        )
        run_id = (await started.json())["id"]
        plan = await _plan_of(client, run_id)
        assert plan["phase"] == "confirm" and "2 rows to send" in plan["plan"]
        assert sim.stats()["calls"] == 0  # the plan waits: no call has left
        early = await client.post(f"/api/runs/{run_id}/confirm", headers={})  # no token header
        assert early.status == 403
        refused = await client.post(f"/api/runs/{run_id}/stop", headers=_token())
        assert refused.status == 200
        last = (await _events_until_the_end(client, run_id))[-1]
        assert last["exit_code"] == 2 and "not confirmed" in last["message"]
        again = await client.post(f"/api/runs/{run_id}/confirm", headers=_token())
        assert again.status == 400  # nothing waits for it any more
    assert sim.stats()["calls"] == 0


async def test_a_run_is_watched_to_its_end_and_its_workbook_downloaded(page):
    client, _server = page
    uploaded = await _upload(
        client, "with_errors.xlsx", (SAMPLES / "with_errors.xlsx").read_bytes()
    )
    run = await _start(client, uploaded["id"], simulate=True, qps="200")
    seen = await _events_until_the_end(client, run["id"])
    last = seen[-1]
    assert last["exit_code"] == 1  # invalid rows
    assert last["counts"] == {"invalid": 7, "duplicate": 1, "success": 6}
    assert last["planned"] == 6 and last["total"] == 14 and last["phase"] == "finished"
    assert 0 < last["pace"] <= 200 and last["sharing"] == 0  # --qps 200, alone on the app key
    book = await client.get(f"/api/files/{last['workbook']}")
    results = openpyxl.load_workbook(io.BytesIO(await book.read()))["results"]
    header = [c.value for c in next(results.iter_rows(max_row=1))]
    statuses = [
        row[header.index("status")] for row in results.iter_rows(min_row=2, values_only=True)
    ]
    assert statuses.count("success") == 6
    listed = await (await client.get("/api/runs")).json()
    assert [r["id"] for r in listed] == [run["id"]]


async def test_stop_midway_settles_what_is_in_flight_and_the_rest_is_not_sent(
    tmp_path, simulator, monkeypatch
):
    sim = simulator(latency_ms=100)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(80)])
    async with _gateway_page(tmp_path, sim, monkeypatch) as (client, _server):
        uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
        run = await _start(client, uploaded["id"], simulate=False, qps="10")
        assert run["target"] == "gateway"
        while sim.stats()["accepted"] < 5:  # the server's own loop serves the simulator
            await asyncio.sleep(0.02)
        stopped = await client.post(f"/api/runs/{run['id']}/stop", headers=_token())
        assert (await stopped.json())["stopping"] is True
        last = (await _events_until_the_end(client, run["id"]))[-1]
    counts = last["counts"]
    assert last["exit_code"] == 1 and counts["not_sent"] > 0
    # beside each row not sent, why: the page lists them (the workbook has them all)
    assert {f["status"] for f in last["failures"]} == {"not_sent"}
    assert all(f["reason"].startswith("not sent") for f in last["failures"])
    assert counts["success"] == sim.stats()["accepted"]  # nothing after the stop, nothing lost
    assert counts["success"] + counts["not_sent"] == 80


async def test_a_dropped_client_does_not_stop_the_run(page, tmp_path):
    client, server = page
    write_csv(tmp_path / "t.csv", [ticket(0)])
    uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
    run_id = (await _start(client, uploaded["id"], simulate=True))["id"]
    response = await client.get(f"/api/runs/{run_id}/events")
    await response.content.readline()
    response.close()  # the tab closed
    task = server.runs[run_id].task
    await asyncio.wait_for(asyncio.shield(task), WAIT_S)
    listed = await (await client.get("/api/runs")).json()
    assert listed[0]["exit_code"] is not None  # it ran to its end; the page shows it again


async def test_the_page_speaks_the_browsers_language_and_switches(page):
    client, _server = page
    zh = await client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    text = await zh.text()
    assert '<html lang="zh">' in text and "选择" in text
    en = await client.get("/?lang=en", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in await en.text()
    again = await client.get("/", headers={"Accept-Language": "zh-CN"})  # the switch is kept
    assert '<html lang="en">' in await again.text()


def test_serve_prints_its_address_with_a_token_and_warns_off_loopback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "importer", "serve", "--port", "0", "--host", "0.0.0.0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TOP_")},
             "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=WAIT_S)
    assert line.startswith("http://0.0.0.0:") and "/?token=" in line
    assert not line.startswith("http://0.0.0.0:0/")  # the port it was given
    assert len(line.strip().split("token=")[1]) >= 24
    assert "other machines can reach the page" in err and "Traceback" not in err
    assert proc.returncode == 0
    assert list(tmp_path.glob("top-import-serve-*")) == []  # its uploads went with it


async def test_two_checks_of_one_upload_at_once_both_answer(page):
    """The page checks the first sheet, and a person picks another meanwhile: each check writes
    a workbook of its own."""
    client, _server = page
    uploaded = await _upload(
        client, "with_errors.xlsx", (SAMPLES / "with_errors.xlsx").read_bytes()
    )
    checks = [
        client.post("/api/checks", json={"upload": uploaded["id"]}, headers=_token())
        for _ in range(4)
    ]
    answers = await asyncio.gather(*checks)
    assert [a.status for a in answers] == [200] * 4
    books = {(await a.json())["workbook"] for a in answers}
    assert len(books) == 4


async def test_stopping_serve_stops_its_runs_as_ctrl_c_does(tmp_path, simulator, monkeypatch):
    sim = simulator(latency_ms=100)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(80)])
    async with _gateway_page(tmp_path, sim, monkeypatch) as (client, server):
        uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
        run = server.runs[(await _start(client, uploaded["id"], simulate=False, qps="10"))["id"]]
        while sim.stats()["accepted"] < 3:
            await asyncio.sleep(0.02)
    # the server has shut down: its run stopped, settled what was in flight, wrote its workbook
    assert run.task.done() and run.exit_code == 1
    assert run.counts["success"] == sim.stats()["accepted"] and run.counts["not_sent"] > 0
    assert run.workbook is not None


async def test_a_plan_left_unconfirmed_is_not_sent_and_frees_the_input(page, tmp_path, monkeypatch):
    import importer.serve

    monkeypatch.setattr(importer.serve, "CONFIRM_S", 0.1)  # the tab was closed at the plan
    client, _server = page
    write_csv(tmp_path / "t.csv", [ticket(0)])
    uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
    started = await client.post(
        "/api/runs", json={"upload": uploaded["id"], "simulate": True}, headers=_token()
    )
    last = (await _events_until_the_end(client, (await started.json())["id"]))[-1]
    assert last["exit_code"] == 2 and "not confirmed within" in last["message"]
    # the journal's lock of that content is free: the same upload goes at once
    run = await _start(client, uploaded["id"], simulate=True)
    assert (await _events_until_the_end(client, run["id"]))[-1]["exit_code"] == 0


SPEC = """
method = "example.customer.tag.save"
title = "example"
[[fields]]
name = "tenant_id"
type = "Number"
required = true
[[fields]]
name = "tag"
type = "String"
required = true
"""


async def test_the_api_is_chosen_among_the_built_in_ones_and_the_spec_folder_never_by_path(
    tmp_path,
):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "customer_tags.toml").write_text(SPEC, encoding="utf-8")
    server = Serve(tmp_path / "serve", token=TOKEN, specs=specs)
    async with TestClient(TestServer(server.app())) as client:
        client.session.cookie_jar.update_cookies({TOKEN_COOKIE: TOKEN})
        info = await (await client.get("/api/info")).json()
        assert "alibaba.lyservice.robot.tenant.sync" in info["apis"]
        assert "customer_tags.toml" in info["apis"] and info["api"] in info["apis"]
        robots = await _upload(client, "r.csv", (SAMPLES / "robot_tenants.csv").read_bytes())
        check = await client.post(
            "/api/checks",
            json={"upload": robots["id"], "api": "alibaba.lyservice.robot.tenant.sync"},
            headers=_token(),
        )
        assert (await check.json())["counts"].get("valid", 0) > 0
        tags = await _upload(client, "t.csv", b"tenant_id,tag\n1,vip\nx,vip\n")
        check = await client.post(
            "/api/checks", json={"upload": tags["id"], "api": "customer_tags.toml"},
            headers=_token(),
        )  # fmt: skip
        assert (await check.json())["counts"] == {"valid": 1, "invalid": 1}
        for api in ("/etc/passwd", str(specs / "customer_tags.toml"), "no.such.api"):
            refused = await client.post(
                "/api/checks", json={"upload": tags["id"], "api": api}, headers=_token()
            )
            assert refused.status == 400
            assert "not an API this page offers" in (await refused.json())["error"]


async def test_the_latest_rows_that_failed_come_with_the_platforms_reason(
    tmp_path, simulator, monkeypatch
):
    sim = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i, tenant=999) if i % 10 == 0 else ticket(i) for i in range(30)]
    write_csv(tmp_path / "t.csv", rows)
    async with _gateway_page(tmp_path, sim, monkeypatch) as (client, _server):
        uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
        run = await _start(client, uploaded["id"], simulate=False, qps="500")
        last = (await _events_until_the_end(client, run["id"]))[-1]
    latest = last["latest"]
    assert len(latest) == 3 and {f["status"] for f in latest} == {"failed"}
    assert all(f["reason"] for f in latest)  # the platform's words, or the advice beside them
    assert {f["row"] for f in latest} == {i + 2 for i in range(0, 30, 10)}


@pytest.mark.parametrize(
    ("uploaded", "downloaded"),
    [("t.csv", "t.result.xlsx"), ("t.result.xlsx", "t-2.result.xlsx"),
     ("t-2.result.xlsx", "t-3.result.xlsx")],
)  # fmt: skip
def test_a_workbook_fed_back_downloads_under_the_loops_next_name(uploaded, downloaded):
    from importer.inputs import next_name

    assert next_name(uploaded) == downloaded
    assert next_name(uploaded, "validate") == downloaded.replace("result", "validate")


async def test_two_uploads_sent_at_once_share_the_app_keys_quota(tmp_path, simulator, monkeypatch):
    sim = simulator(latency_ms=50)
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(60)])
    write_csv(tmp_path / "b.csv", [ticket(i) for i in range(1000, 1060)])
    async with _gateway_page(tmp_path, sim, monkeypatch) as (client, _server):
        a = await _upload(client, "a.csv", (tmp_path / "a.csv").read_bytes())
        b = await _upload(client, "b.csv", (tmp_path / "b.csv").read_bytes())
        first = await _start(client, a["id"], simulate=False, qps="10")
        while sim.stats()["accepted"] < 2:
            await asyncio.sleep(0.02)
        started = await client.post(
            "/api/runs", json={"upload": b["id"], "simulate": False, "qps": "10"}, headers=_token()
        )
        second = await started.json()
        plan = await _plan_of(client, second["id"])
        assert plan["sharing"] == 1 and "its share" in plan["plan"]
        for run in (first, second):
            await client.post(f"/api/runs/{run['id']}/stop", headers=_token())
            await _events_until_the_end(client, run["id"])


def test_a_port_already_taken_is_one_sentence_and_exit_2(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "importer", "serve", "--port", str(port)],
            capture_output=True, text=True, timeout=WAIT_S,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert list(tmp_path.glob("top-import-serve-*")) == []  # nothing left behind


# -- history ------------------------------------------------------------------------------------


async def _history(client: TestClient) -> dict:
    response = await client.get("/api/history")
    assert response.status == 200
    return await response.json()


async def test_the_history_lists_the_journals_runs_with_workbooks_after_a_restart(
    tmp_path, simulator, monkeypatch
):
    sim = simulator(bad_tenants=frozenset({7}))
    write_csv(tmp_path / "t.csv", [ticket(i, tenant=7 if i == 1 else 200110004) for i in range(4)])
    results = tmp_path / "kept"
    for name, value in sim.env().items():
        if name.startswith("TOP_"):
            monkeypatch.setenv(name, value)
    options = {"journal": str(tmp_path / "j.sqlite")}
    first = Serve(tmp_path / "serve", token=TOKEN, options=options, results=results)
    async with TestClient(TestServer(first.app())) as client:
        client.session.cookie_jar.update_cookies({TOKEN_COOKIE: TOKEN})
        uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
        for simulate, code in ((False, 1), (True, 0)):  # tenant 7 fails on sim only
            run = await _start(client, uploaded["id"], simulate=simulate, qps="200")
            assert (await _events_until_the_end(client, run["id"]))[-1]["exit_code"] == code
    first.remove()  # serve stopped: its uploads are gone, the workbooks and journals kept
    assert not first.folder.exists()
    assert stat.S_IMODE(results.stat().st_mode) == 0o700
    again = Serve(tmp_path / "serve-2", token=TOKEN, options=options, results=results)
    async with TestClient(TestServer(again.app())) as client:
        client.session.cookie_jar.update_cookies({TOKEN_COOKIE: TOKEN})
        found = await _history(client)
        assert found["problems"] == []
        simulated, sent = found["runs"]  # newest first
        assert (sent["target"], simulated["target"]) == ("gateway", "simulator")
        assert (sent["exit_code"], sent["counts"]) == (1, {"success": 3, "failed": 1})
        assert (simulated["exit_code"], simulated["counts"]) == (0, {"success": 4})
        for run in (sent, simulated):
            assert (run["input"], run["state"]) == ("t.csv", "finished")
            book = await client.get(f"/api/files/{run['workbook']}")
            assert book.status == 200
            assert "t.result.xlsx" in book.headers["Content-Disposition"]
            sheets = openpyxl.load_workbook(io.BytesIO(await book.read())).sheetnames
            assert "failed" in sheets
        # the same id each time: the history does not grow the server's downloads
        assert (await _history(client))["runs"][0]["workbook"] == simulated["workbook"]
    # a rehearsal never enters the real journal, the real run never the simulated one
    assert sim.stats()["calls"] == 4


async def test_a_history_whose_journal_cannot_be_read_says_so_and_the_page_goes_on(
    page, tmp_path, monkeypatch
):
    client, server = page
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    server.options["journal"] = str(broken)
    found = await _history(client)
    assert found["runs"] == [] and len(found["problems"]) == 1
    assert str(broken) in found["problems"][0]
    assert (await client.get("/api/info")).status == 200


async def test_a_workbook_another_machine_wrote_is_not_offered_for_download(page, tmp_path):
    client, server = page
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    (tmp_path / "reports").mkdir()
    book = tmp_path / "reports" / "t.result.xlsx"
    book.write_bytes(b"not this machine's workbook")
    server.options["out_dir"] = str(tmp_path / "reports")
    for host in ("other-host", socket.gethostname()):
        journal.host = host
        run = journal.start_run(input_path="t.csv", input_key=host, app_key="a", method="m")
        run.finish(end=RunEnd(0, {"success": 1}, str(book)))
    journal.close()
    server.options["journal"] = str(tmp_path / "j.sqlite")
    here, there = (await _history(client))["runs"]
    assert (here["host"], there["host"]) == (socket.gethostname(), "other-host")
    assert here["workbook"] and there["workbook"] is None


async def test_a_history_with_no_journal_yet_is_empty_and_creates_none(page, tmp_path):
    client, server = page
    server.options["journal"] = str(tmp_path / "none-yet.sqlite")
    assert await _history(client) == {"runs": [], "problems": []}
    assert not (tmp_path / "none-yet.sqlite").exists() and not server.results.exists()


# -- what a hostile client sends ---------------------------------------------------------------


def _multipart(filename: bytes, content: bytes, closed: bool = True) -> tuple[bytes, dict]:
    body = (
        b'--abc\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"\r\n" + content + (b"\r\n--abc--\r\n" if closed else b"")
    )
    return body, {**_token(), "Content-Type": "multipart/form-data; boundary=abc"}


async def test_a_token_of_bytes_that_are_not_text_is_refused_not_a_crash(page, caplog):
    client, _server = page
    client.session.cookie_jar.clear()
    response = await client.get("/api/info", headers={TOKEN_HEADER: "\udcff"})
    assert response.status == 401
    raw = await client.post("/api/checks", headers={TOKEN_HEADER: "caf\u00e9\udcff"}, json={})
    assert raw.status == 403
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("filename", [b"a\x00b.csv", b"evil.csv\x00.exe"])
async def test_a_nul_in_an_upload_name_is_one_sentence_not_a_500(page, filename):
    client, server = page
    body, headers = _multipart(filename, b"case_id\n1\n")
    response = await client.post("/api/uploads", data=body, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"]
    assert list(server.folder.iterdir()) == []


async def test_json_nested_beyond_reason_is_one_sentence_not_a_500(page):
    client, _server = page
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/checks", "/api/runs"):
        response = await client.post(path, data=deep, headers=_token())
        assert response.status == 400, path
        assert "reload the page" in (await response.json())["error"]


async def test_an_upload_cut_before_its_closing_boundary_is_refused_and_not_kept(page):
    client, server = page
    body, headers = _multipart(b"cut.csv", b"case_id,user_identify\n1,u\n2,", closed=False)
    response = await client.post("/api/uploads", data=body, headers=headers)
    assert response.status == 400
    assert "cut.csv arrived incomplete" in (await response.json())["error"]
    assert list(server.folder.iterdir()) == []


async def test_a_closed_event_stream_leaves_no_error_and_the_run_goes_on(page, tmp_path, caplog):
    client, server = page
    write_csv(tmp_path / "t.csv", [ticket(0), ticket(1)])
    uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
    run_id = (await _start(client, uploaded["id"], simulate=True))["id"]
    for _ in range(3):  # three tabs opened and closed
        response = await client.get(f"/api/runs/{run_id}/events")
        await response.content.readline()
        response.close()
    await asyncio.wait_for(asyncio.shield(server.runs[run_id].task), WAIT_S)
    assert server.runs[run_id].exit_code == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("qps", [-1, 0, "0", 1e309, "inf", "nan", True, [1]])
async def test_a_run_with_an_impossible_qps_is_refused_before_it_starts(page, tmp_path, qps):
    client, server = page
    write_csv(tmp_path / "t.csv", [ticket(0)])
    uploaded = await _upload(client, "t.csv", (tmp_path / "t.csv").read_bytes())
    body = json.dumps({"upload": uploaded["id"], "simulate": True, "qps": qps})
    response = await client.post(
        "/api/runs", data=body, headers={**_token(), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"]
    assert server.runs == {}


async def test_a_run_of_a_sheet_the_workbook_lacks_is_refused_naming_the_file(page):
    client, server = page
    uploaded = await _upload(
        client, "with_errors.xlsx", (SAMPLES / "with_errors.xlsx").read_bytes()
    )
    response = await client.post(
        "/api/runs",
        json={"upload": uploaded["id"], "simulate": True, "sheet": "nope"},
        headers=_token(),
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert "with_errors.xlsx has no sheet 'nope'" in error and str(server.folder) not in error
    assert server.runs == {}


async def test_the_history_never_offers_a_file_that_is_not_a_run_workbook(page, tmp_path):
    client, server = page
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    server.options["journal"] = str(tmp_path / "j.sqlite")
    server.options["out_dir"] = str(tmp_path / "reports")
    (tmp_path / "reports").mkdir()
    kept = tmp_path / "reports" / "t.result.xlsx"
    kept.write_bytes(b"a workbook")
    (tmp_path / "reports" / "notes.txt").write_text("not a workbook")
    elsewhere = tmp_path / "elsewhere.xlsx"
    elsewhere.write_bytes(b"a workbook, but not where runs write them")
    named = [
        "/etc/passwd",
        str(elsewhere),
        str(tmp_path / "reports" / "notes.txt"),
        str(tmp_path / "reports" / ".." / "elsewhere.xlsx"),
        str(kept),
    ]
    for i, path in enumerate(named):
        run = journal.start_run(input_path="t.csv", input_key=str(i), app_key="a", method="m")
        run.finish(end=RunEnd(0, {"success": 1}, path))
    journal.close()
    offered = [run["workbook"] for run in (await _history(client))["runs"]]
    assert offered[0] is not None and offered[1:] == [None] * 4  # newest first: the real one
    assert await (await client.get(f"/api/files/{offered[0]}")).read() == b"a workbook"


async def test_the_language_given_with_the_token_goes_back_only_when_it_is_one(tmp_path):
    server = Serve(tmp_path / "serve", token=TOKEN)
    async with TestClient(TestServer(server.app())) as client:
        given = await client.get(f"/?token={TOKEN}&lang=zh", allow_redirects=False)
        assert given.headers["Location"] == "/?lang=zh"
        odd = await client.get(f"/?token={TOKEN}&lang=en%26token%3Dzzz", allow_redirects=False)
        assert odd.headers["Location"] == "/"
