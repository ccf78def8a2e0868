"""The text tier's cheap signals for one message: model thresholds, keyword and pattern rules, links.

A ``TextTier`` holds what a policy compiles to (the rule matcher, the link blocklist) and the URL
model; a policy update builds a new one (``with_policy``), so a half-applied policy is never in force.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from lifeguard.schemas import Action, AgeBand
from udfs.links import Blocklist, Link, UrlModel, extract_links, listed_site
from udfs.parse import Rejected
from udfs.policy import LinkPolicy, Policy, Signal, model_signals
from udfs.rules import RuleMatcher

LINK_RISK = "link_risk"


class TextTier:
    def __init__(self, policy: Policy, base_dir: Path, blocklist: Blocklist | None = None,
                 url_model: UrlModel | None = None):
        self.policy = policy
        self.base_dir = base_dir
        self.rules = RuleMatcher(policy.rules, policy.allowlist)
        self.blocklist = blocklist if blocklist is not None else self._load_blocklist(policy)
        self.url_model = url_model if url_model is not None else UrlModel()

    def _load_blocklist(self, policy: Policy) -> Blocklist:
        return Blocklist.from_files(
            p if p.is_absolute() else self.base_dir / p for p in policy.links.blocklist_files)

    def with_policy(self, policy: Policy) -> "TextTier":
        """The tier for ``policy``: rules recompiled, the blocklist reread only when the policy names other
        files. Raises ``Rejected`` when a rule does not compile or a blocklist file cannot be read here."""
        same_files = policy.links.blocklist_files == self.policy.links.blocklist_files
        try:
            return TextTier(policy, self.base_dir, self.blocklist if same_files else None, self.url_model)
        except (OSError, KeyError, ValueError) as exc:  # a bad rule; a missing or not kind/host/target CSV
            raise Rejected("unprocessable", f"policy {policy.version} cannot be put in force here: "
                                            f"{type(exc).__name__}: {exc}") from None

    def signals(self, text: str, scores: Mapping[str, float] | None, band: AgeBand,
                voice: bool, direct_to_minor: bool, threshold_scale: float = 1.0) -> tuple[list[Signal], dict[str, float]]:
        """The message's signals, and the scores to show beside the model's: ``link_risk``, the URL
        model's highest phishing probability among the message's links, when it has any. The model's
        thresholds are multiplied by ``threshold_scale`` (the sender's behaviour); rules and links are not."""
        if scores is None:  # rules and links still run: a model failure must not hide what they catch
            signals = [Signal("model_error", Action.REVIEW, "model:error, sent to review (fail safe)", "model:error")]
        else:
            signals = model_signals(self.policy, scores, band, voice, threshold_scale)
        for hit in self.rules.match(text, band.is_minor):
            signals.append(Signal(hit.rule.category, hit.rule.action, f"rule:{hit.rule.id} matched '{hit.matched}'",
                                  f"rule:{hit.rule.id}"))
        risks = {link: self.url_model.probability(link) for link in extract_links(text)}
        for link, risk in risks.items():
            signals += link_signals(self.policy.links, self.blocklist, link, risk, band, direct_to_minor)
        known = [risk for risk in risks.values() if risk is not None]
        return list(dict.fromkeys(signals)), ({LINK_RISK: max(known)} if known else {})


def link_signals(policy: LinkPolicy, blocklist: Blocklist, link: Link, risk: float | None, band: AgeBand,
                 direct_to_minor: bool) -> list[Signal]:
    signals = []
    if entry := blocklist.blocked(link):
        signals.append(Signal("link", policy.blocked_action, f"link:blocklisted {entry}", "link:blocklist"))
    if link.lookalike:
        signals.append(Signal("link", policy.lookalike_host_action,
                              f"link:{link.host} written with look-alike letters", "link:lookalike"))
    if policy.risk_threshold is not None and risk is not None and risk >= policy.risk_threshold:
        signals.append(Signal("link", policy.risk_action,
                              f"link:{link.host} phishing risk {risk:.2f} >= {policy.risk_threshold:.2f}", "link:risk"))
    if band.is_minor and (site := listed_site(link, policy.off_platform_sites)):
        signals.append(Signal("pii", policy.off_platform_action, f"link:{site} is another chat app (off-platform)",
                              "link:off_platform"))
    if direct_to_minor:
        signals.append(Signal("link", policy.link_to_minor_action, f"link:{link.host} sent directly to a minor",
                              "link:to_minor"))
    return signals
