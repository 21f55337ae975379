"""The links of a text as `links_outside` reads them (`contracts.textnorm.link_hosts`): the same
links and hosts as a plain statement of the rules, however the scan is made fast."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import textnorm
from contracts.textnorm import link_hosts

# ---- the reference: the rules stated plainly, a Python step per link -------------------------

# Anything with a scheme and two slashes (either way round), a bare `www.` host, a bare host
# followed by a path; each alternative starts only where a run of its characters starts; a link
# runs to the next delimiter (white space, `<`, `>`, a quote, a backtick).
_REFERENCE_LINK = re.compile(
    r"(?:(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*:[/\\]{2}"
    r"|(?<![\w.-])www\."
    r"|(?<![\w.-])(?P<bare>[\w-]+\.[\w.-]*)(?=[/\\]))"
    r"[^\s<>\"'`]*+"
)
_REFERENCE_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:[/\\]{2}")
_REFERENCE_AUTHORITY_END = re.compile(r"[/?#]")


def reference_link_hosts(value: str) -> Iterator[str | None]:
    """The host of every link in a text, in order, None for a link whose host does not parse."""
    for match in _REFERENCE_LINK.finditer(textnorm.text(value)):
        bare = match.group("bare")
        if bare is not None and not bare.rstrip(".").rsplit(".", 1)[-1][:1].isalpha():
            continue  # a version or a fraction before a slash (`4.2/5`), not a host
        link = match.group(0).rstrip(".,;:!?)]}")
        url = (link if _REFERENCE_SCHEME.match(link) else "http://" + link).replace("\\", "/")
        end = _REFERENCE_AUTHORITY_END.search(url, url.index("//") + 2)
        yield textnorm.url_host(url if end is None else url[: end.start()])


# What links are made of, and what sits around them: schemes in several spellings, `www.`,
# hosts (a look-alike, a broken one, a number), every kind of delimiter, closing punctuation,
# the start of a path, a query or a fragment, and the characters the look-behinds tell apart.
FRAGMENTS = [
    "https://", "://", "http:\\\\", "HTTPS：／／", "ftp://", "x+y.z://", "www.", "WWW.", "ｗｗｗ.", "wwww.",
    "team.example", "wiki.team.example", "evil.example", "тeam.example", "-bad-.example", "xn--",
    "4.2", "a", "w", "ww", "é", "ß", "_", "+", "-", ".", "..", ",", ";", ":", "!", "?", ")", "]", "}",
    "(", "[", "/", "\\", "//", "#", "@", "u:p@", ":8080", " ", "  ", "\t", "\n", "\r", "\x0b", "\x1c",
    "\x85", "\u00a0", "\u2003", "\u3000", "<", ">", '"', "'", "`",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=3000, deadline=None)
@given(text=texts)
def test_link_hosts_finds_the_hosts_the_plain_rules_find(text: str) -> None:
    """Over texts built from pieces of links, the scan finds exactly the hosts (and the hosts
    that do not parse) of the rules stated plainly."""
    assert link_hosts(text) == set(reference_link_hosts(text))


# ---- edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        # The same host, linked many times and in several spellings, is one host.
        (" ".join(f"https://team.example/{i}" for i in range(500)) + " HTTPS://TEAM.example./x", {"team.example"}),
        # Closing punctuation after a link's host is not part of it...
        ("(see https://evil.example.)", {"evil.example"}),
        ("https://team.example.,;", {"team.example"}),
        ("https://team.example..?", {"team.example"}),
        ("https://a.example..?..", {"a.example"}),
        # ...but a query after it keeps what comes before it, dots and all.
        ("https://a.example..?q", {"a.example."}),
        ("https://a.example?x", {"a.example"}),
        ("https://a.example#top", {"a.example"}),
        ("see www.evil.example, then", {"www.evil.example"}),
        ("www.", {"www"}),
        ("https://", {None}),
        # A word holds one link, the one that starts first in it.
        ("ab.example/https://evil.example", {"ab.example"}),
        # Any delimiter ends a word, not only a space.
        ("see\thttps://evil.example", {"evil.example"}),
        ("<https://evil.example>", {"evil.example"}),
        ('"https://evil.example"', {"evil.example"}),
        ("\u2003https://evil.example", {"evil.example"}),
        ("x\x1chttps://evil.example", {"evil.example"}),
        ("ftp:\\\\evil.example\\x", {"evil.example"}),
        # Words with a `w` before a `www.` link; a `www.` inside a longer name is none.
        ("with wow www.evil.example", {"www.evil.example"}),
        ("wwww.evil.example", set()),
        # A `www.` name read as a scheme, where only a `www.` link may start (after a `+`).
        ("see +www.evil.example://x.example/", {"x.example"}),
        ("4.2/5 and www.team.example", {"www.team.example"}),
    ],
)
def test_link_hosts_of_texts_at_the_edges(text: str, hosts: set[str | None]) -> None:
    assert link_hosts(text) == hosts == set(reference_link_hosts(text))


def test_str_split_splits_at_exactly_the_white_space_of_the_patterns() -> None:
    """Before the scan, a text outside ASCII has its white space made spaces by `str.split`: it
    must split at exactly what `\\s` matches, and the ASCII delimiters be the rest of them."""
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    space = set(re.findall(r"\s", everything))
    assert {c for c in everything if len(f"a{c}a".split()) == 2} == space
    assert set(textnorm._ASCII_DELIMITERS) == {c for c in space if c.isascii()} - {" "} | set("<>\"'`")


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000 + "/",
        "w" * 200_000 + "/",
        "wwww." * 100_000 + "/",
        "a/" * 200_000,
        "and/or " * 100_000,
        "x:" * 200_000 + "//",
        "https://x" + "?" * 200_000,
        "https://x?" + "." * 200_000 + "x",
        "+www.a" * 100_000 + "/",
        "é/ " * 100_000,
        "ab " * 200_000 + "/",
    ],
)
@pytest.mark.timeout(60)
def test_link_hosts_reads_long_texts_in_linear_time(text: str) -> None:
    """Shapes that would be quadratic if a skip or a host part read the same stretch again from
    every position in it: read in linear time they take a fraction of a second at hundreds of
    thousands of characters; read again from every position they would take hours, and the
    timeout fails the test. (How fast the scan is belongs to `make bench`.)"""
    assert link_hosts(text) == set(reference_link_hosts(text))
