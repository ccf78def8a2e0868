import json

import pytest

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import Action, AgeBand
from udfs.links import Blocklist, Link, extract_links
from udfs.policy import Signal, decide, load_policy, model_signals, soften
from udfs.rules import RuleMatcher

POLICY = load_policy(PROJECT_ROOT / "flink-conf/policy.yaml")


@pytest.mark.parametrize("category, score, band, voice, action", [
    ("toxicity", 0.95, AgeBand.UNDER_13, False, Action.BLOCK),
    ("toxicity", 0.80, AgeBand.UNDER_13, False, Action.REVIEW),
    ("toxicity", 0.50, AgeBand.UNDER_13, False, None),  # game chat's floor put every toxicity threshold above it
    ("toxicity", 0.75, AgeBand.ADULT, False, None),
    ("toxicity", 0.95, AgeBand.ADULT, False, Action.REVIEW),  # adults: toxicity is never blocked by the model alone
    ("toxicity", 0.03, AgeBand.UNDER_13, False, None),
    ("sexual_minors", 0.12, AgeBand.UNDER_13, False, Action.BLOCK),
    ("sexual_minors", 0.12, AgeBand.UNDER_13, True, Action.REVIEW),  # voice: its +0.04 margin lifts the block
])
def test_model_thresholds_per_band(category, score, band, voice, action):
    signals = model_signals(POLICY, {category: score}, band, voice)
    assert [s.action for s in signals] == ([action] if action else [])


def test_strongest_signal_wins_and_every_reason_is_kept():
    verdict = decide([Signal("spam", Action.WARN, "a", "rule:a"), Signal("threat", Action.BLOCK, "b", "model:threat")],
                     notes=("note",))
    assert verdict.action is Action.BLOCK
    assert verdict.reasons == ("a", "b", "note") and verdict.categories == ("spam", "threat")
    # Only the model asked for the block: the rule's warning is a reason, not what decided it.
    assert verdict.deciding_tiers == {"model"}
    assert decide([]).action is Action.ALLOW


def test_policy_rejects_missing_bands():
    with pytest.raises(ValueError, match="lacks bands"):
        load_policy({"version": "x", "thresholds": {"hate": {"adult": {}}}})


@pytest.mark.parametrize("text, minor, rule_ids", [
    ("add me on snap", True, ["off_platform_lure"]),
    ("add me on snap", False, []),                   # adults among themselves may
    ("my number is 555-123-4567", True, ["off_platform_lure", "personal_information_shared"]),
    ("call 555-123-4567", True, ["personal_information_shared"]),
    ("dont tell your parents ok", True, ["secrecy_and_photos"]),
    ("i want to die", False, ["self_harm_intent"]),
    ("this level kills me lol, classic", True, []),
    ("fk you", True, ["profanity"]),                 # the abbreviation, and its forms
    ("fkn noob", True, ["profanity"]),
    ("ffuk you", True, ["profanity"]),               # a doubled first letter (the obscenity README's case)
])
def test_rules(text, minor, rule_ids):
    hits = RuleMatcher(POLICY.rules, POLICY.allowlist).match(text, minor)
    assert [h.rule.id for h in hits] == rule_ids


@pytest.mark.parametrize("text, targets", [
    ("go to https://Evil.example.com/x.exe now", ["evil.example.com/x.exe"]),
    ("evil dot example dot com", ["evil.example.com"]),
    ("evil[.]example[.]com/payload", ["evil.example.com/payload"]),
    ("hxxp://10.0.0.1:8080/a.sh", ["10.0.0.1/a.sh"]),
    ("no links here. just text", []),
])
def test_link_extraction(text, targets):
    assert [l.target for l in extract_links(text)] == targets


def test_blocklist_blocks_hosts_subdomains_and_single_urls(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("entry,kind,host,target\n"
                   "bad.example,domain,bad.example,bad.example\n"
                   "||share.example/evil.pdf^$all,url,share.example,share.example/evil.pdf\n")
    blocklist = Blocklist.from_files([csv])
    assert blocklist.blocked(Link("cdn.bad.example", "/x")) == "bad.example"
    assert blocklist.blocked(Link("share.example", "/evil.pdf")) == "share.example/evil.pdf"
    assert blocklist.blocked(Link("share.example", "/fine.pdf")) is None


def test_a_threat_block_yields_to_review_when_self_harm_is_signalled():
    signals = [Signal("threat", Action.BLOCK, "model:threat", "model:threat"), Signal("self_harm", Action.REVIEW, "rule:self_harm", "rule:self_harm")]
    softened = soften(POLICY, signals)
    assert [s.action for s in softened] == [Action.REVIEW, Action.REVIEW]
    assert "review instead of block (self_harm present)" in softened[0].reason
    assert soften(POLICY, signals[:1]) == signals[:1]  # a threat alone still blocks


def _source_entries() -> set[str]:
    """The entries of the kept lists in udfs/data (udfs/data/README.md), as the profanity rule writes
    them: dsojevic's "match" alternatives, whose "*" (a repeatable letter) and "-" it drops."""
    data = PROJECT_ROOT / "udfs/data"
    ldnoobw = data.joinpath("profanity_ldnoobw_en.txt").read_text(encoding="utf-8").splitlines()
    dsojevic = [match for entry in json.loads(data.joinpath("profanity_dsojevic_en.json").read_text(encoding="utf-8"))
                for match in entry["match"].split("|")]
    return {entry.strip().lower().replace("*", "").replace("-", " ") for entry in ldnoobw + dsojevic if entry.strip()}


def test_every_profanity_keyword_comes_from_a_kept_list_or_the_project():
    # The project's own first line; every other keyword is a source entry or its root with "*".
    own = {"*fuck*", "motherf*", "*shit*", "bitch*", "*cunt*", "asshole*", "dumbass*", "jackass*", "dickhead*",
           "bastard*", "whore*", "slut*", "wanker*", "twat*", "ass", "asses", "stfu", "gtfo", "fk*", "middle finger"}
    sources = _source_entries()
    (profanity,) = [rule for rule in POLICY.rules if rule.id == "profanity"]
    assert len(profanity.keywords) > 500
    foreign = [k for k in profanity.keywords if k not in own and k.strip("*") not in sources]
    assert foreign == []
    assert profanity.action is Action.WARN and profanity.minors_only
