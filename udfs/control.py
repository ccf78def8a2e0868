"""The control topics as pure functions: policy and hash-bank updates for a job that keeps running.

A control record is parsed the way an input record is (``udfs.parse``): anything malformed raises
``Rejected`` with the reason, and the job turns it into a dead letter with the original bytes. A valid
update changes the job's plain Python copy (the ``Policy``, the banks) that the screener reads, and
``state_entry`` gives the one string entry to write to Flink's broadcast state, from which ``restore``
rebuilds the copy after a failure.

- ``policy-updates`` carries a whole policy document; the newest valid one is in force. Until the first
  arrives, the policy file from config is.
- ``hash-bank-updates`` changes the banks loaded from the banks file in config, one hash or one bank at a
  time: add or remove a pHash, PDQ or SHA-256 hash, enable or disable a bank (a bank's kind, block,
  review or allow, and its distances are policy: ``udfs.image_policy``). Updates are idempotent (adding a
  present hash, removing an absent one, disabling a disabled bank change nothing), so a replay after a
  restore does no harm. A disabled bank keeps its hashes and matches nothing until enabled again.
"""
from __future__ import annotations

import json
import re
from typing import Iterable

from pydantic import ValidationError

from lifeguard.schemas import CONTROL_SCHEMAS, SCHEMA_VERSION, HashBankUpdate, PolicyUpdate
from udfs.parse import Rejected, explain, parse_record
from udfs.policy import Policy, load_policy
from udfs.rules import RuleMatcher
from udfs.image_tier import BANK_SIGNAL_TYPES, Banks

POLICY_UPDATES = "policy-updates"
HASH_BANK_UPDATES = "hash-bank-updates"
ControlUpdate = PolicyUpdate | HashBankUpdate

# Hashes as udfs.images writes them: lower-case hex, 64 bits for pHash, 256 for SHA-256 and PDQ.
HASH_FORMATS = {"phash": re.compile(r"[0-9a-f]{16}"), "sha256": re.compile(r"[0-9a-f]{64}"),
                "pdq": re.compile(r"[0-9a-f]{64}")}


# ---- parsing and validation ---------------------------------------------------------------------

def parse_control(schema_name: str, value: bytes | None, max_bytes: int) -> ControlUpdate:
    """Validates one control record against its topic's schema and checks that it can apply: a policy
    document must be a valid policy, a bank update a well-formed hash. Raises ``Rejected``."""
    update = parse_record(CONTROL_SCHEMAS, schema_name, value, max_bytes)
    if isinstance(update, PolicyUpdate):
        policy_of(update)
        return update
    return checked_bank_update(update)


def policy_of(update: PolicyUpdate) -> Policy:
    """The update's document as a ``Policy``: the whole of it validated, every rule compiled."""
    try:
        policy = load_policy(update.policy)
    except ValidationError as exc:
        raise Rejected("invalid", f"policy: {explain(exc)}", update.event_id) from None
    try:
        RuleMatcher(policy.rules, policy.allowlist)
    except (ValueError, re.error) as exc:  # a rule with nothing to match, or a pattern that does not compile
        raise Rejected("invalid", f"policy rules: {exc}", update.event_id) from None
    return policy


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def checked_bank_update(update: HashBankUpdate) -> HashBankUpdate:
    """The update with its hash in canonical form (lower-case hex); ``Rejected`` if it is not well formed."""
    if update.op in ("enable", "disable"):
        if update.signal_type is not None or update.hash is not None:
            raise Rejected("invalid", f"op {update.op} applies to a whole bank: it takes no signal_type or hash",
                           update.event_id)
        return update
    if update.signal_type is None or update.hash is None:
        raise Rejected("invalid", f"op {update.op} needs signal_type and hash", update.event_id)
    if update.signal_type not in BANK_SIGNAL_TYPES:
        raise Rejected("unprocessable", f"signal_type {update.signal_type} is not matched by this job "
                                        f"(it matches {', '.join(BANK_SIGNAL_TYPES)})", update.event_id)
    canonical = update.hash.lower()
    if not HASH_FORMATS[update.signal_type].fullmatch(canonical):
        bits = 64 if update.signal_type == "phash" else 256
        raise Rejected("invalid", f"{update.signal_type} hash must be {bits // 4} hex characters ({bits} bits), "
                                  f"got {_shown(update.hash)}", update.event_id)
    return update if canonical == update.hash else update.model_copy(update={"hash": canonical})


# ---- applying -----------------------------------------------------------------------------------

def apply_policy_update(current: Policy, update: PolicyUpdate) -> Policy:
    """The policy to put in force; ``Rejected`` (and ``current`` stays) if the document is invalid, or if it
    reuses the version in force for different content: decisions name the policy version that made
    them, so one version must mean one document."""
    policy = policy_of(update)
    if policy.version == current.version and policy != current:
        raise Rejected("invalid", f"policy version {policy.version!r} is in force with different content: "
                                  f"a changed policy needs a new version", update.event_id)
    return policy


def apply_bank_update(banks: Banks, update: HashBankUpdate) -> Banks:
    """Applies the update to ``banks`` in place (the index takes it without a rebuild) and returns them.
    ``Rejected``, with ``banks`` untouched, if the update is not well formed or would make one bank too
    many. Adding to an unknown bank creates it enabled; enabling or disabling an unknown bank creates it
    empty, so a bank can be disabled before it fills."""
    update = checked_bank_update(update)
    try:
        banks.ensure(update.bank)
    except ValueError as exc:
        raise Rejected("unprocessable", str(exc), update.event_id) from None
    if update.op == "add":
        banks.add(update.bank, update.signal_type, [update.hash])
    elif update.op == "remove":
        banks.remove(update.bank, update.signal_type, [update.hash])
    else:
        banks.set_enabled(update.bank, update.op == "enable")
    return banks


# ---- broadcast state ----------------------------------------------------------------------------
# One string entry per policy, per bank's enabled flag and per hash, so an update writes one entry and
# its latest value wins: entries commute, and ``restore`` may read them in any order. Keys are JSON
# arrays, so bank names may hold any character. A removed hash keeps an entry ("false"): it may be a
# hash of the banks file, which is read again at every start.

POLICY_KEY = "policy"


def state_entry(update: ControlUpdate) -> tuple[str, str]:
    """The broadcast state entry (key, JSON value) that records a valid update."""
    if isinstance(update, PolicyUpdate):
        return POLICY_KEY, json.dumps(update.policy, sort_keys=True)
    if update.op in ("enable", "disable"):
        return json.dumps(["bank", update.bank]), json.dumps(update.op == "enable")
    return json.dumps(["hash", update.bank, update.signal_type, update.hash]), json.dumps(update.op == "add")


def restore(policy: Policy, banks: Banks,
            entries: Iterable[tuple[str, str]]) -> tuple[Policy, Banks]:
    """The Python copy rebuilt from broadcast state entries, on top of the policy and banks from config
    (``banks`` is changed in place). The entries were validated when they were written."""
    for key, value in entries:
        if key == POLICY_KEY:
            policy = load_policy(json.loads(value))
            continue
        kind, bank, *rest = json.loads(key)
        present = json.loads(value)
        if kind == "bank":
            op, signal_type, hash_ = ("enable" if present else "disable"), None, None
        else:
            (signal_type, hash_), op = rest, ("add" if present else "remove")
        apply_bank_update(banks, HashBankUpdate(schema_version=SCHEMA_VERSION, event_id="restore", op=op,
                                                bank=bank, signal_type=signal_type, hash=hash_))
    return policy, banks
