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

import re
import unicodedata
from urllib.parse import urlsplit

import idna
import re2

# A listed `*.example.com` covers the subdomains of example.com (not example.com itself); a plain
# entry covers exactly that domain.
WILDCARD = "*."

# What counts as a link in a text: anything with a scheme and two slashes (either way round, as a
# browser reads `https:\\host`), a bare `www.` host, and a bare host followed by a path
# (`evil.example/login`), which chat and mail clients turn into a link. A bare name without a
# path (`team.example`) is not counted. The text is in its normal form first, so a fullwidth
# colon or slash is already the ASCII one. RE2, as for a rule's `regex`: the text comes from the
# agent, and Python's `re` takes quadratic time over a long run of `a.a.a.`.
_LINK = re2.compile(r"(?:\b[a-z][a-z0-9+.-]*:[/\\]{2}|\bwww\.|(?:[\pL\pN-]+\.)+\pL[\pL\pN-]*[/\\])[^\s<>\"'`]*")
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


def link_hosts(value: str) -> list[str | None]:
    """The host of every link in a text, None for a link whose host does not parse."""
    hosts: list[str | None] = []
    for match in _LINK.finditer(text(value)):
        # Punctuation that closes a sentence or a bracket around a link is not part of it.
        link = match.group(0).rstrip(".,;:!?)]}")
        hosts.append(url_host(link if _SCHEME.match(link) else "http://" + link))
    return hosts


def covered(name: str, entries: frozenset[str]) -> bool:
    """Whether a domain (normal form) is one of the listed entries (normal form)."""
    if name in entries:
        return True
    labels = name.split(".")
    return any(WILDCARD + ".".join(labels[i:]) in entries for i in range(1, len(labels)))
