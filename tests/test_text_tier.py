"""udfs.text_tier: rules, links and the URL model's link_risk, for the shipped policy."""
import pytest

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import Action, AgeBand
from udfs.links import Blocklist, UrlModel
from udfs.parse import Rejected
from udfs.policy import load_policy
from udfs.text_tier import LINK_RISK, TextTier

POLICY = load_policy(PROJECT_ROOT / "flink-conf/policy.yaml")
BLOCKLIST = Blocklist(hosts=frozenset({"malware.xyz"}), targets=frozenset())
PHISHING = "http://paypal.com.secure-login.test/webscr/login.php?cmd=verify"


@pytest.fixture(scope="module")
def tier():
    return TextTier(POLICY, PROJECT_ROOT, BLOCKLIST, UrlModel())


def signals_of(tier, text, band=AgeBand.UNDER_13, direct_to_minor=False, scores=None):
    return tier.signals(text, {} if scores is None else scores, band, False, direct_to_minor)


def test_link_risk_is_the_highest_url_model_probability_among_the_links(tier):
    _, shown = signals_of(tier, f"see wikipedia.org or {PHISHING}")
    _, alone = signals_of(tier, "see wikipedia.org")
    assert shown[LINK_RISK] > POLICY.links.risk_threshold > alone[LINK_RISK]
    assert signals_of(tier, "no links here")[1] == {}


def test_a_risky_link_goes_to_review_whoever_reads_it(tier):
    signals, _ = signals_of(tier, PHISHING, band=AgeBand.ADULT)
    assert [(s.category, s.action) for s in signals] == [("link", Action.REVIEW)]
    assert signals[0].reason.startswith("link:paypal.com.secure-login.test phishing risk")


def test_a_blocklisted_link_is_blocked_however_written(tier):
    signals, _ = signals_of(tier, "get it at cdn dot malware dot xyz slash x", band=AgeBand.ADULT)
    assert ("link", Action.BLOCK, "link:blocklisted malware.xyz") in [(s.category, s.action, s.reason)
                                                                           for s in signals]


@pytest.mark.parametrize("text", ["join discord.gg/abc123", "t . me / kids", "wa.me/15551234567",
                                  "discord dot com slash invite slash xyz"])
def test_an_invite_to_another_chat_app_is_reviewed_when_a_child_is_involved(tier, text):
    signals, _ = signals_of(tier, text)
    assert ("pii", Action.REVIEW) in [(s.category, s.action) for s in signals]
    adult_signals, _ = signals_of(tier, text, band=AgeBand.ADULT)
    assert "pii" not in [s.category for s in adult_signals]


def test_a_host_in_lookalike_letters_is_reviewed(tier):
    signals, _ = signals_of(tier, "free skins at rоblох.com", band=AgeBand.ADULT)  # Cyrillic о, х
    assert "link:roblox.com written with look-alike letters" in [s.reason for s in signals]


def test_any_link_sent_directly_to_a_child_warns(tier):
    signals, _ = signals_of(tier, "wikipedia.org", direct_to_minor=True)
    assert [(s.action, s.reason) for s in signals] == [(Action.WARN, "link:wikipedia.org sent directly to a minor")]


def test_rules_still_run_when_the_model_failed(tier):
    signals, _ = tier.signals("send nudes", None, AgeBand.UNDER_13, False, False)
    assert {(s.category, s.action) for s in signals} == {("model_error", Action.REVIEW),
                                                         ("sexual_minors", Action.BLOCK), ("toxicity", Action.WARN)}


@pytest.mark.parametrize("text", ["lol", "okay", "gg wp", "you killed me lol", "meet me at the castle",
                                  "go to roblox.com for the update", "i have 1000 robux"])
def test_ordinary_game_chat_gets_no_signal(tier, text):
    assert signals_of(tier, text)[0] == []


def test_a_policy_whose_allowlist_does_not_compile_is_refused_and_the_old_one_stays(tier):
    bad = POLICY.model_copy(update={"version": "bad", "allowlist": ["a*b"]})
    with pytest.raises(Rejected, match="allowlist"):
        tier.with_policy(bad)
    assert tier.policy.version == POLICY.version


def test_a_new_policy_takes_effect_with_the_same_url_model_and_blocklist(tier):
    quiet = POLICY.model_copy(update={"version": "quiet", "rules": []})
    swapped = tier.with_policy(quiet)
    assert swapped.url_model is tier.url_model and swapped.blocklist is tier.blocklist
    assert signals_of(swapped, "add me on snap") == ([], {})
