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

Anyone who can write a control topic steers every decision, so an update that is valid but unsafe is
refused as well (``unsafe_change``: a category or a minor's action dropped, a text or image model threshold
under the floor, a bank made weaker, a hash distance wide enough to match anything, rooms judged for an
older audience, a band's parents no longer alerted, a large change in the share of recent messages acted
on), and a bank's growth is bounded (``ControlConfig``).
"""
from __future__ import annotations

import json
import re
from typing import Iterable, Mapping, Sequence

from pydantic import ValidationError

from lifeguard.config import ControlConfig
from lifeguard.schemas import CONTROL_SCHEMAS, SCHEMA_VERSION, Action, AgeBand, HashBankUpdate, PolicyUpdate
from udfs.parse import Rejected, explain, parse_record
from udfs.image_policy import SIGNAL_BITS, BankKind, ImagePolicy
from udfs.policy import Policy, decide, load_policy, model_signals, soften
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

RecentScores = Sequence[tuple[AgeBand, Mapping[str, float]]]  # recently screened messages' bands and model scores


def apply_policy_update(current: Policy, update: PolicyUpdate, guard: ControlConfig = ControlConfig(),
                        recent: RecentScores = ()) -> Policy:
    """The policy to put in force; ``Rejected`` (and ``current`` stays) if the document is invalid, if it
    reuses the version in force for different content (decisions name the policy version that made
    them, so one version must mean one document), or if it fails the guard (``unsafe_change``)."""
    policy = policy_of(update)
    if policy.version == current.version and policy != current:
        raise Rejected("invalid", f"policy version {policy.version!r} is in force with different content: "
                                  f"a changed policy needs a new version", update.event_id)
    if problems := unsafe_change(current, policy, guard, recent):
        raise Rejected("unprocessable", "policy refused: " + "; ".join(problems), update.event_id)
    return policy


def unsafe_change(current: Policy, new: Policy, guard: ControlConfig, recent: RecentScores) -> list[str]:
    """What makes ``new`` unsafe to take from a topic: a category or a minor's action dropped (its messages
    would never be acted on); a text or image model threshold under the floor (acting on everything); a
    bank made weaker (a block bank turned into a review bank, any bank into an allow bank, which silences
    every bank's block); a hash distance wide enough to match unrelated images; or a large change in the
    share of recent messages acted on; rooms judged as for an older audience, a band's parents no longer
    alerted, or a contact-setting, link or voice protection loosened (``_protection_problems``). Such a
    change is for the reviewed policy file and a redeploy, not for whoever can write the topic. Rules are not compared: one added through the topic must stay
    removable, and what tells it from a rule of the reviewed file is not known here."""
    problems = [f"thresholds.{category} dropped" for category in current.thresholds if category not in new.thresholds]
    for category, bands in new.thresholds.items():
        problems += _threshold_problems(f"thresholds.{category}", bands, current.thresholds.get(category, {}),
                                        ("warn", "review", "block"), guard)
    for category, bands in new.images.models.items():
        problems += _threshold_problems(f"images.models.{category}", bands, current.images.models.get(category, {}),
                                        ("review", "block"), guard)
    problems += [f"images.models.{category} dropped" for category in current.images.models
                 if category not in new.images.models]
    problems += _bank_problems(current, new)
    # Neither shows in the share check, which replays the bands recorded at screening time.
    if new.room_audience is not AgeBand.younger(current.room_audience, new.room_audience):
        problems.append(f"room_audience raised from {current.room_audience.value} to {new.room_audience.value}")
    problems += [f"alert_bands no longer alert the parents of {band.value}"
                 for band in current.alert_bands if band not in new.alert_bands]
    problems += _protection_problems(current, new)
    if len(recent) >= guard.min_sample:
        (acted_now, blocked_now), (acted_new, blocked_new) = would_act(current, recent), would_act(new, recent)
        for what, now, then in (("acted on", acted_now, acted_new), ("blocked", blocked_now, blocked_new)):
            if abs(then - now) > guard.max_acted_share_change:
                problems.append(f"it would have {what} {then:.1%} of the last {len(recent)} messages, against "
                                f"{now:.1%} now (at most {guard.max_acted_share_change:.0%} change)")
    return problems


def _threshold_problems(where: str, bands: Mapping, was_bands: Mapping, actions: Sequence[str],
                        guard: ControlConfig) -> list[str]:
    problems = []
    for band, limits in bands.items():
        for action in actions:
            limit = getattr(limits, action)
            if limit is not None and limit < guard.threshold_floor:
                problems.append(f"{where}.{band.value}.{action} {limit:g} is below the floor {guard.threshold_floor:g}")
            was = was_bands.get(band)
            if band.is_minor and limit is None and was is not None and getattr(was, action) is not None:
                problems.append(f"{where}.{band.value}.{action} removed for a minor")
    return problems


# Actions that protect children whatever the models say: none may be made weaker from the topic.
PROTECTING_ACTIONS = (("contact", "not_allowed_action"), ("contact", "child_image_to_adult_action"),
                      ("links", "blocked_action"), ("links", "link_to_minor_action"), ("links", "risk_action"),
                      ("links", "off_platform_action"), ("links", "lookalike_host_action"))


def _protection_problems(current: Policy, new: Policy) -> list[str]:
    """What loosens the protections no share check sees: a contact-setting or link action made weaker, a
    blocklist, an off-platform site, the link model or an urgent category dropped, a voice margin raised
    (the share check replays typed messages), or a block newly softened to review by a co-signal."""
    problems = []
    for section, name in PROTECTING_ACTIONS:
        was, now = getattr(getattr(current, section), name), getattr(getattr(new, section), name)
        if now.severity < was.severity:
            problems.append(f"{section}.{name} weakened from {was.value} to {now.value}")
    for what, was, now in (("links.blocklist_files", current.links.blocklist_files, new.links.blocklist_files),
                           ("links.off_platform_sites", current.links.off_platform_sites, new.links.off_platform_sites),
                           ("urgent_categories", current.urgent_categories, new.urgent_categories)):
        problems += [f"{what} no longer holds {str(item)!r}" for item in was if item not in now]
    if current.links.risk_threshold is not None and new.links.risk_threshold is None:
        problems.append("links.risk_threshold removed: the link model would ask for nothing")
    if new.voice_margin > current.voice_margin:
        problems.append(f"voice_margin raised from {current.voice_margin:g} to {new.voice_margin:g}")
    problems += [f"voice_margin_by_category.{category} raised from {current.voice_margin_by_category.get(category, 0):g} "
                 f"to {margin:g}" for category, margin in new.voice_margin_by_category.items()
                 if margin > current.voice_margin_by_category.get(category, current.voice_margin)]
    problems += [f"review_instead_of_block_when.{category} softens blocks on {', '.join(sorted(added))}"
                 for category, signals in new.review_instead_of_block_when.items()
                 if (added := set(signals) - set(current.review_instead_of_block_when.get(category, [])))]
    return problems


# A perceptual hash distance past a quarter of the hash's bits matches images that have nothing in common.
MAX_DISTANCE_SHARE = 0.25


def _bank_problems(current: Policy, new: Policy) -> list[str]:
    problems = []
    for name, bank in new.images.banks.items():
        was = current.images.bank(name).kind
        if bank.kind is BankKind.ALLOW and was is not BankKind.ALLOW:
            problems.append(f"images.banks.{name} turned from {was.value} into an allow bank")
        elif bank.kind is BankKind.REVIEW and was is BankKind.BLOCK:
            problems.append(f"images.banks.{name} turned from a block bank into a review bank")
    distances = [(f"images.distances.{signal}", signal, d) for signal, d in new.images.distances.items()]
    distances += [(f"images.banks.{name}.distances.{signal}", signal, d)
                  for name, bank in new.images.banks.items() for signal, d in bank.distances.items()]
    for where, signal, limits in distances:
        widest = int(SIGNAL_BITS[signal] * MAX_DISTANCE_SHARE)
        if max(limits.match, limits.near) > widest:
            problems.append(f"{where} up to {max(limits.match, limits.near)} bits matches unrelated images "
                            f"(at most {widest} of {SIGNAL_BITS[signal]})")
    return problems


def would_act(policy: Policy, recent: RecentScores) -> tuple[float, float]:
    """The shares of ``recent`` messages that ``policy``'s model thresholds act on (any action but allow)
    and block, each as a first-time sender's typed message, blocks softened as the policy says."""
    actions = [decide(soften(policy, model_signals(policy, scores, band, voice=False))).action
               for band, scores in recent]
    return (sum(a is not Action.ALLOW for a in actions) / len(actions),
            sum(a is Action.BLOCK for a in actions) / len(actions))


def apply_bank_update(banks: Banks, update: HashBankUpdate, max_bank_hashes: int | None = None,
                      images: ImagePolicy | None = None) -> Banks:
    """Applies the update to ``banks`` in place (the index takes it without a rebuild) and returns them.
    ``Rejected``, with ``banks`` untouched, if the update is not well formed, would make one bank too
    many, would add to a bank holding ``max_bank_hashes`` already, or would disable a bank that the
    policy in force (``images``) names as a block or review bank: that silences every match of a
    reviewed bank, which is for the policy file and a redeploy, like making it weaker. Adding to an
    unknown bank creates it enabled; enabling or disabling an unknown bank creates it empty, so a bank
    can be disabled before it fills."""
    update = checked_bank_update(update)
    if (update.op == "disable" and images is not None and update.bank in images.banks
            and images.bank(update.bank).kind is not BankKind.ALLOW):
        raise Rejected("unprocessable", f"bank {update.bank!r} is a {images.bank(update.bank).kind.value} bank of the "
                                        f"policy: disabling it is for the policy file and a redeploy", update.event_id)
    if update.op == "add" and max_bank_hashes is not None and banks.size(update.bank) >= max_bank_hashes:
        raise Rejected("unprocessable", f"bank {update.bank!r} holds {max_bank_hashes} hashes, the most one bank "
                                        f"may (control.max_bank_hashes)", update.event_id)
    try:
        banks.ensure(update.bank)
    except ValueError as exc:
        raise Rejected("unprocessable", str(exc), update.event_id) from None
    if update.op == "add":
        banks.add(update.bank, update.signal_type, [update.hash], update.note)
    elif update.op == "remove":
        banks.remove(update.bank, update.signal_type, [update.hash])
    else:
        banks.set_enabled(update.bank, update.op == "enable")
    return banks


# ---- broadcast state ----------------------------------------------------------------------------
# One string entry per policy, per bank's enabled flag and per hash, so an update writes one entry and
# its latest value wins: entries commute, and ``restore`` may read them in any order. Keys are JSON
# arrays, so bank names may hold any character. An added hash's value is its note (true if it has none);
# a removed hash keeps an entry ("false"): it may be a hash of the banks file, read again at every start.

POLICY_KEY = "policy"


def state_entry(update: ControlUpdate) -> tuple[str, str]:
    """The broadcast state entry (key, JSON value) that records a valid update."""
    if isinstance(update, PolicyUpdate):
        return POLICY_KEY, json.dumps(update.policy, sort_keys=True)
    if update.op in ("enable", "disable"):
        return json.dumps(["bank", update.bank]), json.dumps(update.op == "enable")
    return (json.dumps(["hash", update.bank, update.signal_type, update.hash]),
            json.dumps(update.op == "add" and (update.note or True)))


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
        note = present if isinstance(present, str) else ""
        apply_bank_update(banks, HashBankUpdate(schema_version=SCHEMA_VERSION, event_id="restore", op=op,
                                                bank=bank, signal_type=signal_type, hash=hash_, note=note))
    return policy, banks
