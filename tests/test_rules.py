"""udfs.rules: keywords through Aho-Corasick on the normalised forms, RE2 patterns, the allowlist.

Two matchers: a small one written here, whose keywords are deliberately broad so that every evasion
and every allowlist case shows on its own, and the shipped policy's.
"""
import time

import pytest

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import Action
from udfs.policy import Rule, load_policy
from udfs.rules import RuleMatcher, squeeze, word_form
from udfs.normalize import match_forms

POLICY = load_policy(PROJECT_ROOT / "flink-conf/policy.yaml")
SHIPPED = RuleMatcher(POLICY.rules, POLICY.allowlist)


def rule(id, keywords=(), patterns=(), minors_only=False):
    return Rule(id=id, category="toxicity", action=Action.REVIEW, keywords=list(keywords),
                patterns=list(patterns), minors_only=minors_only)


BROAD_RULES = [
    rule("swear", ["fuck*", "*fucker", "ass", "bitch"]),
    rule("kill", ["kill yourself", "dont tell your parents"]),
    rule("wild", ["*cunt*", "*ass*", "*cock*", "*rapist"]),
]
ALLOWLIST = ["scunthorpe", "assassin*", "class*", "cocktail*", "therapist*", "hancock", "grass"]
BROAD = RuleMatcher(BROAD_RULES, ALLOWLIST)


def hit_ids(matcher, text, minor=True):
    return [hit.rule.id for hit in matcher.match(text, minor)]


EVASIONS = [  # (kind, text): each must hit the "kill" rule or the "swear" rule
    ("plain", "kill yourself"),
    ("spaced letters", "k i l l yourself"),
    ("punctuation between letters", "k.i.l.l yourself"),
    ("l33t", "k1ll y0urs3lf"),
    ("look-alike letters", "кіll yourself"),  # Cyrillic к and і
    ("fullwidth", "ｋｉｌｌ ｙｏｕｒｓｅｌｆ"),
    ("zero-width characters", "ki\u200bll your\u200dself"),
    ("combining marks", "k̸i̴l̶l̵ yourself"),
    ("elongation", "kiiiiillllll yourselllllf"),
    ("punctuation between words", "kill,yourself!!"),
    ("apostrophe", "don't tell your parents"),
    ("elongated swear", "fuuuuuuck"),
    ("doubled first letter", "ffuck you"),  # the obscenity README's "ffuk you", in this test's keywords
    ("prefix wildcard", "fucking hell"),
    ("suffix wildcard", "motherfucker"),
    ("symbols for letters", "b!tch"),
    ("a$$", "you a$$"),
]


@pytest.mark.parametrize("kind, text", EVASIONS)
def test_each_evasion_kind_is_caught(kind, text):
    assert set(hit_ids(BROAD, text)) & {"kill", "swear"}, kind


@pytest.mark.parametrize("text", ["as", "assume", "basset", "grass", "bitches", "killer yourself", "biitch",
                                  "a kkiller"])
def test_keywords_are_whole_words_and_letters_must_repeat_as_in_the_keyword(text):
    # "as" squeezes like "ass" but lacks its double s; "bitches" is not the whole word "bitch"; a
    # doubled letter is a different word, not an elongation (as "good" is not "god"), save a word's first.
    assert "swear" not in hit_ids(BROAD, text) and "kill" not in hit_ids(BROAD, text)


ALLOWED = ["Scunthorpe", "a classic", "assassin's creed", "cocktail party", "my therapist", "Mr Hancock",
           "SCUNTHORPE UNITED", "s c u n t h o r p e", "the grass is green", "classy"]


@pytest.mark.parametrize("text", ALLOWED)
def test_the_allowlist_suppresses_hits_inside_allowed_words(text):
    assert hit_ids(BROAD, text) == []
    assert hit_ids(RuleMatcher(BROAD_RULES), text) != []  # without the allowlist the wildcards hit


def test_an_allowed_word_does_not_hide_a_real_hit_beside_it():
    assert hit_ids(BROAD, "scunthorpe is full of cunts") == ["wild"]
    assert hit_ids(BROAD, "classic, you cocky ass") == ["swear", "wild"]


