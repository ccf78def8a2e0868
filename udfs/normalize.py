"""Folds the ways people disguise words back to one plain form, for matching and for the text model.

`normalize` undoes, in this order: compatibility forms (fullwidth, 𝐦𝐚𝐭𝐡 letters, ligatures), case,
accents and invisible characters, look-alike letters from other scripts, letters spaced out
("f u c k", "k.i.l.l"), leetspeak ("sh1t", "a$$"), and elongation ("fuuuuck"). The result is for
comparison only: never show it to a person or store it in place of the original text.

Every step is a small pure function so that rules can reuse one step, and so that a new evasion is a
new step with its own case table in tests/test_normalize.py.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Look-alike letters that Unicode compatibility folding leaves alone (Cyrillic and Greek letters that
# render like Latin ones, a few hooked and barred letters). This hand-kept table is the place for a full
# confusables map: when a packaged copy of Unicode's confusables.txt (UTS #39) is kept in the project,
# merge it in here. It is looser than UTS #39 on purpose (к -> k, not to small-capital ĸ), because the
# goal is the Latin word being disguised. Keys are lower-case because folding runs after casefold.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x",
    "ԁ": "d", "ԛ": "q", "ԝ": "w",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x",
    # Latin letters with hooks or strokes that have no canonical decomposition
    "ı": "i", "ɑ": "a", "ƈ": "c", "ɡ": "g", "ɦ": "h", "ł": "l", "ø": "o", "ʂ": "s", "ƶ": "z",
}

# Digits and symbols read as letters. "2" is left out because it usually means "to" ("2 girls").
LEET: dict[str, str] = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "€": "e", "!": "i", "|": "i",
}

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

# The same character 3 or more times: kept twice, so "good" and "kill" survive but "fuuuuck" folds.
_ELONGATION = re.compile(r"(.)\1{2,}", re.DOTALL)


# The same message is normalised by the model's featurizer and by the rules tier, and chat repeats
# itself ("gg", "lol"): a bounded cache does each text once.
@lru_cache(maxsize=8192)
def normalize(text: str) -> str:
    """Folds disguised text to plain lower-case words on one line, for matching."""
    text = fold_compatibility_and_case(text)
    text = strip_marks_and_invisibles(text)
    # One space between words from here on, so that the word-wise steps can split on " ".
    text = " ".join(text.split())
    text = fold_confusables(text)
    text = join_spaced_letters(text)
    text = unleet(text)
    return collapse_elongation(text)


def fold_compatibility_and_case(text: str) -> str:
    # NFKD before casefold, because 𝐅 only becomes a cased "F" once compatibility-decomposed;
    # the decomposed accents are removed by the next step, and NFC there recomposes the rest.
    return unicodedata.normalize("NFKD", text).casefold()


def strip_marks_and_invisibles(text: str) -> str:
    """Drops combining marks (accents, zalgo, variation selectors) and format characters (zero-width
    spaces and joiners, soft hyphens, bidi controls); control characters become spaces."""
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
    return bool(letters) and (has_latin or all(char in CONFUSABLES for char in letters))


def _fold_word(word: str) -> str:
    return "".join(CONFUSABLES.get(char, char) for char in word)


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


def _unleet_word(word: str) -> str:
    if not any(char.isalpha() for char in word):
        return word
    return _LEET_IN_WORD.sub(lambda match: LEET[match.group(0)], word)


def collapse_elongation(text: str) -> str:
    return _ELONGATION.sub(r"\1\1", text)
