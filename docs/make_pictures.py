"""Regenerates the README's pictures of a result workbook from a real ``run --simulate``.

    apt-get install libreoffice-calc-nogui poppler-utils
    python docs/make_pictures.py

Runs ``top-import run samples/with_errors.xlsx --simulate`` in a scratch folder, then renders
the ``summary`` and the ``failed`` sheet of its workbook to ``docs/summary.png`` and
``docs/failed.png``: LibreOffice headless prints a copy of the workbook in which only that
sheet is visible to PDF (with the print setup the workbook has: landscape, one page wide), and
``pdftoppm`` makes the first page a PNG. The copy differs only in which sheets are hidden,
edited in the zip; the cells, formats, charts and print setup are the run's.
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
# inches from the top left corner)
SHEETS = {"summary": (3, 11.0, 6.2), "failed": (1, 11.0, 1.6)}
DPI = 150


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
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(SAMPLE, folder / SAMPLE.name)
        args = ["--canary", "0", "--max-failure-rate", "1", "--no-progress"]
        subprocess.run(
            [sys.executable, "-m", "importer", "run", SAMPLE.name, "--simulate", *args],
            cwd=folder,
            check=False,  # the sample has invalid rows: exit 1
        )
        workbook = folder / "reports" / "with_errors.result.xlsx"
        for name, (index, width, height) in SHEETS.items():
            copy = folder / f"{name}.xlsx"
            printable(workbook, index, copy)
            subprocess.run(
                [soffice, "--headless", "--convert-to", "pdf", "--outdir", tmp, str(copy)],
                check=True,
                capture_output=True,
            )
            crop = [
                "-x",
                "40",
                "-y",
                "60",
                "-W",
                str(int(width * DPI)),
                "-H",
                str(int(height * DPI)),
            ]
            page = ["-f", "1", "-l", "1", "-singlefile", "-r", str(DPI), *crop]
            subprocess.run(
                ["pdftoppm", "-png", *page, str(folder / f"{name}.pdf"), str(HERE / name)],
                check=True,
            )
            print(f"docs/{name}.png")


if __name__ == "__main__":
    main()