@pytest.mark.parametrize("text", ["Scunthorpe", "a classic", "assassin", "cocktail", "my therapist", "Hancock",
                                  "Essex and Sussex", "grapes", "suicide squad", "shiitake mushrooms", "Dickens"])
def test_the_shipped_policy_does_not_hit_the_scunthorpe_cases(text):
    assert hit_ids(SHIPPED, text) == []


BENIGN_GAME_CHAT = ["lol", "okay", "ok", "gg", "gg wp", "brb", "lmao", "nice shot!", "you killed me lol",
                    "i killed the boss", "headshot", "noob", "lets go to the castle", "can you help me build",
                    "that was sick", "omg", "im at 3 hp", "trade?", "who wants to team", "ez", "rip",
                    "this level kills me lol, classic", "kill the dragon first", "my base is at 120 64 -300",
                    "wanna play again tomorrow?", "hello", "hiiiii", "thx", "shoot the zombies",
                    "i have 1000 robux", "add me as a friend in game", "what level are you"]


@pytest.mark.parametrize("text", BENIGN_GAME_CHAT)
def test_ordinary_game_chat_hits_no_rule_even_with_a_child_present(text):
    assert hit_ids(SHIPPED, text) == []


@pytest.mark.parametrize("text, rule_ids", [
    ("f u c k off", ["profanity"]),
    ("ѕhіt", ["profanity"]),
    ("you 🖕", ["profanity"]),  # the emoji read as its name
    ("kys", ["harassment"]),
    ("i'll kill u", []),  # game talk as often as not: the text model judges it
    ("im gonna stab your family", ["threats"]),
    ("i know where you live", ["threats"]),
    ("add me on snap", ["off_platform_lure"]),
    ("snap: coolkid12", ["off_platform_lure"]),
    ("hmu on insta @cool.kid_12", ["off_platform_lure"]),
    ("call 555 123 4567", ["personal_information_shared"]),
    ("my email is kid123@example.com", ["personal_information_shared"]),
    ("i live at 42 oak tree road", ["personal_information_shared"]),
    ("i go to lincoln high school", ["personal_information_shared"]),
    ("are you home alone", ["personal_information", "secrecy_and_photos"]),
    ("d0nt t3ll ur parents", ["secrecy_and_photos"]),
    ("send n u d e s", ["profanity", "explicit_requests_to_minors"]),
    ("i want to kill myself", ["self_harm_intent"]),
    ("free robux here", ["scam_lures"]),
])
def test_shipped_rules(text, rule_ids):
    assert hit_ids(SHIPPED, text) == rule_ids


def test_minors_only_rules_stay_quiet_between_adults():
    assert hit_ids(SHIPPED, "add me on snap", minor=False) == []
    assert hit_ids(SHIPPED, "i want to kill myself", minor=False) == ["self_harm_intent"]


def test_a_hit_shows_the_whole_word_it_matched():
    (hit,) = BROAD.match("such a motherfucker", True)
    assert hit.matched == "motherfucker"


@pytest.mark.parametrize("rules, allowlist, message", [
    ([rule("empty")], [], "neither keywords nor patterns"),
    ([rule("star", ["f*ck"])], [], "'\\*' may only open"),
    ([rule("blank", ["!!!"])], [], "nothing to match"),
    ([rule("backref", patterns=[r"(a)\1"])], [], "not valid RE2"),
    ([rule("lookahead", patterns=[r"kill(?= you)"])], [], "not valid RE2"),
    ([rule("ok", ["x"])], ["a*b"], "allowlist"),
])
def test_malformed_rules_are_refused(rules, allowlist, message):
    with pytest.raises(ValueError, match=message):
        RuleMatcher(rules, allowlist)


def test_patterns_run_in_linear_time():
    # (a+)+$ backtracks exponentially in Python's re; RE2 answers at once.
    matcher = RuleMatcher([rule("nested", patterns=[r"(a+)+$"])])
    start = time.perf_counter()
    assert matcher.match("a" * 20_000 + "!", True) == []
    assert time.perf_counter() - start < 0.5


