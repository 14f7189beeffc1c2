"""A message when a command ends: formats, signatures, and a receiver that fails changes nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import clean_env, cli, serving, ticket, write_csv

from importer import notify
from importer.rows import Outcome, Status
from importer.steps import StopReason
from importer.summary import FileSummary

SECRET = "SECnotify-secret-never-shown"
TOKEN = "token-never-printed-0123456789"
FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def summary() -> FileSummary:
    done = FileSummary(Path("tickets.xlsx"), "run", workbook=Path("reports/t.result.xlsx"))
    done.count(Outcome(Status.SUCCESS, attempts=1), 2)
    for row in (5, 9):
        done.count(Outcome(Status.FAILED, sub_code="isv.invalid-parameter", attempts=1), row)
    done.stop_reason = StopReason.NONE
    return done


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://oapi.dingtalk.com/robot/send?access_token=x", "dingtalk"),
        ("https://open.feishu.cn/open-apis/bot/v2/hook/x", "feishu"),
        ("https://open.larksuite.com/open-apis/bot/v2/hook/x", "feishu"),
        ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x", "wecom"),
        ("https://hooks.example.com/top-import", "json"),
    ],
)
def test_the_format_follows_the_host(url, kind):
    assert notify.receiver(url) == kind
    assert notify.receiver(url, "wecom") == "wecom"  # --notify-format overrides


def test_the_message_says_counts_codes_rows_exit_code_and_workbook_and_nothing_else():
    title, text = notify.message("run", [summary()], 1)
    assert title == "top-import run: exit 1"
    assert "**tickets.xlsx**: 2 failed, 1 success" in text
    assert "isv.invalid-parameter ×2 (e.g. row 5)" in text
    assert "some rows failed" in text  # what exit 1 means
    assert "reports/t.result.xlsx" in text


def test_a_dingtalk_message_is_signed_as_dingtalk_documents():
    url, body = notify.request(
        f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}",
        "dingtalk",
        "run",
        [summary()],
        0,
        SECRET,
        now=1_700_000_000.123,
    )
    query = parse_qs(urlsplit(url).query)
    assert query["access_token"] == [TOKEN]
    assert query["timestamp"] == ["1700000000123"]  # milliseconds
    expected = hmac.new(SECRET.encode(), f"1700000000123\n{SECRET}".encode(), hashlib.sha256)
    assert query["sign"] == [base64.b64encode(expected.digest()).decode()]
    assert body["msgtype"] == "markdown" and body["markdown"]["title"] == "top-import run: exit 0"
    assert SECRET not in json.dumps(body)


def test_a_feishu_message_is_signed_in_its_body():
    url, body = notify.request(
        "https://open.feishu.cn/open-apis/bot/v2/hook/x",
        "feishu",
        "run",
        [summary()],
        0,
        SECRET,
        now=1_700_000_000.9,
    )
    assert url == "https://open.feishu.cn/open-apis/bot/v2/hook/x"
    assert body["timestamp"] == "1700000000"  # seconds
    key = f"1700000000\n{SECRET}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected and body["msg_type"] == "interactive"
    # markdown shows only inside a card: the title in its header, no "###" left in the text
    card = body["card"]
    assert card["header"]["title"] == {"tag": "plain_text", "content": "top-import run: exit 0"}
    assert card["header"]["template"] == "green"
    (element,) = card["elements"]
    assert element["tag"] == "div" and element["text"]["tag"] == "lark_md"
    assert "###" not in element["text"]["content"] and "**" in element["text"]["content"]


def test_wecom_gets_markdown_and_any_other_host_the_summary_json_document():
    _, wecom = notify.request("https://qyapi.weixin.qq.com/x?key=k", "wecom", "run", [summary()], 1)
    assert wecom["msgtype"] == "markdown" and "tickets.xlsx" in wecom["markdown"]["content"]
    _, generic = notify.request("https://hooks.example.com/x", "json", "run", [summary()], 1)
    assert generic["exit_code"] == 1 and generic["files"][0]["counts"] == {
        "success": 1,
        "failed": 2,
    }


@pytest.mark.parametrize(
    ("kind", "status", "answer", "refused"),
    [
        ("dingtalk", 200, b'{"errcode": 0, "errmsg": "ok"}', False),
        ("dingtalk", 200, b'{"errcode": 310000, "errmsg": "sign not match"}', True),
        ("wecom", 200, b'{"errcode": 93000, "errmsg": "invalid webhook url"}', True),
        ("feishu", 200, b'{"code": 0, "msg": "success"}', False),
        ("feishu", 200, b'{"code": 19021, "msg": "sign match fail"}', True),
        ("dingtalk", 200, b"<html>", True),
        ("json", 204, b"", False),
        ("json", 500, b"", True),
    ],
)
def test_what_counts_as_delivered(kind, status, answer, refused):
    assert (notify.delivery_failure(kind, status, answer) is not None) == refused


# -- end to end: the real CLI, a receiver on 127.0.0.1 ------------------------------------------


class _Robot(BaseHTTPRequestHandler):
    answer = b'{"errcode": 0, "errmsg": "ok"}'
    received: ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Robot.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def robot(answer: bytes = b'{"errcode": 0, "errmsg": "ok"}'):
    _Robot.answer, _Robot.received = answer, []
    with serving(_Robot, f"/robot/send?access_token={TOKEN}") as url:
        yield url


def test_a_run_posts_one_signed_message_when_it_ends(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({999}))
    write_csv(tmp_path / "t.csv", [ticket(0), ticket(1, tenant=999), ticket(2)])
    with robot() as url:
        args = ["run", "t.csv", *FAST, "--notify", url, "--notify-format", "dingtalk"]
        done = cli(args, tmp_path, sim.env(TOP_NOTIFY_SECRET=SECRET))
    assert done.returncode == 1, done.stderr
    assert "notification" not in done.stderr  # delivered: nothing to say
    [(path, body)] = _Robot.received
    query = parse_qs(urlsplit(path).query)
    assert query["access_token"] == [TOKEN] and "sign" in query and "timestamp" in query
    text = body["markdown"]["text"]
    assert "**t.csv**: 2 success, 1 failed" in text
    assert "isv.invalid-parameter ×1 (e.g. row 3)" in text
    everything = json.dumps(body) + done.stdout + done.stderr
    for secret in (SECRET, sim.settings.secret):
        assert secret not in everything


def test_notify_on_failure_posts_nothing_after_a_clean_run(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    with robot() as url:
        args = ["run", "t.csv", *FAST, "--notify", url, "--notify-on", "failure"]
        done = cli(args, tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert _Robot.received == []


def test_a_receiver_that_refuses_or_is_down_is_one_warning_and_the_exit_code_stays(
    tmp_path, simulator
):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/hook?access_token={TOKEN}"
    with robot(b'{"errcode": 310000, "errmsg": "sign not match"}') as refusing:
        started = time.monotonic()
        args = ["validate", "t.csv", "--notify", refusing, "--notify-format", "dingtalk"]
        done = cli([*args, "--notify", down], tmp_path, sim.env())
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr  # the rows are valid: the notifications change nothing
    assert took < 15  # (a ceiling: one attempt each, at most 5 s)
    warnings = [line for line in done.stderr.splitlines() if "notification" in line]
    assert len(warnings) == 2, done.stderr
    assert any("errcode 310000: sign not match" in w for w in warnings)
    assert TOKEN not in done.stderr and "127.0.0.1" in done.stderr
    assert len(_Robot.received) == 1  # the refusing robot got the message once


@pytest.mark.parametrize(
    "url",
    ["http://oapi.dingtalk.com/robot/send?access_token=x", "oapi.dingtalk.com/robot", "ftp://x/y"],
)
def test_a_webhook_that_is_not_https_stops_before_anything_is_read(tmp_path, url):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["validate", "t.csv", "--notify", url], tmp_path)
    assert done.returncode == 2
    assert "is not an https:// webhook URL" in done.stderr
    assert not (tmp_path / "reports").exists()


def test_a_receiver_that_never_answers_holds_the_command_up_a_few_seconds_at_most(
    tmp_path, simulator
):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    with socket.socket() as silent:  # accepts the connection (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        (tmp_path / "importer.toml").write_text(f'notify = ["{url}"]\n', encoding="utf-8")
        started = time.monotonic()
        done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "json notification to http://127.0.0.1" in done.stderr
    assert "no answer within 5 s" in done.stderr
    assert took < 15  # the 5 s limit, and the run itself (a ceiling)


def _http(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


@contextlib.contextmanager
def raw_receiver(answer: bytes):
    """A receiver that reads the request and answers ``answer`` as raw bytes, then closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/robot/send?access_token={TOKEN}"
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "an answer that is not valid HTTP"),
        (_http(b'{"errcode": 1, "errmsg": "bad\\n\\u001b[31mred secret"}'), "errcode 1: bad [31m"),
    ],
)
def test_a_broken_receiver_never_shows_the_token_the_signature_or_its_control_characters(
    tmp_path, answer, said
):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    with raw_receiver(answer) as url:
        args = ["validate", "t.csv", "--notify", url, "--notify-format", "dingtalk"]
        done = cli(args, tmp_path, {**clean_env(), "TOP_NOTIFY_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "notification" in line]
    assert said in warning
    for secret in (TOKEN, SECRET, "sign=", "timestamp=", "\x1b"):
        assert secret not in done.stderr


@pytest.mark.parametrize(
    "url",
    ["https://a..b/robot/send?access_token=x", "https://[bad/robot/send", "https://h:port/x"],
)
def test_a_webhook_url_that_cannot_be_sent_to_is_a_usage_error(tmp_path, url):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["validate", "t.csv", "--notify", url], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "top-import: --notify" in done.stderr


def test_a_run_stopped_before_any_input_still_notifies(tmp_path):
    """In cron the likeliest failure is a missing credential: the robot hears of it."""
    write_csv(tmp_path / "t.csv", [ticket(0)])
    with robot() as url:
        args = ["run", "t.csv", "--notify", url, "--notify-format", "dingtalk"]
        done = cli(args, tmp_path, clean_env())  # no TOP_APP_KEY / TOP_APP_SECRET
    assert done.returncode == 2, done.stderr
    [(_, body)] = _Robot.received
    assert "top-import run: exit 2" in body["markdown"]["title"]
    assert "stopped: Missing app key (TOP_APP_KEY) and app secret" in body["markdown"]["text"]


def test_the_receivers_table_is_the_one_list_of_formats_hosts_and_choices():
    from importer import cli, notify
    from importer.config import load_config
    from importer.errors import UsageError

    assert notify.FORMATS == ("dingtalk", "feishu", "wecom", "json")
    option = next(p for p in cli.run.params if p.name == "notify_format")
    assert tuple(option.type.choices) == notify.FORMATS
    for name, receiver in notify.RECEIVERS.items():
        for host in receiver.hosts:
            assert notify.receiver(f"https://{host}/hook") == name
    with pytest.raises(UsageError, match="use one of dingtalk, feishu, wecom, json"):
        load_config({"notify_format": "slack"}, {}, None)
