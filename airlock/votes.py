"""`airlock approve`, `airlock deny` and `airlock keys new`: votes a person signs on their machine.

The command shows the call and its diff, signs exactly that call (its hash) with the approver's
key, and sends the vote as the `decide` update, so the answer (counted, or refused and why) comes
back at once.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any, Literal, TextIO

from contracts import names
from contracts.hashing import call_hash
from contracts.models import DecideResult, PendingApproval, Status
from contracts.signing import key_path, load_key, new_key, public_key_text, sign, vote_message
from runtime.settings import Settings


class VoteError(Exception):
    """A vote that could not be sent or was refused, said in one line."""


def keys_new(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    try:
        key = new_key(settings.keys_dir, args.as_person)
    except FileExistsError:
        raise VoteError(f"{args.as_person} already has a key in {settings.keys_dir}; it is never overwritten") from None
    except ValueError as e:
        raise VoteError(str(e)) from None
    print(f"private key: {key_path(settings.keys_dir, args.as_person)} (readable by you only)", file=out)
    print(f"add the public key to {args.as_person} under the policy's people:", file=out)
    print(f'  keys: ["{public_key_text(key)}"]', file=out)
    return 0


def _describe(p: PendingApproval) -> list[str]:
    lines = [f"{p.approval_id}: {p.tool} {json.dumps(p.args, sort_keys=True)} (tier {p.tier.value})"]
    lines += [f"  {d}" for d in p.diff]
    return lines


async def vote(
    client: Any, settings: Settings, args: argparse.Namespace, decision: Literal["approve", "deny"], out: TextIO
) -> int:
    handle = client.get_workflow_handle(args.run_id)
    try:
        status: Status = await handle.query(
            names.RunMessages.STATUS, result_type=Status, rpc_timeout=timedelta(seconds=10)
        )
    except Exception as e:
        raise VoteError(f"cannot read run {args.run_id}: {e}") from None
    pending = next((p for p in status.pending_approvals if p.approval_id == args.approval_id), None)
    if pending is None:
        open_ids = ", ".join(p.approval_id for p in status.pending_approvals) or "none"
        raise VoteError(f"run {args.run_id} has no pending approval {args.approval_id} (pending: {open_ids})")
    # Sign what is shown: the hash is computed here from the arguments on screen, and the run
    # refuses it if its pending call differs.
    bound_to = call_hash(pending.tool, pending.args)
    for line in _describe(pending):
        print(line, file=out)
    payload: dict[str, Any] = {
        "approval_id": pending.approval_id,
        "approver": args.as_person,
        "decision": decision,
        "comment": args.comment,
        "call_hash": bound_to,
    }
    try:
        has_key = key_path(settings.keys_dir, args.as_person).exists()
    except ValueError as e:
        raise VoteError(str(e)) from None
    if has_key or pending.signed_votes_required:
        try:
            key = load_key(settings.keys_dir, args.as_person)
        except ValueError as e:
            raise VoteError(f"{e} (this workspace requires signed approvals)") from None
        message = vote_message(
            workflow_id=status.workflow_id,
            run_id=status.chain_run_id or "",
            approval_id=pending.approval_id,
            decision=decision,
            call_hash=bound_to,
        )
        payload["signature"] = sign(key, message)
    result: DecideResult = await handle.execute_update(names.RunMessages.DECIDE, payload, result_type=DecideResult)
    if not result.accepted:
        raise VoteError(f"refused: {result.reason}")
    signed = "signed" if "signature" in payload else "unsigned"
    more = f"; {result.approvals_still_needed} more needed" if result.approvals_still_needed else ""
    print(f"{decision} by {args.as_person} counted ({signed}){more}", file=out)
    return 0
