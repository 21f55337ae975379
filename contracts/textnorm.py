"""Text as the policy compares it: one spelling for what a person reads as the same thing.

Every text test of a rule sees its value, and its literal, in the same normal form, so that a
fullwidth, upper-case or trailing-dot spelling does not slip past a rule written in plain letters:

    text     Unicode NFKC (compatibility forms folded: fullwidth letters, ligatures), then casefold
    domain   the text form, one trailing dot dropped, then IDNA (UTS #46) to its ASCII form, so a
             look-alike in another script stays a different domain (xn--...) and never equals it
    URL      WHATWG's reading of what a browser would open: tabs and newlines removed, a
             backslash read as a slash, scheme://[userinfo@]host[:port]; the host as a domain

A value that does not parse (an address without a domain, a URL without a host, a label IDNA
refuses) gives None, and the rule over it fails closed (`policy.engine`). Pure functions, no I/O:
workflow code decides with them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import urlsplit

import idna

# A listed `*.example.com` covers the subdomains of example.com (not example.com itself); a plain
# entry covers exactly that domain.
WILDCARD = "*."

# What counts as a link in a text: anything with a scheme and two slashes (either way round, as a
# browser reads `https:\\host`), a bare `www.` host, and a bare host followed by a path
# (`evil.example/login`), which chat and mail clients turn into a link. A bare name without a
# path (`team.example`) is not counted, nor a number before a slash (`4.2/5`). The text is in its
# normal form first, so a fullwidth colon or slash is already the ASCII one.
#
# The text comes from the agent, so the scan must stay linear in its length: each alternative
# may only start where a run of its characters starts (the look-behinds), so that a long run of
# `a.a.a.` is read once, not once from every position in it.
_LINK = re.compile(
    r"(?:(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*:[/\\]{2}"
    r"|(?<![\w.-])www\."
    r"|(?<![\w.-])(?P<bare>[\w-]+\.[\w.-]*)(?=[/\\]))"
    r"[^\s<>\"'`]*+"
)
# Every link the scan finds has one of these: a slash either way round, or `www.`.
_LINK_MARKS = ("/", "\\", "www.")
_AUTHORITY_END = re.compile(r"[/?#]")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:[/\\]{2}")
_TABS_AND_NEWLINES = str.maketrans("", "", "\t\n\r")


def text(value: str) -> str:
    """The form every text test compares: NFKC, then casefold."""
    return unicodedata.normalize("NFKC", value).casefold()


def domain(value: str) -> str | None:
    """A domain in its ASCII (IDNA) form, or None when it is not one."""
    name = text(value).strip()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    if _PLAIN.fullmatch(name) is not None:
        return name
    return _idna(name)


# A name of lower-case ASCII letters-digits-hyphens labels, none starting or ending with a hyphen
# nor with `--` in its third and fourth places: IDNA leaves such a name as it is, and most hosts
# are one. They skip the IDNA library (pure Python, about 20 us a name); the others (`xn--`
# among them) go through it, which checks them.
_LABEL = r"(?!..--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


@functools.lru_cache(maxsize=4096)
def _idna(name: str) -> str | None:
    # Pure, so a cache changes no answer: the same look-alike in a run's every call is read once.
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def listed_domain(entry: str) -> str | None:
    """A domain list's entry in normal form (`*.` kept in front), or None when it is not one."""
    entry = entry.strip().lstrip("@")
    if entry.startswith(WILDCARD):
        base = domain(entry[len(WILDCARD) :])
        return None if base is None else WILDCARD + base
    return domain(entry)


def email_domain(value: str) -> str | None:
    """The domain of an e-mail address, or None when the value is not `local@domain`."""
    local, at, rest = value.rpartition("@")
    if not at or not local or not rest:
        return None
    return domain(rest)


def url_host(value: str) -> str | None:
    """The host of a URL as a domain, or None when the value has no scheme and host."""
    raw = unicodedata.normalize("NFKC", value).translate(_TABS_AND_NEWLINES).strip().replace("\\", "/")
    try:
        parts = urlsplit(raw)
        host = parts.hostname
    except ValueError:
        return None
    if not parts.scheme or host is None:
        return None
    return domain(host)


def link_hosts(value: str) -> Iterator[str | None]:
    """The host of every link in a text, in order, None for a link whose host does not parse."""
    normal = text(value)
    if not any(mark in normal for mark in _LINK_MARKS):
        return  # most texts link nowhere, and these substring tests cost far less than the scan
    hosts: dict[str, str | None] = {}
    for match in _LINK.finditer(normal):
        bare = match.group("bare")
        if bare is not None and not bare.rstrip(".").rsplit(".", 1)[-1][:1].isalpha():
            continue  # a version or a fraction before a slash (`4.2/5`), not a host
        # Punctuation that closes a sentence or a bracket around a link is not part of it.
        link = match.group(0).rstrip(".,;:!?)]}")
        url = (link if _SCHEME.match(link) else "http://" + link).replace("\\", "/")
        # Only the scheme and the authority name the host, so the path is cut off before parsing
        # (as `urlsplit` would): a text of many links to a few hosts parses each host once.
        end = _AUTHORITY_END.search(url, url.index("//") + 2)
        authority = url if end is None else url[: end.start()]
        if authority not in hosts:
            hosts[authority] = url_host(authority)
        yield hosts[authority]


def covered(name: str, entries: frozenset[str]) -> bool:
    """Whether a domain (normal form) is one of the listed entries (normal form)."""
    if name in entries:
        return True
    labels = name.split(".")
    return any(WILDCARD + ".".join(labels[i:]) in entries for i in range(1, len(labels)))
