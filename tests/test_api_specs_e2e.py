"""Other APIs end to end: the real CLI in a subprocess against the real simulator.

The second built-in spec (alibaba.lyservice.robot.tenant.sync), the README's worked spec file
(flat parameters, List, Date, Boolean, identity, a session), and `top-import apis`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SESSION, clean_env, cli, read_sheet, statuses, write_csv

from importer.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
ROBOT = "alibaba.lyservice.robot.tenant.sync"
ROBOT_HEADERS = ["钉钉组织ID", "租户ID", "机器人编码", "客户端ID"]


def robot(i: int, tenant: str = "200110004", corp: str | None = None) -> dict[str, str]:
    return {
        "钉钉组织ID": corp if corp is not None else f"ding{i:032x}",
        "租户ID": tenant,
        "机器人编码": f"dingrobot{i:08d}",
        "客户端ID": f"dingclient{i:06d}" if i % 3 else "",
    }


def readme_spec() -> str:
    """The worked spec of the README's "Importing into another API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Importing into another API", 1)[1].split("\n## ", 1)[0]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


TAG_HEADERS = ["租户ID", "客户ID", "标签", "等级", "是否VIP", "到期时间", "note"]


def tag_row(i: int, **changes: str) -> dict[str, str]:
    row = {
        "租户ID": "200110004",
        "客户ID": f"C{i:04d}",
        "标签": "vip，新客" if i % 2 else "old",
        "等级": str(1 + i % 3),
        "是否VIP": ("是", "FALSE", "1", "")[i % 4],
        "到期时间": ("2025-12-31", "2025-06-30 18:00:00", "")[i % 3],
        "note": f"row {i}",
    }
    row.update(changes)
    return row


# --- the second built-in spec ---------------------------------------------------------------


