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
# A link runs from where it starts to the end of its word: the run of characters up to a
# delimiter (white space, `<`, `>`, a quote, a backtick), so a word holds one link at most, the
# one that starts first in it. Before the scan every delimiter becomes a space and every
# backslash a slash (`_words`), which changes no word and no link (the URL's reading turns
# backslashes into slashes too), and lets the patterns name one delimiter, which the regex
# engine tests far faster than a class with `\s` in it.
#
# The scan reports, per link, only the part that names its host (`_KEY`), so that a text of many
# links to a few hosts reads each host once, and the work per link stays inside the regex engine
# (one findall) instead of a Python step per link.
#
# The text comes from the agent, so the scan must stay linear in its length: each alternative
# may only start where a run of its characters starts (the look-behinds), so that a long run of
# `a.a.a.` is read once, not once from every position in it; every quantifier after a start is
# possessive or cannot backtrack out of the run it is in.
#
# Punctuation that closes a sentence or a bracket around a link is not part of it: it is
# stripped from the link's end.
_CLOSING = ".,;:!?)]}"
_C = re.escape(_CLOSING)
# The host part of a link: up to its path, query or fragment; then one character of what follows
# when that survives the stripping of closing punctuation: `/` or `#`, or a `?` followed (after
# any closing punctuation) by one more character of the word. Without that witness the link ends
# with its host part, and closing punctuation comes off the host part itself.
_HOST_PART = rf"[^ /?#]*+(?:[/#]|\?[{_C}]*+[^ {_C}])?"
_KEY = (
    # A scheme and `//`. A `www.` name followed by `:` and `//` reads as a scheme too (the URL's
    # reading takes it as one); it may also start after a `+`, where a `www.` link may start.
    rf"(?:(?<![a-z0-9+.-])|(?<=\+)(?=www\.))[a-z][a-z0-9+.-]*+://{_HOST_PART}"
    rf"|(?<![\w.-])www\.{_HOST_PART}"
    # A bare host and the slash after it.
    r"|(?<![\w.-])[\w-]++\.[\w.-]*+/"
)
# Before a link, the words that cannot hold one (no `/`, no `www.`) are skipped, each with the
# spaces after it. The skip starts only where a word starts, so that a word it cannot skip is
# not read again from every position in it.
_SKIP = r"(?:(?<![^ ])(?:[^ /w]*+(?:w(?!ww\.)[^ /w]*+)*+ ++)*+)?"
# Where no link starts, the match moves on by a character, or by a run of them where none can
# start one: a letter, digit, `.` or `-` after one of these (every look-behind refuses it), so
# that a word full of slashes and no link is not read a character per match.
_NO_START = r"(?:[a-z0-9.-]++|[\s\S]) *+"
# Each match is a skip, then a link (its key in the group, the rest of its word, the spaces after
# it) or a step on; findall gives "" for a match without a link.
_LINK = re.compile(rf"{_SKIP}(?:({_KEY})[^ ]*+ *+|{_NO_START})?")
# The delimiters of words but the space and the white space outside ASCII (`_words` reads those
# apart): what `\s` matches in ASCII, and the characters that end a link in a text.
_ASCII_DELIMITERS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f<>\"'`"
# Every link the scan finds has one of these: a slash (either way round) or `www.`.
_LINK_MARKS = ("/", "\\", "www.")
_AUTHORITY_END = re.compile(r"[/?#]")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
_TABS_AND_NEWLINES = str.maketrans("", "", "\t\n\r")


def _words(normal: str) -> str:
    """The text with every delimiter of words a space, and every backslash a slash."""
    if not normal.isascii():
        normal = " ".join(normal.split())  # `str.split` splits at exactly the white space of `\s`
    # Substring tests and replacements cost far less than a translation (or a regex), and most
    # texts hold few of these, if any.
    for delimiter in _ASCII_DELIMITERS:
        if delimiter in normal:
            normal = normal.replace(delimiter, " ")
    return normal.replace("\\", "/") if "\\" in normal else normal


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


def link_hosts(value: str) -> set[str | None]:
    """The host of every link in a text (each once), None for a link whose host does not parse."""
    normal = text(value)
    if not any(mark in normal for mark in _LINK_MARKS):
        return set()  # most texts link nowhere, and these substring tests cost far less than the scan
    hosts: set[str | None] = set()
    # One key per host part, however many links share it: each is read once.
    for key in set(_LINK.findall(_words(normal))):
        if key:
            hosts.update(_cached_key_host(key) if len(key) <= _CACHED_KEY else _key_host(key))
    return hosts


def _key_host(key: str) -> tuple[str | None, ...]:
    """The host a link's key names (None when it does not parse), or none for a bare name that
    is a version or a fraction before a slash (`4.2/5`)."""
    scheme = _SCHEME.match(key)
    if scheme is None and not key.startswith("www.") and not _bare_host(key[:-1]):
        return ()
    # Punctuation that closes a sentence or a bracket around a link is not part of it.
    link = key.rstrip(_CLOSING)
    url = link if scheme is not None else "http://" + link
    # Only the scheme and the authority name the host, so the path is cut off before parsing.
    end = _AUTHORITY_END.search(url, url.index("//") + 2)
    return (url_host(url if end is None else url[: end.start()]),)


def _bare_host(name: str) -> bool:
    """Whether a bare name before a slash ends in a label that starts with a letter."""
    return name.rstrip(".").rsplit(".", 1)[-1][:1].isalpha()


# A key of a name (253 characters at most), a scheme, a port and a short user name; a longer one
# is read each time, so that the cache holds no long text from an agent.
_CACHED_KEY = 320
# Pure, so a cache changes no answer: a run's texts link to the same few hosts, and reading a
# URL costs more than the whole scan of a link.
_cached_key_host = functools.lru_cache(maxsize=4096)(_key_host)


def covered(name: str, entries: frozenset[str]) -> bool:
    """Whether a domain (normal form) is one of the listed entries (normal form)."""
    if name in entries:
        return True
    labels = name.split(".")
    return any(WILDCARD + ".".join(labels[i:]) in entries for i in range(1, len(labels)))
