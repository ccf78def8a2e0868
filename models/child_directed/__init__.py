"""Child-directed chat, SYNTHETIC: messages of the kind said to children on a game platform, and the
game chat that looks like them. No real corpus of such messages may be used here (../shared/data/README.md),
so the sets below were written for the purpose, each by an author who never saw the others or this code:

| file | rows | used for |
|---|---|---|
| `train_seeds.jsonl` | plain seed messages per kind | training, after `augment` (this module) |
| `train_more_a.jsonl` … `train_more_c.jsonl` | messages as chat writes them: subtle ones, mid-conversation ones, the weak kinds and game look-alikes again | training as written (val where `split_of` says val) |
| `val_set.jsonl` | messages as chat writes them | calibration, the stack, thresholds, choices |
| `test_set.jsonl` | messages as chat writes them, with an age pair | reporting only (`make evaluate`, the demo) |

Each row has ``text``, ``harmful`` and ``kind`` (``category`` in the files); the test set also a ``pair``
(adult_to_child, teen_to_child, child_to_child). `KIND_CATEGORIES` maps the harmful kinds onto the
model's categories (`udfs.text_model.CATEGORIES`): sexual approaches and the grooming moves (photos,
meeting, secrecy, gifts for something) are ``sexual_minors``; personal information, moving to another app
and account requests ``pii``; threats of real violence ``threat``; bullying ``toxicity``; self-harm
``self_harm``. Benign kinds (game violence, meeting places in a game, trades, game houses, school games,
screenshots, friendly talk, banter, support, pretend play) are negatives for every category: the hard negatives
that keep game talk from being acted on.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

FOLDER = Path(__file__).resolve().parent
TRAIN_SEEDS, VAL_SET, TEST_SET = (FOLDER / name for name in ("train_seeds.jsonl", "val_set.jsonl", "test_set.jsonl"))
# Messages written as chat writes them, by three more authors, for training (and val where split_of says val).
TRAIN_MORE = tuple(FOLDER / f"train_more_{author}.jsonl" for author in "abc")
PAIRS = ("adult_to_child", "teen_to_child", "child_to_child")

# Harmful kind -> the model categories it is a positive of.
KIND_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "sexual_approach": ("sexual_minors", "sexual"),
    "photo_request": ("sexual_minors",),
    "meetup": ("sexual_minors",),
    "secrecy": ("sexual_minors",),
    "gifts_exchange": ("sexual_minors",),
    "personal_info": ("pii",),
    "off_platform": ("pii",),
    "account_request": ("pii",),
    "threat": ("threat", "toxicity"),
    "bullying": ("toxicity",),
    "self_harm": ("self_harm",),
}
# Categories a harmful kind says nothing about (neither positive nor negative): a request to meet may
# well ask where the child lives, a bully may threaten, an offer of robux reads like spam.
KIND_UNLABELLED: Mapping[str, tuple[str, ...]] = {
    "sexual_approach": ("toxicity",),
    "photo_request": ("sexual", "toxicity"),
    "meetup": ("pii", "toxicity"),
    "secrecy": ("toxicity", "pii"),
    "gifts_exchange": ("spam", "toxicity", "sexual"),
    "personal_info": ("sexual_minors", "toxicity"),
    "off_platform": ("sexual_minors", "spam"),
    "account_request": ("spam", "sexual_minors", "toxicity"),
    "threat": ("hate",),
    "bullying": ("threat", "hate"),
    "self_harm": ("toxicity", "threat"),
}
# What a kind's row labels, for every category the models know.
MODEL_CATEGORIES = ("toxicity", "hate", "threat", "sexual", "sexual_minors", "self_harm", "pii", "spam")
# The kinds judged in a room between children by the child-directed test (the others are what adults
# and older teens say to a child).
ROOM_KINDS = ("threat", "bullying", "self_harm")


@dataclass(frozen=True)
class Message:
    text: str
    harmful: bool
    kind: str
    pair: str | None = None


def read(path: Path) -> list[Message]:
    """The rows of one of the three files; a row with an unknown harmful kind is refused."""
    messages = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            message = Message(row["text"], bool(row["harmful"]), row["category"], row.get("pair"))
            if message.harmful and message.kind not in KIND_CATEGORIES:
                raise ValueError(f"{path.name}:{number}: unknown harmful kind {message.kind!r}")
            messages.append(message)
    return messages


def labels(message: Message) -> dict[str, int]:
    """The message's labels per model category (1, 0, or absent: not labelled by this kind)."""
    if not message.harmful:
        return dict.fromkeys(MODEL_CATEGORIES, 0)
    positives = KIND_CATEGORIES[message.kind]
    return {category: int(category in positives) for category in MODEL_CATEGORIES
            if category in positives or category not in KIND_UNLABELLED[message.kind]}


# ---- augmentation: how chat writes the seeds ----------------------------------------------------------

VARIANTS_PER_SEED = 4