def naive_hits(rules, allowlist, text):
    """The reference: every keyword compared at every position of the squeezed word forms."""
    def spans(terms, squeezed):
        found = []
        for term in terms:
            core = term.strip("*")
            key = squeeze(word_form(match_forms(core).folded))
            for start in range(len(squeezed.text) - len(key.text) + 1):
                end = start + len(key.text)
                if squeezed.text[start:end] != key.text:
                    continue
                starts_word = start == 0 or squeezed.text[start - 1] == " "
                left = starts_word or term.startswith("*")
                right = end == len(squeezed.text) or squeezed.text[end] == " " or term.endswith("*")
                repeats = all(h == n or h >= max(n, 3) or (i == 0 and starts_word and (h, n) == (2, 1))
                              for i, (h, n) in enumerate(zip(squeezed.runs[start:end], key.runs)))
                if left and right and repeats:
                    found.append((term, start, end))
        return found

    forms = match_forms(text)
    ids = set()
    for words in (word_form(forms.folded), word_form(forms.plain)):
        squeezed = squeeze(words)
        allowed = spans(allowlist, squeezed)
        for index, r in enumerate(rules):
            if any(not any(a <= s and e <= b for _, a, b in allowed) for _, s, e in spans(r.keywords, squeezed)):
                ids.add(index)
    return [rules[i].id for i in sorted(ids)]


@pytest.mark.parametrize("text", [text for _, text in EVASIONS] + ALLOWED + BENIGN_GAME_CHAT
                         + ["scunthorpe is full of cunts", "classic, you cocky ass", "fuck fuck fuuuck"])
def test_the_automaton_agrees_with_the_naive_reference(text):
    assert hit_ids(BROAD, text) == naive_hits(BROAD_RULES, ALLOWLIST, text)


# ---- disguises read every way: masked letters, ambiguous digits and symbols, stand-in letters ----

DISGUISES = [  # (kind, text): each must hit the "swear" rule (fuck*, ass, bitch) or "wild" (*cunt*, *cock*)
    ("masked letter *", "f*ck off"),
    ("masked letter #", "you b#tch"),
    ("masked letter _", "f_ck"),
    ("masked letter .", "f.ck"),
    ("masked first letter", "*itch"),
    ("two masks", "m*th*rfucker"),
    ("v for u", "fvck"),
    ("x for u in a short word", "fxck"),
    ("ph for f", "phuck"),
    ("l for i", "bltch"),
    ("1 read as l", "c0ck 1ick3r"),
    ("@ read as o", "c@ck"),
    ("@ read as a", "@ss"),
    ("$ and 5 for s", "a$5"),
    ("digits and a mask", "m0th3rf*ck3r"),
    ("v for u beside digits", "cvn7"),
]


@pytest.mark.parametrize("kind, text", DISGUISES)
def test_each_disguise_kind_is_caught(kind, text):
    assert set(hit_ids(BROAD, text)) & {"swear", "wild"}, kind


@pytest.mark.parametrize("text", [
    "classic", "cl@ssic", "assassin", "as", "a$", "good", "g00d", "*hugs*", "***triggers", "*their",
    "k.k see you", "e.g. this", "cool_kid_12", "3.5 stars", "i have 1000 robux", "f***", "*****",
])
def test_disguise_readings_do_not_invent_hits(text):
    assert hit_ids(BROAD, text) == []


def test_x_reads_as_u_only_in_short_keys():
    matcher = RuleMatcher([rule("long", ["motherfucker"]), rule("short", ["fuck"])])
    assert hit_ids(matcher, "fxck") == ["short"]
    assert hit_ids(matcher, "mothxrfxckxr") == []
    assert hit_ids(matcher, "mothxrfvcker") == []  # x stands for nothing in a long word


def test_a_masked_edge_must_fit_the_whole_word():
    # "*extreme": a correction mark, not an "s" making "sextreme"; "*rgy" is a masked "orgy"
    matcher = RuleMatcher([rule("prefix", ["sext*"]), rule("whole", ["orgy"])])
    assert hit_ids(matcher, "*extremist") == []
    assert hit_ids(matcher, "*rgy") == ["whole"]


