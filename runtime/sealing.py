"""Secret values: sealed wherever Airlock records them, clear only inside the tool call that uses them.

A tool marks an argument or result field secret (`tools.secrets.Secret`). The worker seals such a
value into an opaque token, `{"$airlock_secret": "v1.<key id>.<ciphertext>"}`, the moment it
appears (a model's proposal, a tool's output) and unseals it only inside the tool's own activity,
just before the tool runs. Workflows, and so histories, queries, reports, `airlock show`, audit
lines and workflow logs, only ever hold tokens. See docs/secrets.md.

Sealing is AES-SIV (RFC 5297) under a key only workers hold. It is deterministic: one value, one
key and one workspace always give the same token. That is what keeps a retried call identical to
its first attempt (the idempotency ledger's argument hash, approval ids, loop detection) without
anything ever comparing clear values. The price, named in the docs: two equal secrets in one
workspace have equal tokens. The workspace is authenticated with the token, so a token copied
into another workspace's run does not open there.

Nothing here does I/O except `Keyring.load` (the worker calls it once, at start). The scope of a
tool call (`sealing`) lives in a context variable, so the type's validators and serializers find
it without Airlock threading it through every tool's code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import os
import secrets as random
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from contracts.models import SECRET_TOKEN_KEY as TOKEN_KEY

VERSION = "v1"
# What a record shows where a secret was: in a diff, or where a careless tool echoed one.
REDACTED = "(secret)"
CHANGED = "(secret: changed)"
# Secrets shorter than this are not searched for in free text: scrubbing "a" would eat every
# message. Tools give their secrets a minimum length (the demo's passwords: 12).
SCRUB_MIN_LEN = 4
KEY_SIZES = (32, 48, 64)  # AES-SIV key sizes: AES-128, -192 and -256
_LABEL = b"airlock.secret.v1"
# A token is bounded: a secret field holds a password or a token, not a document.
MAX_TOKEN_CHARS = 16_384


class SecretError(ValueError):
    """A token that cannot be opened here: malformed, tampered, from another workspace, or sealed
    under a key this worker does not hold. A ValueError, so a tool's input model reports it as an
    invalid argument (naming the field, never the value)."""


def is_token(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(TOKEN_KEY), str)


def key_id(key: bytes) -> str:
    """A short public name for a key, written into every token it seals (rotation needs it)."""
    return hashlib.sha256(b"airlock.secret.key-id" + key).hexdigest()[:8]


def new_key() -> str:
    """A fresh AES-256-SIV key, as the text `AIRLOCK_SECRETS_KEY` and key files hold."""
    return base64.urlsafe_b64encode(random.token_bytes(64)).decode()


class Keyring:
    """The worker's keys. The first one seals; every one of them opens tokens it sealed."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise ValueError(f"a secrets key is {' or '.join(map(str, KEY_SIZES))} bytes, not {len(key)}")
        self._ciphers = {key_id(k): AESSIV(k) for k in keys}
        self.current = key_id(keys[0])

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Keys as base64 (standard or URL-safe), separated by commas or whitespace, newest first."""
        keys = []
        for part in text.replace(",", " ").split():
            try:
                keys.append(base64.urlsafe_b64decode(part.replace("+", "-").replace("/", "_")))
            except (binascii.Error, ValueError):
                raise ValueError("a secrets key is not valid base64") from None
        return cls(keys)

    @classmethod
    def load(cls, inline: str | None, path: Path) -> Keyring:
        """`AIRLOCK_SECRETS_KEY` when set; else the key file, created with a new key (mode 0600)
        when it does not exist yet: the development default, which a production worker replaces
        with a key of its own (docs/secrets.md)."""
        if inline:
            return cls.parse(inline)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another worker created it a moment ago; read theirs
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(new_key() + "\n")
        return cls.parse(path.read_text())

    def seal(self, clear: str, workspace: str) -> str:
        sealed = self._ciphers[self.current].encrypt(clear.encode(), [_LABEL, workspace.encode()])
        return f"{VERSION}.{self.current}.{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}"

    def unseal(self, token: str, workspace: str) -> str:
        if len(token) > MAX_TOKEN_CHARS:
            raise SecretError("the sealed secret is too long")
        version, _, rest = token.partition(".")
        kid, _, body = rest.partition(".")
        if version != VERSION or not body:
            raise SecretError("not a sealed secret")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SecretError(f"the secret was sealed under key {kid!r}, which this worker does not hold")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw, [_LABEL, workspace.encode()]).decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise SecretError("the sealed secret does not open here (altered, or from another workspace)") from None


class Sealer:
    """Sealing and unsealing for one tool call or one model decision, in one workspace.

    It remembers every clear value it handled, so that what the call returns can be searched for
    them (`scrub`), and the token each came in as, so that a value read from a token is written
    back as that same token even after a key rotation: a call's arguments hash the same on every
    attempt."""

    def __init__(self, keyring: Keyring, workspace: str) -> None:
        self._keyring = keyring
        self._workspace = workspace
        self._tokens: dict[str, str] = {}
        self.clear_values: set[str] = set()

    def seal(self, clear: str) -> dict[str, str]:
        token = self._tokens.get(clear)
        if token is None:
            token = self._keyring.seal(clear, self._workspace)
            self._tokens[clear] = token
        self.clear_values.add(clear)
        return {TOKEN_KEY: token}

    def unseal(self, token: dict[str, Any]) -> str:
        clear = self._keyring.unseal(token[TOKEN_KEY], self._workspace)
        self._tokens.setdefault(clear, token[TOKEN_KEY])
        self.clear_values.add(clear)
        return clear

    def saw(self, clear: str) -> None:
        """A secret that arrived in clear (a direct caller, not a token): searched for all the same."""
        self.clear_values.add(clear)


_active: contextvars.ContextVar[Sealer | None] = contextvars.ContextVar("airlock_sealer", default=None)


@contextlib.contextmanager
def sealing(keyring: Keyring, workspace: str) -> Iterator[Sealer]:
    """The scope inside which secret fields unseal (validation) and seal (JSON serialization)."""
    sealer = Sealer(keyring, workspace)
    reset = _active.set(sealer)
    try:
        yield sealer
    finally:
        _active.reset(reset)


def active() -> Sealer | None:
    return _active.get()


def scrub_text(text: str, secrets: Collection[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= SCRUB_MIN_LEN and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub(value: Any, secrets: Collection[str]) -> Any:
    """`value` (JSON) with every clear secret replaced by `(secret)`, wherever a string holds one.
    Tokens are left whole: they are what a secret looks like here."""
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if is_token(value):
        return value
    if isinstance(value, dict):
        return {scrub_text(k, secrets) if isinstance(k, str) else k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value


def mentions(text: str, secrets: Collection[str]) -> bool:
    return any(len(s) >= SCRUB_MIN_LEN and s in text for s in secrets)