# Chat spellings, each used in place of the word with a given chance.
ABBREVIATIONS: Mapping[str, tuple[str, ...]] = {
    "you": ("u", "u", "ya", "yu"), "your": ("ur", "ur", "yr", "youre"), "you're": ("ur", "youre", "your"),
    "are": ("r",), "right now": ("rn",), "please": ("pls", "plz", "plss"), "because": ("bc", "cuz", "cause"),
    "want to": ("wanna",), "going to": ("gonna",), "got to": ("gotta",), "okay": ("ok", "k", "okk"),
    "what": ("wat", "wut", "wht"), "with": ("w", "wit"), "about": ("abt", "bout"), "tomorrow": ("tmr", "tmrw"),
    "tonight": ("tn", "2nite"), "don't": ("dont", "dnt"), "i'm": ("im", "i am"), "really": ("rly", "rlly"),
    "people": ("ppl",), "something": ("smth", "somethin"), "someone": ("some1", "someone"), "before": ("b4",),
    "later": ("l8r",), "why": ("y",), "thanks": ("thx", "ty"), "know": ("kno", "no"), "doing": ("doin",),
    "going": ("goin",), "nothing": ("nothin", "nth"), "picture": ("pic", "pik"), "pictures": ("pics", "pix"),
    "can't": ("cant",), "won't": ("wont",), "it's": ("its",), "that's": ("thats",), "to": ("to", "2"),
    "for": ("for", "4"), "see": ("see", "c"), "be": ("be", "b"), "are you": ("ru", "r u"), "the": ("da", "teh"),
}
FILLERS_BEFORE = ("hey", "hi", "yo", "ok", "lol", "btw", "so", "umm", "heyy", "omg", "bro", "ok so", "wait")
FILLERS_AFTER = ("lol", "pls", "??", "!", "!!", "...", "haha", ":)", "😊", "🙂", "😂", "lmao", "ok", "rn")
LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7"}
KEYBOARD_NEIGHBOURS = {"a": "sq", "e": "wr", "i": "uo", "o": "ip", "u": "yi", "s": "ad", "n": "bm", "r": "et",
                       "t": "ry", "l": "k", "m": "n", "h": "gj", "c": "xv", "d": "sf"}
_WORD = re.compile(r"[A-Za-z']+")


def _abbreviate(text: str, rng: random.Random) -> str:
    for phrase in sorted(ABBREVIATIONS, key=len, reverse=True):
        pattern = re.compile(rf"\b{re.escape(phrase)}\b", re.IGNORECASE)
        text = pattern.sub(lambda m: rng.choice(ABBREVIATIONS[phrase]) if rng.random() < 0.6 else m.group(0), text)
    return text


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    edit = rng.randrange(4)
    if edit == 0:
        return word[:i] + word[i + 1:]  # a letter dropped
    if edit == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # two swapped
    if edit == 2:
        return word[:i] + word[i] + word[i:]  # one doubled
    near = KEYBOARD_NEIGHBOURS.get(word[i].lower())
    return word[:i] + rng.choice(near) + word[i + 1:] if near else word


def _disguise(word: str, rng: random.Random) -> str:
    """A word written to slip past filters: l33t, spaced, dotted or stretched."""
    style = rng.randrange(4)
    if style == 0:
        return "".join(rng.choice(LEET[c]) if c in LEET and rng.random() < 0.7 else c for c in word)
    if style == 1:
        return " ".join(word)
    if style == 2:
        return ".".join(word)
    i = rng.randrange(len(word))
    return word[:i] + word[i] * rng.randint(2, 4) + word[i:]


def _per_word(text: str, rng: random.Random, chance: float, change) -> str:
    return _WORD.sub(lambda m: change(m.group(0), rng) if rng.random() < chance else m.group(0), text)


def _case(text: str, rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.1:
        return text.upper()
    if draw < 0.3:
        return text[:1].upper() + text[1:]
    if draw < 0.4:
        return "".join(c.upper() if rng.random() < 0.3 else c for c in text)
    return text.lower()


def augment(seed: str, benign_pool: list[str], rng: random.Random) -> str:
    """One way chat might write `seed`: abbreviations, typos, a disguised word, no punctuation, a case,
    fillers, sometimes after an ordinary game line from `benign_pool` (harm often arrives mid-chat)."""
    text = _abbreviate(seed, rng)
    if rng.random() < 0.5:
        text = _per_word(text, rng, 0.12, _typo)
    if rng.random() < 0.2:
        text = _per_word(text, rng, 0.15, _disguise)
    if rng.random() < 0.5:
        text = re.sub(r"[.,!?;:]+", "", text)
    if rng.random() < 0.3:
        text = f"{rng.choice(FILLERS_BEFORE)} {text}"
    if rng.random() < 0.3:
        text = f"{text} {rng.choice(FILLERS_AFTER)}"
    if benign_pool and rng.random() < 0.15:
        text = f"{rng.choice(benign_pool)} {text}"
    return _case(text, rng)


def benign_pool(seeds: list[Message]) -> list[str]:
    """The short benign seeds, which `augment` may put before a message."""
    return sorted({m.text for m in seeds if not m.harmful and len(m.text.split()) <= 8})


def variants(seed: Message, pool: list[str]) -> list[Message]:
    """`seed` as written, then VARIANTS_PER_SEED augmented copies, without repeats (seeded by the text)."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(seed.text.encode("utf-8"), digest_size=8).digest(), "big"))
    texts = dict.fromkeys([seed.text] + [augment(seed.text, pool, rng) for _ in range(VARIANTS_PER_SEED)])
    return [Message(text, seed.harmful, seed.kind, seed.pair) for text in texts]
