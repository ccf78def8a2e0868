"""Folds the ways people disguise words back to one plain form, for matching and for the text model.

`normalize` undoes, in this order: compatibility forms (fullwidth, 𝐦𝐚𝐭𝐡 letters, ligatures), case,
accents and invisible characters, look-alike letters from other scripts, letters spaced out
("f u c k", "k.i.l.l"), leetspeak ("sh1t", "a$$"; not in mentions, ordinals and numbers with
units: "@user", "1st", "5pm"), and elongation ("fuuuuck"). The result is for comparison only: never
show it to a person or store it in place of the original text.

`match_forms` gives the rules tier what it matches: the lower-cased text with digits and punctuation
intact (phone numbers, handles), the folded text (`normalize` but elongation kept, which the rules
weigh themselves) with emoji read as their names ("🖕" -> "middle finger"), and the words that hide
letters behind digits, symbols or masks ("f*ck", "1ez"), which the rules read every way a symbol can
be read (`SYMBOL_READINGS`: "1" is an i or an l) where `normalize` reads it one way. The text model
reads `normalize` alone, so that a change to emoji naming or to the rules' readings does not change
the model's features.

Every step is a small pure function so that rules can reuse one step, and so that a new evasion is a
new step with its own case table in tests/test_normalize.py.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import emoji

CONFUSABLES_FILE = Path(__file__).parent / "data" / "confusables.json"
# "LATIN SMALL LETTER C WITH HOOK", "LATIN LETTER SMALL CAPITAL H": letters that Unicode neither
# decomposes nor lists as confusable, but whose name says which Latin letter they are.
_DECORATED_LATIN_NAME = re.compile(r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .*)?")


@lru_cache(maxsize=1)
def latin_lookalikes() -> dict[str, str]:
    """Each non-ASCII character that looks like Latin letters, mapped to them in lower case.

    Derived from Unicode's confusables (UTS #39, via udfs/data/confusables.json), keeping the
    mappings whose base folds to Latin letters. A lower-case letter whose own base is not Latin
    takes its capital's (Cyrillic к -> small-capital ĸ in UTS #39, but К -> K): the goal is the Latin
    word being disguised, so this is looser than UTS #39 on purpose. One letter beats several
    (Greek β -> b rather than UTS #39's ß -> ss). Letters the table lacks fall back to their
    Unicode name ("LATIN SMALL LETTER C WITH HOOK" -> c). Keys are lower-case, because folding
    runs after casefold; ASCII keys ("0" -> O) are left to leetspeak.
    """
    bases = json.loads(CONFUSABLES_FILE.read_text(encoding="utf-8"))
    candidates: dict[str, list[str]] = {}
    for char, base in bases.items():
        latin = _latin_letters(base)
        if latin and not char.isascii():
            candidates.setdefault(char.casefold(), []).append(latin)
            candidates.setdefault(char.lower(), []).append(latin)
    table = {char: min(options, key=len) for char, options in candidates.items()
             if len(char) == 1 and not char.isascii()}
    for code in range(0x80, 0x10000):
        char = chr(code)
        if char not in table and (named := _DECORATED_LATIN_NAME.fullmatch(unicodedata.name(char, ""))):
            table[char.casefold() if len(char.casefold()) == 1 else char] = named.group(1).lower()
    return table


def _latin_letters(base: str) -> str | None:
    folded = "".join(c for c in unicodedata.normalize("NFKD", base).casefold() if not unicodedata.combining(c))
    return folded if folded.isascii() and folded.isalpha() else None


# The letters a digit or symbol inside a word may stand for, the likeliest first ("1" is an i in
# "sh1t" but an l in "1ez"). "2" is left out because it usually means "to" ("2 girls").
SYMBOL_READINGS: dict[str, str] = {
    "0": "o", "1": "il", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
    "@": "ao", "$": "s", "€": "e", "!": "il", "|": "il",
}
# `normalize` reads each digit and symbol one way: the likeliest.
LEET: dict[str, str] = {char: readings[0] for char, readings in SYMBOL_READINGS.items()}
# Other spellings of a word's letters, (letters, written instead), that evaders use and readers still
# read as the word: look-alikes ("l" for "i": l and I look alike in many fonts, and UTS #39 lists them
# as confusable; "v" for "u": "fvck") and sound-alikes ("ph" for "f", "k" for a hard "c" or "ck",
# "a" for a final "er": "phuck", "kunt", "fucka"). "x" for "u" ("fxck") only in words of at most
# `X_FOR_U_MAX_LETTERS` letters: in longer ones it is more often a letter of another word.
LOOKALIKE_SPELLINGS: tuple[tuple[str, str], ...] = (("i", "l"), ("u", "v"), ("u", "x"))
SOUNDALIKE_SPELLINGS: tuple[tuple[str, str], ...] = (("f", "ph"), ("ck", "k"), ("ck", "kk"), ("c", "k"), ("er", "a"))
SPELLINGS = LOOKALIKE_SPELLINGS + SOUNDALIKE_SPELLINGS
X_FOR_U_MAX_LETTERS = 5
# Characters that hide one letter inside a word: "f*ck", "f#ck", "f_ck", "f.ck".
MASKS = "*#_."

# Digits, "@", "$" and "€" read as letters anywhere in a word that has a letter ("m3", "a$$"). "!" and
# "|" are also punctuation, so they read as letters only when a letter or digit follows ("sh!t",
# "h3||0", but not "hi!!").
_LEET_ANYWHERE = "".join(char for char in LEET if char not in "!|")
_LEET_IN_WORD = re.compile(rf"[{re.escape(_LEET_ANYWHERE)}]|[!|](?=[!|]*[^\W_])")

# A run of 3 or more single characters split by up to 3 spaces or punctuation marks: "f u c k",
# "k.i.l.l", "s-e-x", "k 1 l l". The look-arounds keep "a" and "i" inside ordinary sentences alone
# unless three singles in a row occur ("u r a" does join; see tests for the accepted cost).
_SINGLE = r"[^\W_]|[@$]"
_SPACED_LETTERS = re.compile(
    rf"(?<![^\W_])(?:{_SINGLE})(?:[\s.,_*+~/\\-]{{1,3}}(?:{_SINGLE})){{2,}}(?![^\W_])"
)
_SEPARATOR = re.compile(r"[\s.,_*+~/\\-]")

_ASCII_CONTROLS_TO_SPACE = {code: " " for code in (*range(0x20), 0x7F)}

# The same character 3 or more times: kept twice, so "good" and "kill" survive but "fuuuuck" folds.
_ELONGATION = re.compile(r"(.)\1{2,}", re.DOTALL)


@dataclass(frozen=True)
class MatchForms:
    """What the rules tier matches; the original text stays with the event, for display."""

    # Compatibility-folded, case-folded, one space between words; digits and punctuation intact.
    plain: str
    # `fold_disguises` (`normalize` with elongation kept) after emoji are read as their names.
    folded: str
    # The words that hide letters behind digits, symbols or masks ("f*ck", "5h1t", "@rgy"), as
    # written once look-alike letters are folded: `folded` reads each symbol one way, and a masked
    # letter not at all, so a matcher that weighs every reading (`SYMBOL_READINGS`, `MASKS`) needs them.
    disguised: tuple[str, ...] = ()


@lru_cache(maxsize=8192)
def match_forms(text: str) -> MatchForms:
    plain = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    lookalikes = fold_lookalikes(name_emoji(text))
    return MatchForms(plain=plain, folded=unleet(join_spaced_letters(lookalikes)),
                      disguised=disguised_words(lookalikes))


def name_emoji(text: str) -> str:
    """Emoji as the words they stand for, from the `emoji` package's English names (CLDR short
    names): "🖕" -> " middle finger ", "🔪" -> " kitchen knife "."""
    if text.isascii():  # the common case, and no emoji in it
        return text
    return emoji.replace_emoji(text, replace=lambda _, data: " " + data["en"].strip(":").replace("_", " ") + " ")


# The same message is normalised by the model's featurizer and by the rules tier, and chat repeats
# itself ("gg", "lol"): a bounded cache does each text once.
@lru_cache(maxsize=8192)
def normalize(text: str) -> str:
    """Folds disguised text to plain lower-case words on one line, for matching."""
    return collapse_elongation(fold_disguises(text))


def fold_disguises(text: str) -> str:
    """Every step of `normalize` but the last: elongation stays, for matchers that weigh how often a
    letter repeats themselves ("good" is not an elongated "god", "goooood" may be)."""
    return unleet(join_spaced_letters(fold_lookalikes(text)))


def fold_lookalikes(text: str) -> str:
    """The steps of `fold_disguises` that fold one character at a time: compatibility forms, case,
    marks and invisibles, look-alike letters; words still as written ("f*k*r", "5h1t")."""
    text = fold_compatibility_and_case(text)
    text = strip_marks_and_invisibles(text)
    # One space between words from here on, so that the word-wise steps can split on " ".
    text = " ".join(text.split())
    return fold_confusables(text)


def fold_compatibility_and_case(text: str) -> str:
    # NFKD before casefold, because 𝐅 only becomes a cased "F" once compatibility-decomposed;
    # the decomposed accents are removed by the next step, and NFC there recomposes the rest.
    return unicodedata.normalize("NFKD", text).casefold()


def strip_marks_and_invisibles(text: str) -> str:
    """Drops combining marks (accents, zalgo, variation selectors) and format characters (zero-width
    spaces and joiners, soft hyphens, bidi controls); control characters become spaces."""
    if text.isascii():  # the common case: only control characters to replace
        return text.translate(_ASCII_CONTROLS_TO_SPACE)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Mn", "Me", "Cf"):
            continue
        kept.append(" " if category == "Cc" else char)
    return unicodedata.normalize("NFC", "".join(kept))


def fold_confusables(text: str) -> str:
    """Maps look-alike letters to Latin in words that are mixed-script or made only of look-alikes,
    so "раураl" folds but an ordinary Cyrillic word such as "привет" is left alone."""
    if text.isascii():  # the common case, and nothing to fold
        return text
    return " ".join(_fold_word(word) if _is_disguised_latin(word) else word for word in text.split(" "))


def _is_disguised_latin(word: str) -> bool:
    letters = [char for char in word if char.isalpha()]
    has_latin = any("a" <= char <= "z" for char in letters)
    lookalikes = latin_lookalikes()
    return bool(letters) and (has_latin or all(char in lookalikes for char in letters))


def _fold_word(word: str) -> str:
    lookalikes = latin_lookalikes()
    return "".join(lookalikes.get(char, char) for char in word)


def join_spaced_letters(text: str) -> str:
    """Joins runs of 3 or more single letters ("f u c k" -> "fuck"); runs of digits alone stay."""
    return _SPACED_LETTERS.sub(_join_run, text)


def _join_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if not any(char.isalpha() for char in run):
        return run
    return _SEPARATOR.sub("", run)


def unleet(text: str) -> str:
    """Reads digits and symbols as letters inside words that contain a letter ("wh0re", "a$$")."""
    return " ".join(_unleet_word(word) for word in text.split(" "))


# Words whose digits and "@" are not letters: a number with its ordinal or unit ("1st", "3rd", "5pm",
# "100k", "1990s", "10yrs") and a mention of a user ("@user", "@cool_kid_12", "rt @sam:"), which read
# as leetspeak became "ist", "auser" and "cool_kid_iz". Masks and symbols elsewhere in such a word
# still make it a disguise ("@s$hole"), and the rules tier reads "@ss" every way a symbol can be read.
_NUMBER_WITH_UNIT = re.compile(r"\d+(?:st|nd|rd|th|s|k|m|b|x|am|pm|p|px|d|ft|yrs?|hrs?|mins?)")
_MENTION = re.compile(r"@[a-z][a-z0-9_]*")
_WORD_EDGES = ".,:;!?'’\"()"


def _unleet_word(word: str) -> str:
    core = word.strip(_WORD_EDGES)
    if not any(char.isalpha() for char in word) or _NUMBER_WITH_UNIT.fullmatch(core) or _MENTION.fullmatch(core):
        return word
    return _LEET_IN_WORD.sub(lambda match: LEET[match.group(0)], word)


def collapse_elongation(text: str) -> str:
    return _ELONGATION.sub(r"\1\1", text)


# A word for `disguised_words`: letters, digits, symbols that read as letters, masks and apostrophes.
_DISGUISE = rf"[{re.escape(''.join(SYMBOL_READINGS) + MASKS)}]"
# A run of such characters, then a check that it holds a disguise: one pass (a pattern that demanded a
# disguise inside the run backtracked over every long plain word, quadratic in its length).
_WORD_RUN = re.compile(rf"(?:[^\W_]|{_DISGUISE}|['’])+")
_HAS_DISGUISE = re.compile(_DISGUISE)
# Around a word these are punctuation, hashtags or emphasis ("why?!", "#tbt", "*hugs*"), not letters.
_EDGE_PUNCTUATION = ".,_!|#'’"
# Beyond these a word is a row of stars or a code, not a disguised word.
_MAX_MASKS = 3
_MAX_DISGUISED_LENGTH = 32


def disguised_words(text: str) -> tuple[str, ...]:
    """The words of ``text`` (from `fold_lookalikes`) that hide letters behind digits, symbols or masks:
    "f*ck", "5h1t", "@rgy", "d!ck". Plain words and numbers ("120", "3.5") are left out, and so are
    words more mask than letter ("f***", "****")."""
    found = []
    for match in _WORD_RUN.finditer(text):
        if not _HAS_DISGUISE.search(match.group(0)):
            continue
        for piece in _split_separators(match.group(0)):
            word = _trim_word(piece)
            if word and _is_disguised(word):
                found.append(word)
    return tuple(dict.fromkeys(found))


# "." and "_" also join words ("e.g.", "k..where", "cool_kid_12", "site.com"): one of them hides a
# letter only alone in a word of 4 characters or more ("f.ck", "sh_t"); otherwise they split it.
_JOINERS = "._"
_MIN_LENGTH_FOR_A_JOINER_MASK = 4


def _split_separators(word: str) -> list[str]:
    core = re.split(r"['’]", word.strip(_EDGE_PUNCTUATION))[0]  # "c.k's": the possessive is no letter of it
    joiners = sum(char in _JOINERS for char in core)
    if joiners == 0 or (joiners == 1 and len(core) >= _MIN_LENGTH_FOR_A_JOINER_MASK):
        return [word]
    return re.split(rf"[{_JOINERS}]+", word)


def _trim_word(word: str) -> str:
    word = word.strip(_EDGE_PUNCTUATION).replace("'", "").replace("’", "")
    if len(word) > 2 and word[0] == word[-1] == "*":  # *hugs*: emphasis, not masked letters
        word = word[1:-1]
    # "***triggers", "...": markup, not letters
    return re.sub(r"^\*{2,}|\*{2,}$", "", word)


def _is_disguised(word: str) -> bool:
    masks = sum(char in MASKS for char in word)
    symbols = sum(char in SYMBOL_READINGS for char in word)
    letters = sum(char.isalpha() for char in word)
    symbols_not_digits = sum(char in SYMBOL_READINGS and not char.isdigit() for char in word)
    return bool(2 <= len(word) <= _MAX_DISGUISED_LENGTH and (masks or symbols) and masks <= _MAX_MASKS
                and masks < len(word) - masks and (letters or symbols_not_digits >= 2))
