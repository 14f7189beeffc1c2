"""Never twice, and a report that tells the truth, tried the hostile way.

Lost, garbled, huge and late answers after the platform acted; two files holding the same rows
run together on one journal; an input saved while it is sent; eight runs opening a new journal
at once; a stop racing a claim. Every test asserts what the gateway saw.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from aiohttp import web
from helpers import cli, read_sheet, statuses, ticket, wait_for, write_csv

from importer.dispatcher import Dispatcher, DispatchSettings
from importer.gateway import Gateway
from importer.protocol import MAX_BODY_BYTES, AnswerKind, Credentials, RequestBuilder
from importer.rows import Outcome, RequestRecord, Status
from importer.spec import load_spec

SPEC = load_spec(None)
ROBOT = "alibaba.lyservice.robot.tenant.sync"
FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def popen(tmp_path, env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "importer", "run", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- answers lost after the platform acted ---------------------------------------------------------


def test_answers_lost_after_the_platform_acted_are_unknown_and_never_sent_twice(
    tmp_path, simulator
):
    sim = simulator(lost_response_rate=0.15, garbled_rate=0.1, huge_rate=0.05, seed=5)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(80)])
    first = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    stats = sim.stats()
    lost = stats["lost_responses"] + stats["garbled"] + stats["huge"]
    assert lost > 0
    assert first.returncode == 1, first.stderr
    assert stats["calls"] == 80  # no retry of a call whose answer was lost
    assert stats["duplicate_accepts"] == 0
    workbook = tmp_path / "reports" / "t.result.xlsx"
    assert statuses(workbook) == {"success": 80 - lost, "unknown": lost}
    unknown = [r for r in read_sheet(workbook) if r["status"] == "unknown"]
    assert all("may have acted" in r["error"] and r["attempts"] == 1 for r in unknown)
    assert f"{lost} rows unknown" in first.stderr and "--resend-unknown" in first.stderr
    assert "Traceback" not in first.stderr

    # A plain rerun sends none of them again.
    again = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert again.returncode == 1
    assert sim.stats()["calls"] == 80
    assert statuses(workbook) == {"skipped": 80 - lost, "unknown": lost}

    # --resend-unknown, after checking them on the platform: at-least-once, as asked.
    healthy = simulator(app_key=sim.settings.app_key)
    done = cli(["run", "t.csv", *FAST, "--resend-unknown"], tmp_path, healthy.env())
    assert done.returncode == 0, done.stderr
    assert healthy.stats()["accepted"] == lost
    assert statuses(workbook) == {"skipped": 80 - lost, "success": lost}


def test_a_row_whose_lost_answer_was_retried_into_an_error_stays_unknown(tmp_path, simulator):
    """At-least-once retries a lost answer; if the retry then fails (a 502), the first call may
    still have acted: the row is unknown, and a plain rerun does not send it again."""
    sim = simulator(lost_response_rate=0.5, http502_rate=0.5, seed=1)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(60)])
    args = ["run", "t.csv", *FAST, "--retries", "1"]
    first = cli([*args, "--resend-unknown"], tmp_path, sim.env())
    assert first.returncode == 1, first.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    accepted = set(sim.accepted())
    assert len(accepted) > sum(r["status"] == "success" for r in rows)  # some "errors" landed
    failed = [r for r in rows if r["status"] == "failed"]
    assert all("lost" not in (r["error"] or "") for r in failed)
    before = sim.stats()["accepted"]
    again = cli(args, tmp_path, sim.env())
    sent_again = sim.accepted()
    # Only rows that never reached the platform go again; no accepted payload is sent twice.
    assert sum(sent_again.values()) - before == len(set(sent_again) - accepted)
    assert again.returncode in (0, 1)


def test_answers_later_than_the_timeout_are_not_retried(tmp_path, simulator):
    sim = simulator(latency_ms=1500)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    done = cli(["run", "t.csv", *FAST, "--timeout", "1"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    wait_for(lambda: sim.stats()["accepted"] == 3)
    stats = sim.stats()
    assert (stats["calls"], stats["duplicate_accepts"]) == (3, 0)
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert {r["status"] for r in rows} == {"unknown"}
    assert all(r["error"].startswith("no answer within --timeout 1 s") for r in rows)


def test_an_idempotent_api_resends_lost_answers_by_default(tmp_path, simulator):
    sim = simulator(lost_response_rate=0.3, seed=2)
    rows = [
        {"corp_id": f"ding{i:04d}", "tenant_id": str(200110000 + i), "robot_code": f"r{i}"}
        for i in range(30)
    ]
    write_csv(tmp_path / "r.csv", rows, headers=["corp_id", "tenant_id", "robot_code"])
    done = cli(["run", "r.csv", "--api", ROBOT, *FAST, "--retries", "20"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    stats = sim.stats()
    assert stats["lost_responses"] > 0
    assert stats["accepted_payloads"] == 30
    assert statuses(tmp_path / "reports" / "r.result.xlsx") == {"success": 30}
    # ... and --no-resend-unknown turns that off for it.
    sim2 = simulator(lost_response_rate=0.3, seed=2)
    kept = cli(
        ["run", "r.csv", "--api", ROBOT, *FAST, "--no-resend-unknown", "--journal", "j2.sqlite"],
        tmp_path,
        sim2.env(),
    )
    assert kept.returncode == 1
    assert sim2.stats()["duplicate_accepts"] == 0


# -- the gateway's side of "sent or not" ----------------------------------------------------------


async def _post_to(handler, timeout: float = 5):
    app = web.Application()
    app.router.add_post("/router/rest", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    builder = RequestBuilder(SPEC, Credentials("k", "s3cr3t-value"))
    request = builder.build('{"a":1}', datetime.now(timezone.utc))
    try:
        async with Gateway(
            f"http://{host}:{port}/router/rest", concurrency=1, timeout=timeout
        ) as gw:
            return await gw.post(request, SPEC)
    finally:
        await runner.cleanup()


async def test_a_connection_closed_after_the_write_is_uncertain():
    async def hang_up(request):
        await request.read()
        request.transport.close()
        return web.Response()

    reply = await _post_to(hang_up)
    assert reply.kind is AnswerKind.UNCERTAIN
    assert reply.error.startswith("connection lost after the call was sent")


async def test_a_huge_answer_is_uncertain_and_not_read_into_memory():
    async def huge(request):
        response = web.StreamResponse()
        await response.prepare(request)
        block = b"x" * (64 << 10)
        try:
            for _ in range(200):  # 12.5 MiB, far past the limit
                await response.write(block)
        except (ConnectionError, RuntimeError):
            pass
        return response

    reply = await _post_to(huge)
    assert reply.kind is AnswerKind.UNCERTAIN
    assert f"larger than {MAX_BODY_BYTES:,} bytes" in reply.error


async def test_a_refused_connection_is_not_sent():
    builder = RequestBuilder(SPEC, Credentials("k", "s"))
    request = builder.build('{"a":1}', datetime.now(timezone.utc))
    async with Gateway("http://127.0.0.1:9/router/rest", concurrency=1, timeout=5) as gw:
        reply = await gw.post(request, SPEC)
    assert reply.kind is AnswerKind.TRANSIENT


async def test_a_redirect_is_never_followed_and_names_its_target_without_the_query():
    calls = []

    async def redirect(request):
        calls.append(request.path)
        raise web.HTTPFound(f"/router/rest?again=1&{request.query_string}")

    reply = await _post_to(redirect)
    assert reply.kind is AnswerKind.FATAL
    assert "HTTP 302 redirect to /router/rest (not followed" in reply.error
    assert "sign=" not in reply.error and "s3cr3t" not in reply.error
    assert calls == ["/router/rest"]  # once: the redirect was not followed


# -- a stop racing a claim ----------------------------------------------------------------------


class _CountingGateway:
    where = "counting gateway"

    def __init__(self) -> None:
        self.posts = 0

    async def post(self, request, spec):
        self.posts += 1
        raise AssertionError("no call may start after stop()")


async def test_no_call_starts_after_stop_while_its_claim_is_being_committed():
    gateway = _CountingGateway()
    outcomes: list[Outcome] = []
    pending: asyncio.Future = asyncio.get_running_loop().create_future()
    dispatcher: Dispatcher

    def claim(record: RequestRecord) -> asyncio.Future:
        # The claim is being committed when the stop comes; it commits fine afterwards.
        dispatcher.stop()
        asyncio.get_running_loop().call_soon(pending.set_result, None)
        return pending

    builder = RequestBuilder(SPEC, Credentials("k", "s"))
    dispatcher = Dispatcher(
        builder,
        gateway,  # type: ignore[arg-type]
        DispatchSettings(qps=1000, concurrency=1),
        claim=claim,
        on_outcome=lambda record, outcome: outcomes.append(outcome),
    )
    record = RequestRecord(2, '{"a":1}', "h")
    await dispatcher.run([record, RequestRecord(3, '{"a":2}', "h2")])
    assert gateway.posts == 0
    assert [o.status for o in outcomes] == [Status.NOT_SENT, Status.NOT_SENT]
    assert all(o.attempts == 0 for o in outcomes)


# -- overlapping runs on one journal ---------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--no-resume"]], ids=["resume", "no-resume"])
def test_two_files_with_the_same_rows_run_together_send_each_payload_once(
    tmp_path, simulator, extra
):
    sim = simulator(latency_ms=5, jitter_ms=5)
    rows = [ticket(i) for i in range(200)]
    write_csv(tmp_path / "a.csv", rows)
    noted = [dict(r, note=f"re-export {i}") for i, r in enumerate(rows)]
    write_csv(tmp_path / "b.csv", noted[::-1], headers=[*rows[0].keys(), "note"])
    args = ["--qps", "100", "--canary", "0", "--no-progress", "--concurrency", "8", *extra]
    procs = [popen(tmp_path, sim.env(), name, *args) for name in ("a.csv", "b.csv")]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode in (0, 1), err
        assert "Traceback" not in err
    stats = sim.stats()
    assert stats["accepted_payloads"] == 200
    assert stats["duplicate_accepts"] == 0
    a = read_sheet(tmp_path / "reports" / "a.result.xlsx")
    b = {r["case_id"]: r for r in read_sheet(tmp_path / "reports" / "b.result.xlsx")}
    for row in a:
        pair = {row["status"], b[row["case_id"]]["status"]}
        assert "success" in pair and pair <= {"success", "skipped", "duplicate"}, pair
    other = [r for r in b.values() if r["status"] == "duplicate"]
    assert all("a.csv" in r["error"] for r in other)


def test_eight_runs_started_together_on_a_new_journal_all_proceed(tmp_path, simulator):
    sim = simulator()
    for n in range(8):
        write_csv(tmp_path / f"in{n}.csv", [ticket(n * 10 + i) for i in range(10)])
    procs = [
        popen(tmp_path, sim.env(), f"in{n}.csv", *FAST, "--journal", "fresh/journal.sqlite")
        for n in range(8)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert sim.stats()["accepted_payloads"] == 80


# -- an input saved while it is sent ------------------------------------------------------------


def test_an_input_rewritten_mid_run_is_reported_as_it_was_sent(tmp_path, simulator):
    sim = simulator(latency_ms=20)
    rows = [ticket(i) for i in range(120)]
    path = write_csv(tmp_path / "t.csv", rows)
    proc = popen(tmp_path, sim.env(), "t.csv", "--qps", "60", "--canary", "0", "--no-progress")
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 10 or proc.poll() is not None)
        # The operator deletes the first 40 rows and edits every case_id, saving over the file.
        edited = [dict(r, case_id=r["case_id"] + "9") for r in rows[40:]]
        tmp = path.with_name("t.csv.new")
        write_csv(tmp, edited)
        tmp.replace(path)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "t.csv changed while it was being sent" in err
    report = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert [r["case_id"] for r in report] == [r["case_id"] for r in rows]
    assert {r["status"] for r in report} == {"success"}
    stats = sim.stats()
    assert (stats["accepted_payloads"], stats["duplicate_accepts"]) == (120, 0)
    sent = {json.loads(p)["case_id"] for p in sim.accepted()}
    assert sent == {r["case_id"] for r in rows}
    assert not list((tmp_path / "reports" / ".top-import-snapshots").iterdir())

    # The next run sees the new content: the 80 edited rows are new payloads.
    again = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 80}


def test_a_report_pairs_outcomes_with_cells_not_row_numbers(tmp_path):
    """Unit: an outcome recorded for other cells under the same row number is not reused."""
    from importer.pipeline import _paired
    from importer.rows import Row

    row = Row(2, ("a", "b"))
    recorded = (2, Row(2, ("a", "c")).digest(), Outcome(Status.SUCCESS, request_id="r"))
    assert _paired(row, recorded).status is Status.UNKNOWN
    same = (2, row.digest(), Outcome(Status.SUCCESS, request_id="r"))
    assert _paired(row, same).request_id == "r"