def test_robot_tenant_relations_are_synced_and_a_rerun_skips_them(tmp_path, simulator):
    sim = simulator()
    rows = [robot(i) for i in range(24)]
    write_csv(tmp_path / "robots.csv", rows, ROBOT_HEADERS)
    args = ["run", "robots.csv", "--api", ROBOT, "--qps", "500", "--no-progress"]
    done = cli(args, tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / "reports" / "robots.result.xlsx") == {"success": 24}
    stats = sim.stats()
    assert (stats["accepted"], stats["accepted_payloads"], stats["rejected"]) == (24, 24, {})

    again = cli(args, tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    assert statuses(tmp_path / "reports" / "robots.result.xlsx") == {"skipped": 24}
    assert sim.stats()["calls"] == 24


def test_robot_rows_are_validated_against_its_spec(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({404}))
    rows = [
        robot(0),
        robot(1, tenant="abc"),
        robot(2, corp=""),
        robot(3, tenant="404"),
        robot(0),  # the same relation again
    ]
    write_csv(tmp_path / "robots.csv", rows, ROBOT_HEADERS)
    done = cli(["run", "robots.csv", "--api", ROBOT, "--no-progress"], tmp_path, sim.env())
    assert done.returncode == 1
    result = read_sheet(tmp_path / "reports" / "robots.result.xlsx")
    assert [r["status"] for r in result] == ["success", "invalid", "invalid", "failed", "duplicate"]
    assert "tenant_id 'abc'" in result[1]["error"]
    assert "corp_id is required" in result[2]["error"]
    assert result[3]["sub_code"] == "isv.invalid-parameter"
    assert sim.stats()["accepted"] == 1


def test_the_robot_sample_runs_on_the_built_in_simulator(tmp_path):
    sample = ROOT / "samples" / "robot_tenants.csv"
    done = cli(
        ["run", str(sample), "--api", ROBOT, "--simulate", "--qps", "200", "--no-progress"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / "reports" / "robot_tenants.result.xlsx") == {"success": 50}


def test_a_robot_file_given_to_the_ticket_api_names_the_missing_columns(tmp_path):
    write_csv(tmp_path / "robots.csv", [robot(0)], ROBOT_HEADERS)
    done = cli(["validate", "robots.csv"], tmp_path)
    assert done.returncode == 2
    assert "user_identify" in done.stderr
    assert "Traceback" not in done.stderr


# --- a spec file: the README's worked example -------------------------------------------------


@pytest.fixture
def tag_spec(tmp_path: Path) -> Path:
    path = tmp_path / "customer_tags.toml"
    path.write_text(readme_spec(), encoding="utf-8")
    return path


def test_the_readme_spec_is_flat_with_list_date_boolean_identity_and_session(tag_spec):
    spec = parse_spec(tag_spec.read_text(encoding="utf-8"))
    assert spec.object_param is None
    assert spec.needs_session
    assert spec.success_path == ""
    assert spec.identity == ("tenant_id", "customer_id")
    assert {f.type for f in spec.fields} >= {"List<String>", "Date", "Boolean", "Number"}


def test_a_spec_file_sends_flat_parameters_end_to_end(tmp_path, simulator, tag_spec):
    sim = simulator(specs=[parse_spec(tag_spec.read_text(encoding="utf-8"))])
    rows = [tag_row(i) for i in range(12)]
    rows += [
        tag_row(20, 标签="a,,b"),  # an empty list item
        tag_row(21, 是否VIP="maybe"),
        tag_row(22, 到期时间="2025-02-30"),
        tag_row(23, 等级="4"),
        tag_row(24, 客户ID="C" * 65),
        tag_row(3, 标签="changed"),  # the identity of row 3 again
    ]
    write_csv(tmp_path / "tags.csv", rows, TAG_HEADERS)
    args = ["run", "tags.csv", "--api", "customer_tags.toml", "--no-progress"]
    done = cli(args, tmp_path, sim.env(TOP_SESSION=SESSION))
    assert done.returncode == 1, done.stderr
    result = read_sheet(tmp_path / "reports" / "tags.result.xlsx")
    assert [r["status"] for r in result] == ["success"] * 12 + ["invalid"] * 5 + ["duplicate"]
    errors = [r["error"] for r in result[12:17]]
    assert "tags 'a,,b' has an empty item" in errors[0]
    assert "vip 'maybe' must be true or false" in errors[1]
    assert "expire_time '2025-02-30' is not a real date" in errors[2]
    assert "level '4' is not one of the allowed values: 1, 2, 3" in errors[3]
    assert "is 65 characters long; at most 64 are allowed" in errors[4]
    assert "same payload as row 5" in result[17]["error"]
    stats = sim.stats()
    assert (stats["accepted"], stats["rejected"]) == (12, {})
    assert SESSION not in done.stdout + done.stderr

    again = cli(args, tmp_path, sim.env(TOP_SESSION=SESSION))
    assert statuses(tmp_path / "reports" / "tags.result.xlsx")["skipped"] == 12
    assert again.returncode == 1
    assert sim.stats()["accepted"] == 12


def test_a_spec_needing_a_session_stops_before_sending_without_one(tmp_path, simulator, tag_spec):
    sim = simulator(specs=[parse_spec(tag_spec.read_text(encoding="utf-8"))])
    write_csv(tmp_path / "tags.csv", [tag_row(i) for i in range(3)], TAG_HEADERS)
    done = cli(["run", "tags.csv", "--api", "customer_tags.toml"], tmp_path, sim.env())
    assert done.returncode == 2
    assert "TOP_SESSION" in done.stderr
    assert "Traceback" not in done.stderr
    assert sim.stats()["calls"] == 0


def test_validate_with_a_spec_file_needs_no_credentials(tmp_path, tag_spec):
    rows = [tag_row(1), tag_row(2, 租户ID="2.5")]
    write_csv(tmp_path / "tags.csv", rows, TAG_HEADERS)
    done = cli(["validate", "tags.csv", "--api", "customer_tags.toml"], tmp_path)
    assert done.returncode == 1, done.stderr
    result = read_sheet(tmp_path / "reports" / "tags.validate.xlsx")
    assert [r["status"] for r in result] == ["valid", "invalid"]
    assert "tenant_id '2.5'" in result[1]["error"]


def test_run_simulate_serves_the_spec_file(tmp_path, tag_spec):
    write_csv(tmp_path / "tags.csv", [tag_row(i) for i in range(6)], TAG_HEADERS)
    done = cli(
        ["run", "tags.csv", "--api", "customer_tags.toml", "--simulate", "--no-progress"],
        tmp_path,
        clean_env(TOP_SESSION=SESSION),  # the spec needs one, on the simulator as on the platform
    )
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / "reports" / "tags.result.xlsx") == {"success": 6}


# --- top-import apis ------------------------------------------------------------------------


def test_apis_lists_both_built_in_specs(tmp_path):
    done = cli(["apis"], tmp_path)
    assert done.returncode == 0, done.stderr
    for text in (
        "alibaba.lyservice.group.ticket.customer.save",
        ROBOT,
        "open_robot_code_relation_sync_request",
        "机器人编码",
        "session: not needed",
    ):
        assert text in done.stdout


def test_apis_describes_a_spec_file(tmp_path, tag_spec):
    done = cli(["apis", "customer_tags.toml"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("example.customer.tag.save")
    assert "flat parameters: tenant_id, customer_id, tags, level, vip, expire_time" in out
    assert "session: needed (TOP_SESSION)" in out
    assert "journal and duplicate key: tenant_id, customer_id" in out
    assert "at most 10 items; each item at most 20 characters" in out
    assert "one of: 1, 2, 3" in out


def test_apis_explains_every_mistake_of_a_spec_file(tmp_path):
    (tmp_path / "bad.toml").write_text(
        'title = "broken"\nobject_param = "req"\n'
        '[[fields]]\nname = "a"\ntype = "Blob"\naliases = ["Alpha"]\n'
        '[[fields]]\nname = "b"\ntype = "String"\naliases = ["alpha"]\n',
        encoding="utf-8",
    )
    done = cli(["apis", "bad.toml"], tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "API spec bad.toml has 3 mistakes:" in done.stderr
    assert "there is no method" in done.stderr
    assert "field 'a' has type 'Blob'" in done.stderr
    assert "header 'alpha' names both 'a' and 'b'" in done.stderr


def test_run_with_a_broken_spec_file_is_exit_2_before_reading(tmp_path):
    (tmp_path / "bad.toml").write_text('method = "x.y"\n', encoding="utf-8")
    done = cli(["validate", "missing.csv", "--api", "bad.toml"], tmp_path)
    assert done.returncode == 2
    assert "no [[fields]]" in done.stderr
    assert "Traceback" not in done.stderr
