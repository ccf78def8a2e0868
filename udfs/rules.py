"""Keyword and pattern rules, compiled once per policy and matched on a message's normalised forms.

Keywords of every rule go into one Aho-Corasick automaton (pyahocorasick), so a message is scanned
once whatever the number of keywords. Matching happens on the "word form" of the folded text
(apostrophes dropped, other punctuation a space) with every run of a repeated letter squeezed to one,
and a hit counts only where each letter repeats as often as in the keyword, or 3 times or more
(elongation): "fuuuuck" matches "fuck" and "asssss" "ass", but "as" does not match "ass", nor
"good" "god".

A keyword is a whole word or phrase unless it says otherwise with "*": "fuck*" also matches words
that start with it ("fucking"), "*fucker" words that end with it ("motherfucker"), "*cunt*" anywhere
inside a word. Those wildcards are where false hits come from (the Scunthorpe problem), so the
policy's allowlist names words and phrases ("scunthorpe", "assassin*", "cocktail*") inside which a
keyword hit does not count.

Two kinds of disguise need more than one reading, and are matched as follows. Other spellings of a
keyword's letters ("fvck", "bltch", "phuck", "kunt": `spellings`) are added to the automaton as keys of
their own, which costs nothing per message. Words written with digits, symbols or masked letters
("f*ck", "5h1t", "@rgy", "m0th3rf*ck3r": `MatchForms.disguised`) are rare in ordinary chat, and each
of them is walked through a trie of the keys (`KeyTrie`), where a symbol may stand for each of its
letters ("1": i or l, "@": a or o) and a mask for any letter; the allowlist applies there too.

Patterns are regular expressions run by RE2, whose matching time is linear in the text whatever the
pattern: no pattern can backtrack catastrophically. RE2 refuses back-references and look-arounds; a
rule that uses them is refused when the policy is loaded or updated (``ValueError``).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import ahocorasick
import re2

from udfs.normalize import MASKS, SOUNDALIKE_SPELLINGS, SPELLINGS, SYMBOL_READINGS, X_FOR_U_MAX_LETTERS, fold_disguises, match_forms
from udfs.policy import Rule

_APOSTROPHES = re.compile(r"['’`´]")
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class RuleHit:
    rule: Rule
    matched: str


@dataclass(frozen=True)
class Squeezed:
    """Text with each run of one character kept once; the run lengths when a hit needs checking."""

    original: str
    text: str

    @cached_property
    def runs(self) -> tuple[int, ...]:
        return tuple(len(list(run)) for _, run in itertools.groupby(self.original))

    def unsqueezed_span(self, start: int, end: int) -> tuple[int, int]:
        """The span [start, end) of the squeezed text as a span of the text it came from."""
        return sum(self.runs[:start]), sum(self.runs[:end])


def word_form(normalised: str) -> str:
    """Words separated by single spaces: apostrophes dropped ("don't" -> "dont"), other punctuation
    a separator ("kill,yourself" -> "kill yourself")."""
    return " ".join(_NOT_WORD.sub(" ", _APOSTROPHES.sub("", normalised)).split())


def squeeze(text: str) -> Squeezed:
    return Squeezed(text, "".join(char for char, _ in itertools.groupby(text)))


@dataclass(frozen=True)
class Term:
    """One keyword or allowlist entry, compiled."""

    written: str  # as the policy wrote it
    runs: tuple[int, ...]  # how often each letter of its squeezed form must at least repeat
    open_start: bool  # "*fucker": may start inside a word
    open_end: bool  # "fuck*": may end inside a word
    owner: int  # the index of its rule (-1 for the allowlist)


def compile_term(written: str, owner: int) -> list[tuple[str, Term]]:
    """The term's squeezed keys for the automaton, each with its term: the keyword as written and in
    the other spellings evaders use (`spellings`). Raises ``ValueError`` if nothing is left to match
    or a "*" stands inside it."""
    core = written.strip()
    open_start, open_end = core.startswith("*"), core.endswith("*")
    core = core.strip("*")
    if "*" in core:
        raise ValueError(f"{written!r}: '*' may only open the start or the end of a keyword")
    words = word_form(fold_disguises(core))
    if not words:
        raise ValueError(f"{written!r} has nothing to match once normalised")
    return [(squeezed.text, Term(written, squeezed.runs, open_start, open_end, owner))
            for squeezed in map(squeeze, spellings(words, open_end))]


# Beyond this many spellings of one keyword, each other spelling replaces all places of its letters or none.
_MAX_SPELLINGS = 64
# "c" sounds as "k" unless "e", "i", "y" or "h" follows ("cunt" -> "kunt", but not "cigar", "chat").
_SOFT_AFTER_C = "eiyh"
# A key this short that sounds alike twice is another word ("cock" -> "kok"): once is the most.
_MIN_LETTERS_FOR_TWO_SOUNDALIKES = 5


def spellings(words: str, open_end: bool = False) -> list[str]:
    """``words`` as written and with the other spellings evaders use (`SPELLINGS`: "fvck", "bltch",
    "phuck", "kunt", "fucka"), so that the automaton finds them at no cost per message. Each place takes
    its spellings independently ("cvnnilingvs") up to `_MAX_SPELLINGS`; past that, each spelling
    replaces all places of its letters at once or none. A final "er" is spelt "a" only where the
    keyword ends a word (not "*nigger*", whose "*nigga*" would be another keyword)."""
    places = _places(words, open_end)
    count = 1
    for _, options in places:
        count *= len(options)
    if count <= _MAX_SPELLINGS:
        most = 1 if len(words) < _MIN_LETTERS_FOR_TWO_SOUNDALIKES else len(places)
        return ["".join(choice) for choice in itertools.product(*(options for _, options in places))
                if sum((letters, other) in SOUNDALIKE_SPELLINGS for (letters, _), other in zip(places, choice)) <= most]
    swaps = sorted({(letters, other) for letters, options in places for other in options[1:]})
    found = []
    for chosen in itertools.product((False, True), repeat=len(swaps)):
        used = {swap for swap, use in zip(swaps, chosen) if use}
        found.append("".join(next((other for other in options[1:] if (letters, other) in used), letters)
                             for letters, options in places))
    return list(dict.fromkeys(found))


def _places(words: str, open_end: bool) -> list[tuple[str, tuple[str, ...]]]:
    """``words`` cut into the letters that `SPELLINGS` respell (two-letter ones first), each with its
    spellings, the written one first."""
    places, at = [], 0
    while at < len(words):
        for size in (2, 1):
            letters = words[at:at + size]
            others = tuple(other for written, other in SPELLINGS
                           if written == letters and _applies(words, at, written, other, open_end))
            if others or size == 1:
                places.append((letters, (letters, *others)))
                at += size
                break
    return places


def _applies(words: str, at: int, written: str, other: str, open_end: bool) -> bool:
    if other == "x":
        return len(words) <= X_FOR_U_MAX_LETTERS
    if written == "c":
        return words[at + 1:at + 2] not in tuple(_SOFT_AFTER_C)
    if written == "er":
        return not open_end and at + 2 == len(words)
    return True


def _automaton(terms: Iterable[tuple[str, Term]]) -> ahocorasick.Automaton | None:
    by_key: dict[str, list[Term]] = {}
    for key, term in terms:
        by_key.setdefault(key, []).append(term)
    if not by_key:
        return None
    automaton = ahocorasick.Automaton()
    for key, key_terms in by_key.items():
        automaton.add_word(key, (len(key), tuple(key_terms)))
    automaton.make_automaton()
    return automaton


def find_terms(automaton: ahocorasick.Automaton | None, text: Squeezed) -> Iterable[tuple[Term, int, int]]:
    """Every (term, start, end) whose span [start, end) of the squeezed text respects the term's word
    boundaries and letter repeats."""
    if automaton is None or not text.text:
        return
    for last, (length, terms) in automaton.iter(text.text):
        start, end = last + 1 - length, last + 1
        for term in terms:
            starts_word = start == 0 or text.text[start - 1] == " "
            ends_word = end == len(text.text) or text.text[end] == " "
            if ((starts_word or term.open_start) and (ends_word or term.open_end)
                    and runs_match(text.runs[start:end], term.runs, starts_word)):
                yield term, start, end


def runs_match(have: Sequence[int], need: Sequence[int], starts_word: bool) -> bool:
    """Each letter, written ``have[i]`` times in a row, stands for one the keyword has ``need[i]``
    times (`repeats_match`). A word's first letter written twice also stands for a single one
    ("ffuk"): English words hardly start with a double letter, so there it is a stutter or emphasis."""
    first_doubled = starts_word and have[0] == 2 and need[0] == 1
    return (first_doubled or repeats_match(have[0], need[0])) and all(map(repeats_match, have[1:], need[1:]))


def repeats_match(have: int, need: int) -> bool:
    """A letter written ``have`` times in a row stands for one the keyword has ``need`` times: as often,
    or 3 times or more ("fuuuck")."""
    return have == need or have >= max(need, 3)


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported by the ValueError, not on stderr
    return options


def _compile_pattern(rule: Rule, pattern: str):
    try:
        return re2.compile(pattern, options=_re2_options())
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"rule {rule.id}: pattern {pattern!r} is not valid RE2 syntax "
                         f"(no back-references or look-arounds): {reason}") from None


class RuleMatcher:
    """All rules of a policy and its allowlist, compiled once. Raises ``ValueError`` for a rule with
    nothing to match, a misplaced "*", or a pattern RE2 refuses."""

    def __init__(self, rules: Sequence[Rule], allowlist: Sequence[str] = ()):
        self.rules = tuple(rules)
        keywords = []
        for index, rule in enumerate(self.rules):
            if not rule.keywords and not rule.patterns:
                raise ValueError(f"rule {rule.id} has neither keywords nor patterns")
            try:
                keywords += [key for keyword in rule.keywords for key in compile_term(keyword, index)]
            except ValueError as exc:
                raise ValueError(f"rule {rule.id}: keyword {exc}") from None
        try:
            allowed = [key for entry in allowlist for key in compile_term(entry, -1)]
        except ValueError as exc:
            raise ValueError(f"allowlist: {exc}") from None
        self._keywords, self._allowed = _automaton(keywords), _automaton(allowed)
        self._disguised_keywords, self._disguised_allowed = KeyTrie(keywords), KeyTrie(allowed)
        self._patterns = [[_compile_pattern(rule, p) for p in rule.patterns] for rule in self.rules]
        # Most messages match no pattern: one search for all of them settles that.
        every_pattern = [f"(?:{p})" for rule in self.rules for p in rule.patterns]
        self._any_pattern = re2.compile("|".join(every_pattern), options=_re2_options()) if every_pattern else None

    def match(self, text: str, minor_involved: bool) -> list[RuleHit]:
        """The rules the text hits, in policy order, each with the first thing it matched."""
        forms = match_forms(text)
        found: dict[int, str] = {}
        for words in dict.fromkeys((word_form(forms.folded), word_form(forms.plain))):
            for index, matched in self._keyword_hits(words):
                found.setdefault(index, matched)
        for word in forms.disguised:
            for index, matched in self._disguised_hits(word):
                found.setdefault(index, matched)
        pattern_forms = [form for form in dict.fromkeys((forms.plain, forms.folded))
                         if self._any_pattern is not None and self._any_pattern.search(form)]
        for index, patterns in enumerate(self._patterns):
            if index not in found and pattern_forms and (matched := _first_match(patterns, pattern_forms)):
                found[index] = matched
        return [RuleHit(self.rules[index], found[index]) for index in sorted(found)
                if minor_involved or not self.rules[index].minors_only]

    def _keyword_hits(self, words: str) -> Iterable[tuple[int, str]]:
        squeezed = squeeze(words)
        hits = list(find_terms(self._keywords, squeezed))
        allowed = [(start, end) for _, start, end in find_terms(self._allowed, squeezed)] if hits else []
        for term, start, end in hits:
            if not any(a_start <= start and end <= a_end for a_start, a_end in allowed):
                yield term.owner, _whole_words(words, *squeezed.unsqueezed_span(start, end))


    def _disguised_hits(self, word: str) -> Iterable[tuple[int, str]]:
        hits = list(self._disguised_keywords.find(word))
        allowed = [(start, end) for _, start, end in self._disguised_allowed.find(word)] if hits else []
        for term, start, end in hits:
            if not any(a_start <= start and end <= a_end for a_start, a_end in allowed):
                yield term.owner, word


class KeyTrie:
    """The one-word keys of an automaton's terms in a trie, for the words `match_forms` found disguised:
    each character of such a word may stand for several letters (`SYMBOL_READINGS`, any letter for
    a mask), which an automaton over one reading cannot weigh. Walking the trie tries
    only the readings some key continues with, so a word costs about as many steps as keys fit it.
    The same rules as `find_terms` apply: word boundaries, and each letter repeated as in the key or
    3 times or more."""

    def __init__(self, terms: Iterable[tuple[str, Term]]):
        self.root: dict = {}
        for key, term in terms:
            if " " not in key:
                node = self.root
                for letter in key:
                    node = node.setdefault(letter, {})
                node.setdefault(_TERMS, []).append(term)

    def find(self, word: str) -> Iterable[tuple[Term, int, int]]:
        """(term, start, end) for each key that fits ``word[start:end]`` under some reading."""
        walk = _Walk(word, [_readings(char) for char in word])
        for start in range(len(word)):
            walk.start = start
            yield from walk.from_node(self.root, start, ())


_TERMS = None  # the trie's key for the terms ending at a node (no letter is None)


@dataclass
class _Walk:
    """One disguised word walked through a `KeyTrie` from ``start``."""

    written: str
    readings: list[str | None]  # per character, the letters it may stand for; None: any (a mask)
    start: int = 0

    def from_node(self, node: dict, at: int, runs: tuple[int, ...]) -> Iterable[tuple[Term, int, int]]:
        """The terms fitting ``written[start:end]`` for some end, given that ``written[start:at]`` has
        brought the walk to ``node`` with these letter ``runs``."""
        for term in node.get(_TERMS, ()):
            # A mask at the edge of the word may be a correction mark ("*their") rather than a letter:
            # a key that reads it as a letter must fit the whole word ("*extremist" is no "sext*").
            masks_first = self.start == 0 and self.readings[0] is None
            masks_last = at == len(self.written) and self.readings[-1] is None
            if ((self.start == 0 or term.open_start) and (at == len(self.written) or term.open_end)
                    and (not masks_first or at == len(self.written)) and (not masks_last or self.start == 0)
                    and runs_match(runs, term.runs, self.start == 0)):
                yield term, self.start, at
        # The letters to try next: those a key continues with that the next character may stand for.
        first = self.readings[at] if at < len(self.written) else ""
        letters = [letter for letter in node if letter is not _TERMS] if first is None else \
            [letter for letter in first if letter in node]
        for letter in letters:
            end = at
            while end < len(self.written) and (self.readings[end] is None or letter in self.readings[end]):
                end += 1
                yield from self.from_node(node[letter], end, runs + (end - at,))


def _readings(char: str) -> str | None:
    """The letters ``char`` may stand for in a disguised word; None: any letter (a mask). Letters
    stand for themselves: the trie holds the other spellings of its keys (`spellings`)."""
    if char in MASKS:
        return None
    return SYMBOL_READINGS.get(char, char)


def _first_match(patterns, forms: list[str]) -> str | None:
    for pattern in patterns:
        for form in forms:
            if hit := pattern.search(form):
                return hit.group(0)
    return None


def _whole_words(words: str, start: int, end: int) -> str:
    """The words the span touches, so a hit of "fuck*" shows as the word it hit ("fucking")."""
    start = words.rfind(" ", 0, start) + 1
    end = len(words) if (space := words.find(" ", end)) == -1 else space
    return words[start:end]
