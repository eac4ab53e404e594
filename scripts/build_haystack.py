#!/usr/bin/env python
"""Rebuild ``src/kvlab/data/austen.txt.gz``, the public-domain haystack kvlab's benchmarks ship.

Source: Debian's ``r-cran-janeaustenr`` (1.0.0-1; the CRAN package ``janeaustenr`` by Julia Silge,
MIT licence for the package). The six novels it carries -- Sense and Sensibility (1811), Pride and
Prejudice (1813), Mansfield Park (1814), Emma (1815), Northanger Abbey and Persuasion (1817) --
are in the public domain. The text sits in R's lazy-load database ``data/Rdata.rdb``/``.rdx``;
PyPI's ``rdata`` reads it without R. Usage (no R needed)::

    apt-get download r-cran-janeaustenr
    dpkg-deb -x r-cran-janeaustenr_*.deb /tmp/janeaustenr
    pip install rdata
    python scripts/build_haystack.py /tmp/janeaustenr

Output: gzip UTF-8 text, the novels in publication order, each opening with its title line;
paragraphs separated by one blank line, a paragraph's printed lines joined with spaces, chapter
and volume headings dropped. The build is deterministic (gzip mtime 0), so rerunning it yields
the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sys
import zlib
from pathlib import Path

NOVELS = (  # (key in the R database, title), publication order
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
)
HEADING = re.compile(r"^(chapter|volume)\s+([ivxlc\d]+|[a-z]+)\.?\s*$", re.IGNORECASE)
OUT = Path(__file__).resolve().parents[1] / "src" / "kvlab" / "data" / "austen.txt.gz"


def read_novels(root: Path) -> dict[str, list[str]]:
    """Each novel's printed lines, read from the package's lazy-load database with ``rdata``."""
    import warnings

    import rdata

    data = next(root.rglob("janeaustenr/data/Rdata.rdx"), None)
    if data is None:
        sys.exit(f"no janeaustenr/data/Rdata.rdx under {root}: extract r-cran-janeaustenr there first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(data.read_bytes())))
        blob = data.with_suffix(".rdb").read_bytes()
        novels = {}
        for key, (offset, length) in index["variables"].items():
            record = blob[int(offset):int(offset) + int(length)]
            raw = zlib.decompress(record[4:])  # 4-byte length header, then a zlib stream
            value = rdata.conversion.convert(rdata.parser.parse_data(raw))
            novels[str(key)] = [str(line) if line is not None else "" for line in value]
    return novels


def paragraphs(lines: list[str]) -> list[str]:
    out, current = [], []
    for line in lines:
        line = line.strip()
        if not line or HEADING.match(line):
            if current:
                out.append(" ".join(current))
                current = []
            continue
        current.append(line)
    if current:
        out.append(" ".join(current))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="directory where r-cran-janeaustenr's .deb was extracted")
    parser.add_argument("-o", "--output", type=Path, default=OUT, help="(default: %(default)s)")
    args = parser.parse_args()
    novels = read_novels(args.root)
    parts = []
    for key, title in NOVELS:
        paras = paragraphs(novels[key])
        if paras and paras[0].lower() == title.lower():  # the R data opens with the title
            paras = paras[1:]
        parts.append("\n\n".join([title, *paras]))
    text = "\n\n".join(parts) + "\n"
    with open(args.output, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    words = len(text.split())
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    print(f"wrote {args.output}: {words} words, {len(text)} characters, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
