"""Regenerates the README's pictures of a result workbook from a real ``run --simulate``.

    apt-get install libreoffice-calc-nogui poppler-utils fonts-noto-cjk
    python docs/make_pictures.py

Runs ``top-import run samples/with_errors.xlsx --simulate`` in a scratch folder, once in
English and once with ``--lang zh``, then renders the ``summary`` and the ``failed`` sheet of
each workbook to ``docs/summary.png`` and ``docs/failed.png`` (the Chinese run's 汇总 and 失败
sheets to ``docs/zh-summary.png`` and ``docs/zh-failed.png``; CJK text needs a CJK font:
``apt-get install fonts-noto-cjk``): LibreOffice headless prints a copy of the workbook in
which only that sheet is visible to PDF (with the print setup the workbook has: landscape, one
page wide), and ``pdftoppm`` makes the first page a PNG. The copy differs only in which sheets
are hidden, edited in the zip; the cells, formats, charts and print setup are the run's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "samples" / "with_errors.xlsx"
# sheet -> (its index in the workbook, the part of the page shown: width and height in
# inches from the top left corner, dots per inch); the same sheets in either language. The
# failed sheet is wide, so one page wide prints it small: at 240 dpi its Chinese stays legible
# when the picture is opened at full size.
SHEETS = {"summary": (3, 11.0, 6.2, 150), "failed": (1, 11.0, 1.0, 240)}
# --lang -> the prefix of its pictures' names (the English run says so: the machine's locale
# must not make the README's English pictures Chinese)
LANGS = {"en": "", "zh": "zh-"}


def printable(workbook: Path, index: int, out: Path) -> None:
    """A copy of ``workbook`` that prints only its ``index``-th sheet (the workbook's own print
    setup: landscape, one page wide)."""
    with zipfile.ZipFile(workbook) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/workbook.xml":
                sheets = re.findall(rb"<sheet [^>]*/>", data)
                for i, sheet in enumerate(sheets):
                    if i != index:
                        data = data.replace(sheet, sheet[:-2] + b' state="hidden"/>')
                data = data.replace(b"<workbookView ", b'<workbookView activeTab="%d" ' % index)
            elif item.filename.startswith("xl/worksheets/sheet"):
                data = data.replace(b' tabSelected="1"', b"")
            dst.writestr(item, data)


def main() -> None:
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None or shutil.which("pdftoppm") is None:
        sys.exit(
            "needs LibreOffice and pdftoppm: apt-get install libreoffice-calc-nogui poppler-utils"
        )
    for lang, prefix in LANGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            render(Path(tmp), lang, prefix, soffice)


def render(folder: Path, lang: str, prefix: str, soffice: str) -> None:
    """One ``--lang`` run of the sample in ``folder``, its sheets rendered to the pictures."""
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    args = ["--canary", "0", "--max-failure-rate", "1", "--no-progress", "--lang", lang]
    subprocess.run(
        [sys.executable, "-m", "importer", "run", SAMPLE.name, "--simulate", *args],
        cwd=folder,
        check=False,  # the sample has invalid rows: exit 1
    )
    workbook = folder / "reports" / "with_errors.result.xlsx"
    for name, (index, width, height, dpi) in SHEETS.items():
        copy = folder / f"{name}.xlsx"
        printable(workbook, index, copy)
        subprocess.run(
            [soffice, "--headless", "--convert-to", "pdf", "--outdir", str(folder), str(copy)],
            check=True,
            capture_output=True,
        )
        corner = ["-x", str(int(40 * dpi / 150)), "-y", str(int(60 * dpi / 150))]
        crop = [*corner, "-W", str(int(width * dpi)), "-H", str(int(height * dpi))]
        page = ["-f", "1", "-l", "1", "-singlefile", "-r", str(dpi), *crop]
        picture = HERE / f"{prefix}{name}"
        subprocess.run(
            ["pdftoppm", "-png", *page, str(folder / f"{name}.pdf"), str(picture)], check=True
        )
        print(f"docs/{picture.name}.png")


if __name__ == "__main__":
    main()
