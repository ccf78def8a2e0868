"""Keyword and pattern rules, compiled once per policy and matched on normalised text."""
from __future__ import annotations

import re
from dataclasses import dataclass

from udfs.policy import Rule


@dataclass(frozen=True)
class RuleHit:
    rule: Rule
    matched: str


def _compile(rule: Rule) -> re.Pattern:
    alternatives = [r"\b" + re.escape(k.lower()) + r"\b" for k in rule.keywords] + list(rule.patterns)
    if not alternatives:
        raise ValueError(f"rule {rule.id} has neither keywords nor patterns")
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


class RuleMatcher:
    """All rules of a policy, each compiled to one regular expression over the normalised text."""

    def __init__(self, rules: list[Rule]):
        self._compiled = [(rule, _compile(rule)) for rule in rules]

    def match(self, normalised_text: str, minor_involved: bool) -> list[RuleHit]:
        hits = []
        for rule, pattern in self._compiled:
            if rule.minors_only and not minor_involved:
                continue
            if found := pattern.search(normalised_text):
                hits.append(RuleHit(rule, found.group(0)))
        return hits
