"""The legacy import's template files, built from the columns the importer reads:
``import_template.xlsx`` and ``import_template.csv`` (UTF-8 with BOM, which Excel opens
as Unicode) next to this module — a header row "客户名称 customer_name" … and one example.

    .venv/bin/python -m cloud.registry.import_template [DIRECTORY]
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

from cloud.registry.import_core import COLUMNS

HERE = Path(__file__).parent
_NOTES = {
    "customer_name": ("必填", "required"),
    "account_number": ("必填；保留原系统户号，文件内及系统中唯一", "required; the legacy number"),
    "premises_kind": ("shop/flat/office/unit 或 商铺/住宅/办公/单元，默认商铺", "default shop"),
    "floor_area": ("平方米，最多2位小数", "m², at most 2 decimals"),
    "utility": ("electricity/water 或 电/水", "electricity or water"),
    "tariff": ("系统中已有的电价方案名称", "an existing tariff's name"),
    "meter_profile": ("表型号，如 acrel-ddsy1352-modbus", "a meter profile's model"),
    "gateway_code": ("本集团网关编号", "a gateway of this group"),
    "address": ("Modbus 1–247；DL/T 645 12位；CJ/T 188 14位", "Modbus 1-247, 12 or 14 digits"),
    "channel": ("多回路表的回路号，默认1", "default 1"),
    "meter_number": ("可选，默认 总线-地址", "optional; default bus-address"),
    "install_register": ("最多3位小数", "at most 3 decimals"),
    "opening_balance": ("元，最多2位小数，欠费为负数", "yuan, 2 decimals, arrears negative"),
}


def csv_bytes() -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([c.header for c in COLUMNS])
    writer.writerow([c.example for c in COLUMNS])
    return buf.getvalue().encode("utf-8-sig")


def xlsx_bytes() -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "导入 import"
    sheet.append([c.header for c in COLUMNS])
    sheet.append([c.example for c in COLUMNS])
    for i, c in enumerate(COLUMNS, start=1):
        letter = get_column_letter(i)
        sheet.column_dimensions[letter].width = max(14, len(c.header) + 6)
        sheet.column_dimensions[letter].number_format = "@"  # text: 000012 keeps its zeros
        sheet.cell(row=1, column=i).font = Font(bold=c.required)
        sheet.cell(row=2, column=i).number_format = "@"
    sheet.freeze_panes = "A2"
    notes = book.create_sheet("说明 notes")
    notes.append(["列 column", "必填 required", "说明", "notes"])
    for c in COLUMNS:
        zh, en = _NOTES.get(c.key, ("", ""))
        notes.append([c.header, "是 yes" if c.required else "否 no", zh, en])
    fixed = datetime(2026, 1, 1, tzinfo=UTC)
    book.properties.created = book.properties.modified = fixed
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def write(directory: Path = HERE) -> list[Path]:
    out = [directory / "import_template.csv", directory / "import_template.xlsx"]
    out[0].write_bytes(csv_bytes())
    out[1].write_bytes(xlsx_bytes())
    return out


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        sys.stdout.write(f"{path}\n")
