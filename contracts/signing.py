"""Signed votes: an approver's Ed25519 signature over exactly what they decided.

Anyone with write access to the namespace can send an `approve` signal naming anyone. A signature
by the approver's key over the run, the approval, the decision and the call's hash is what makes
"who approved this" true: it cannot be forged without the key, moved to another run or call, or
turned from a deny into an approval. The workflow verifies with the public keys pinned in its
policy; private keys stay on the approvers' machines (`airlock keys new`).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.hashing import canonical_json

KEY_PREFIX = "ed25519:"
MESSAGE_VERSION = "airlock-vote/1"


def vote_message(
    *, workflow_id: str, run_id: str, approval_id: str, decision: Literal["approve", "deny"], call_hash: str
) -> bytes:
    """The bytes a vote's signature covers.

    `run_id` is the first run of the workflow's continue-as-new chain: a later run reusing the
    workflow id (and so the same approval ids) does not accept votes signed for an earlier one.
    """
    return canonical_json(
        {
            "v": MESSAGE_VERSION,
            "workflow_id": workflow_id,
            "run_id": run_id,
            "approval_id": approval_id,
            "decision": decision,
            "call_hash": call_hash,
        }
    ).encode()


SWITCH_MESSAGE_VERSION = "airlock-switch/1"
RESUME_MESSAGE_VERSION = "airlock-resume/1"


def switch_message(*, workspace: str, switch: str, on: bool, by: str, generation: int) -> bytes:
    """The bytes an admin's signature on a workspace switch change covers. `generation` is the
    one the change creates: a signature recorded in a history cannot be sent again to undo a
    later change."""
    return canonical_json(
        {
            "v": SWITCH_MESSAGE_VERSION,
            "workspace": workspace,
            "switch": switch,
            "on": on,
            "by": by,
            "generation": generation,
        }
    ).encode()


def resume_message(*, workflow_id: str, run_id: str, by: str, pause: int) -> bytes:
    """The bytes a signature on resuming a paused run covers; `pause` counts the run's pauses, so
    a resume signed for one pause cannot lift the next."""
    return canonical_json(
        {"v": RESUME_MESSAGE_VERSION, "workflow_id": workflow_id, "run_id": run_id, "by": by, "pause": pause}
    ).encode()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def verifies(public_keys: list[str], message: bytes, signature: str) -> bool:
    """Whether any of these keys signed the message. Malformed keys or signatures do not verify."""
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    for text in public_keys:
        if not text.startswith(KEY_PREFIX):
            continue
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text[len(KEY_PREFIX) :], validate=True))
            public.verify(raw_signature, message)
        except (ValueError, InvalidSignature):
            continue
        return True
    return False


# --- keys on an approver's machine -------------------------------------------------------------


def key_path(keys_dir: Path, person: str) -> Path:
    if not person or "/" in person or person.startswith("."):
        raise ValueError(f"not a person's name: {person!r}")
    return keys_dir / f"{person}.pem"


def new_key(keys_dir: Path, person: str) -> Ed25519PrivateKey:
    """Creates a key readable only by its owner; an existing key is never overwritten."""
    path = key_path(keys_dir, person)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_key(keys_dir: Path, person: str) -> Ed25519PrivateKey:
    path = key_path(keys_dir, person)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(
            f"no signing key for {person} at {path}; create one with `airlock keys new --as {person}`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key