def test_a_disguised_hit_inside_an_allowed_word_does_not_count():
    assert hit_ids(BROAD, "cl@ss1c") == [] and hit_ids(BROAD, "@ss@ss1n") == []
    assert hit_ids(RuleMatcher(BROAD_RULES), "cl@ss1c") == ["wild"]  # *ass* hits without the allowlist


@pytest.mark.parametrize("text, rule_ids", [
    ("f*ck off", ["profanity"]), ("fvck", ["profanity"]), ("wh0r3", ["profanity"]), ("d1ld0", ["profanity"]),
    ("s3nd n*des", ["profanity", "explicit_requests_to_minors"]),
])
def test_shipped_rules_read_disguises(text, rule_ids):
    assert hit_ids(SHIPPED, text) == rule_ids


def test_disguised_words_cost_little():
    text = "gg wp 1v1 me l8r m8, r u 4 real?? lol xD *hugs* k.k see u @ 7pm " * 4
    SHIPPED.match(text, True)
    start = time.perf_counter()
    for index in range(200):
        SHIPPED.match(f"{text} {index}", True)  # a new text each time: no cache hit
    assert (time.perf_counter() - start) / 200 < 0.01


@pytest.mark.parametrize("text", ["f*k*r", "m*th3rf*ck*", "fuk", "phuck", "fucka", "muthafucka", "kunt"])
def test_other_spellings_and_masks_between_single_letters(text):
    matcher = RuleMatcher([rule("swear", ["*fuck*", "fucker", "cunt"])])
    assert hit_ids(matcher, text) == ["swear"], text


def test_spellings_stay_close_to_the_keyword():
    from udfs.rules import spellings
    assert {"fvck", "phuck", "fuk", "fxck"} <= set(spellings("fuck"))
    assert "kok" not in spellings("cock")  # two sound-alikes in a short word make another word
    assert "nigga" not in spellings("nigger", open_end=True)  # "er" -> "a" only where the keyword ends
    assert "fucka" in spellings("fucker")
    assert "fxcking" not in spellings("fucking")  # x for u only in short words
    assert len(spellings("cunnilingus")) <= 256  # all-or-none past the cap


def naive_disguised_hits(terms, word):
    """The reference for `KeyTrie`: every reading of every span of the word (each mask as each letter),
    squeezed and compared with every key."""
    import itertools
    import string

    from udfs.normalize import MASKS, SYMBOL_READINGS
    from udfs.rules import runs_match

    def readings(char):
        return string.ascii_lowercase if char in MASKS else SYMBOL_READINGS.get(char, char)

    found = set()
    for start in range(len(word)):
        for end in range(start + 1, len(word) + 1):
            masks_first = start == 0 and word[0] in MASKS
            masks_last = end == len(word) and word[-1] in MASKS
            for letters in itertools.product(*map(readings, word[start:end])):
                squeezed = squeeze("".join(letters))
                for key, term in terms:
                    if (" " not in key and squeezed.text == key and (start == 0 or term.open_start)
                            and (end == len(word) or term.open_end) and (not masks_first or end == len(word))
                            and (not masks_last or start == 0) and runs_match(squeezed.runs, term.runs, start == 0)):
                        found.add((term.written, start, end))
    return found


@pytest.mark.parametrize("word", ["f*ck", "m0th3rf*ck3r", "@$$", "a$", "g00d", "b!7ch", "*rgy", "dyk*", "cl@ss1c",
                                  "5h1773d", "k1ll", "c*ck$", "*extreme", "sh*7fuck3r", "ff*ck", "xff*ck"])
def test_the_trie_walk_agrees_with_the_naive_reference(word):
    from udfs.rules import KeyTrie, compile_term
    terms = [key for i, keyword in enumerate(["*fuck*", "ass", "bitch", "orgy", "dyke*", "*ass*", "*shit*", "kill",
                                              "god", "cock*", "sext*"]) for key in compile_term(keyword, i)]
    trie = {(term.written, start, end) for term, start, end in KeyTrie(terms).find(word)}
    assert trie == naive_disguised_hits(terms, word)
