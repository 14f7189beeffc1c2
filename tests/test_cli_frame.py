"""The command frame: version, help, apis, and usage errors as one sentence."""

from __future__ import annotations

from click.testing import CliRunner

from importer import __version__
from importer.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_version_prints_the_package_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "validate", "simulate", "apis"):
        assert command in result.output


def test_run_help_names_the_environment_and_options():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--qps", "--concurrency", "--retries", "--max-ban", "--journal", "--dry-run"):
        assert option in result.output
    assert "--app-secret" not in result.output


def test_apis_lists_the_built_in_spec_with_fields_and_headers():
    result = invoke("apis")
    assert result.exit_code == 0
    out = result.output
    assert "alibaba.lyservice.group.ticket.customer.save" in out
    assert "group_customer_case_request" in out
    for text in ("case_id", "String", "tenant_id", "Number", "required", "optional"):
        assert text in out
    for alias in ("caseId", "工单ID", "租户ID", "群开放ID", "钉钉组织ID", "用户唯一加密键"):
        assert alias in out


def test_apis_with_a_broken_spec_file_is_exit_2_with_a_sentence(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('method = "x.y"\nobject_param = "p"\n[[fields]]\nname = "a"\ntype = "Blob"\n')
    result = CliRunner().invoke(cli, ["apis", str(spec)])
    assert result.exit_code == 2
    assert "Blob" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_api_is_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["validate", "x.csv", "--api", "no.such.method"])
    assert result.exit_code == 2
    assert "no.such.method" in result.output


def test_plain_http_gateway_elsewhere_than_loopback_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("case_id\n1\n")
    env = {
        "TOP_APP_KEY": "k",
        "TOP_APP_SECRET": "s",
        "TOP_GATEWAY": "http://gw.example.invalid/router/rest",
    }
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "t.csv")], env=env)
    assert result.exit_code == 2
    assert "https" in result.output


def test_readme_quick_start_is_two_lines_main_job_then_tests():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert len(lines) == 2
    run_line, test_line = lines
    assert "top-import run samples/" in run_line and "--simulate" in run_line
    sample = run_line.split("top-import run ", 1)[1].split()[0]
    assert (root / sample).is_file()
    assert "[test]" in test_line and "pytest" in test_line


def test_inputs_sharing_a_stem_get_a_workbook_each(tmp_path, monkeypatch):
    from helpers import ticket, write_csv
    from openpyxl import Workbook

    write_csv(tmp_path / "t.csv", [ticket(1)])
    book = Workbook()
    book.active.append(list(ticket(2)))
    book.active.append(list(ticket(2).values()))
    book.save(tmp_path / "t.xlsx")
    (tmp_path / "b").mkdir()
    write_csv(tmp_path / "b" / "t.csv", [ticket(3)])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", "t.csv", "t.xlsx", "b/t.csv", "--out-dir", "out"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["t-csv-2.validate.xlsx", "t-csv.validate.xlsx", "t-xlsx.validate.xlsx"]
