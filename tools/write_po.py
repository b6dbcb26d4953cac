"""Write or update a zh_CN gettext catalog from a Python dict of translations.

Usage: python tools/write_po.py DOMAIN TRANSLATIONS.py
TRANSLATIONS.py defines ``T = {msgid: msgstr}``; existing entries of the domain are kept.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

LOCALE_DIR = Path(__file__).resolve().parent.parent / "ptu_verify" / "locale" / "zh_CN" / "LC_MESSAGES"


def main() -> None:
    domain, source = sys.argv[1], sys.argv[2]
    translations: dict[str, str] = runpy.run_path(source)["T"]
    path = LOCALE_DIR / f"{domain}.po"
    if path.exists():
        with path.open("rb") as handle:
            catalog = read_po(handle)
    else:
        catalog = Catalog(locale="zh_CN", domain=domain, project="ptu-verify", charset="utf-8")
    for msgid, msgstr in translations.items():
        catalog.add(msgid, msgstr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        write_po(handle, catalog, width=0, omit_header=False, sort_output=False)
    print(f"{path}: {len(catalog)} messages")


if __name__ == "__main__":
    main()
