"""Column widths of the result workbook count a CJK character as two (the README: headers and
values show whole): Excel, WPS and LibreOffice draw a wide character about twice as wide as a
Latin one, so a Chinese header sized by its length alone is cut by the next column."""

from __future__ import annotations

import html
import itertools
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from helpers import cli, read_sheet, ticket, write_csv

from importer.reporter import display_width

# The built-in API's Chinese column headers (its aliases), so the input's headers are CJK too.
CHINESE_HEADERS = {
    "corp_id": "钉钉组织ID",
    "user_identify": "用户唯一加密键",
    "case_id": "工单ID",
    "tenant_id": "租户ID",
    "open_conversation_id": "群开放ID",
}


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("", 0),
        ("status", 6),  # ASCII: its length
        ("状态", 4),  # CJK ideographs: W
        ("子错误信息", 10),
        ("工单ID", 6),  # mixed
        ("耗时(毫秒)", 10),  # ASCII brackets: narrow
        ("耗时（毫秒）", 12),  # full-width brackets: F
        ("vip，新客", 9),  # the full-width comma a list cell may hold
        ("ＡＢＣ", 6),  # full-width Latin: F
        ("ｶﾀｶﾅ", 4),  # half-width katakana: H, narrow
        ("한국어", 6),  # Hangul: W
        ("café", 4),  # Latin with an accent: narrow
        ("—…", 2),  # ambiguous (A): narrow, as in a Latin font
        ("ไทย", 3),  # neutral (N)
        ("😀", 2),  # emoji: W
        ("待核对 check", 12),
    ],
)
def test_display_width_counts_east_asian_wide_characters_double(text, width):
    assert display_width(text) == width


_WORD = re.compile(
    r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>'
)


def first_page_words(pdf: Path) -> list[tuple[float, float, float, str]]:
    """The words of the PDF's first page as (left, top, right, text), from ``pdftotext
    -bbox``: a word is a run of glyphs with no gap, so a header that ran into the next cell's
    text would come out as one word with it, or cut short."""
    done = subprocess.run(
        ["pdftotext", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        (float(x0), float(y0), float(x1), html.unescape(text))
        for x0, y0, x1, _, text in _WORD.findall(done.stdout)
    ]


@pytest.mark.skipif(
    shutil.which("soffice") is None or shutil.which("pdftotext") is None,
    reason="needs LibreOffice and pdftotext: apt-get install libreoffice-calc-nogui poppler-utils",
)
def test_a_chinese_workbook_shows_every_chinese_header_whole_in_libreoffice(tmp_path, simulator):
    # Few, short values: the header alone sizes a column (错误码, 子错误信息, 耗时(毫秒) are
    # empty or short for a success; a column of the user's, echoed, with a long header and
    # short notes), and a header too wide for its column runs into the next one's. LibreOffice
    # draws a CJK character about 1.5 digits wide (Excel with a Chinese font: 2), so a header
    # of 8 counted as 8 is cut; counted as 16 it is whole.
    note = "客服处理情况备注"
    rows = [
        {**{CHINESE_HEADERS[k]: v for k, v in ticket(i).items()}, note: "已回访"} for i in range(3)
    ]
    write_csv(tmp_path / "t.csv", rows, headers=[*CHINESE_HEADERS.values(), note])
    sim = simulator()
    done = cli(["run", "t.csv", "--lang", "zh", "--no-progress"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    workbook = tmp_path / "reports" / "t.result.xlsx"
    headers = list(read_sheet(workbook, "结果")[0])
    chinese = [h for h in headers if any(unicodedata.east_asian_width(c) == "W" for c in h)]
    assert {"状态", "子错误信息", "耗时(毫秒)", "钉钉组织ID", note} <= set(chinese)

    # The first page of the PDF is the first sheet's (结果), printed one page wide: its header
    # row is the top line of words.
    profile = (tmp_path / "lo-profile").as_uri()  # its own: other soffice runs may be going
    subprocess.run(
        [
            *("soffice", f"-env:UserInstallation={profile}", "--headless"),
            *("--convert-to", "pdf", "--outdir", str(tmp_path), str(workbook)),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    words = first_page_words(tmp_path / "t.result.pdf")
    top = min(y for _, y, _, _ in words)
    header_line = sorted((x0, x1, t) for x0, y, x1, t in words if abs(y - top) < 2)
    assert [t for _, _, t in header_line] == headers  # each header one word, whole, in order
    for (_, right, text), (left, _, after) in itertools.pairwise(header_line):
        assert right < left, f"{text} runs into {after}"
