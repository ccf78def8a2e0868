"""Case tables for udfs.normalize: one table per kind of evasion, each through the whole `normalize`.

Some inputs come from peers' published cases (shared/data/reference-vectors/text-evasion/:
jo3-l/obscenity README and transformer tests, snguyenthanh/better_profanity tests.py).
"""
import pytest

from udfs.normalize import normalize

COMPATIBILITY_FORMS = [
    ("ＦＵＣＫ", "fuck"),  # fullwidth
    ("𝐟𝐮𝐜𝐤", "fuck"),  # mathematical bold
    ("𝔟ⁱ𝙘ｈ", "bich"),  # fraktur, superscript, monospace, fullwidth
    ("ⓕⓤⓒⓚ", "fuck"),  # circled letters
    ("ﬁsh", "fish"),  # ligature
]

CASE = [
    ("FUCK You", "fuck you"),
    ("STRAẞE", "strasse"),
    ("İstanbul", "istanbul"),  # the dot above that casefold leaves is a combining mark
]

ACCENTS_AND_ZALGO = [
    ("fück", "fuck"),
    ("Con chó sủa gâu gâu!", "con cho sua gau gau!"),
    ("k̸̢̛i̴̡͝l̶̰̈l̵̞͌", "kill"),
]

INVISIBLES = [
    ("f\u200bu\u200bc\u200bk", "fuck"),  # zero-width space
    ("ki\u00adll", "kill"),  # soft hyphen
    ("s\u200de\u2060x", "sex"),  # zero-width joiner, word joiner
    ("\ufeffhello", "hello"),  # byte-order mark
    ("hate\u202e", "hate"),  # right-to-left override
    ("bad\x00word", "bad word"),  # a control character separates
]

CONFUSABLES = [
    ("раураl", "paypal"),  # Cyrillic р, а, у inside a Latin word
    ("ѕех", "sex"),  # all three letters Cyrillic look-alikes
    ("κill", "kill"),  # Greek kappa
    ("ỹоứ", "you"),  # Cyrillic о between accented Latin letters (obscenity README)
    ("привет друг", "привет друг"),  # an ordinary Russian phrase stays Russian
]

SPACED_LETTERS = [
    ("f u c k you", "fuck you"),
    ("k.i.l.l yourself", "kill yourself"),
    ("s-e-x", "sex"),
    ("f  *  u  *  c  *  k", "fuck"),
    ("k 1 l l", "kill"),  # joined first, then read as leetspeak
    ("i am a boy", "i am a boy"),  # lone single letters are words
    ("a b", "a b"),  # two singles are not a run
    ("call 0 8 0 0 now", "call 0 8 0 0 now"),  # spaced digits are a number, not a word
    ("u r a loser", "ura loser"),  # the accepted cost: chat shorthand of 3 singles joins too
]

LEETSPEAK = [
    ("sh1t", "shit"),
    ("wh0re", "whore"),
    ("a$$", "ass"),
    ("i like a$$es", "i like asses"),  # obscenity README
    ("h@te", "hate"),
    ("sh!t", "shit"),
    ("pen1s", "penis"),
    ("That wh0re gave m3 a very good H@nD j0b.", "that whore gave me a very good hand job."),  # better_profanity
    ("he is a m0th3rf*cker", "he is a motherf*cker"),  # better_profanity; "*" masks are not guessed
    ("hi!! how are you?", "hi!! how are you?"),  # "!" ending a word is punctuation
    ("$100 prize", "$100 prize"),  # no letter in the word: a number
    ("2 girls", "2 girls"),  # "2" usually means "to"
    ("@USER you came 1st!", "@user you came 1st!"),  # a mention and an ordinal are not leetspeak
    ("rt @cool_kid_12: see you at 5pm", "rt @cool_kid_12: see you at 5pm"),  # nor a handle's digits, nor a time
    ("100k views in the 1990s", "100k views in the 1990s"),  # numbers with their units
    ("@s$hole", "asshole"),  # but a mention-like word with another symbol is a disguise
]

ELONGATION = [
    ("fuuuuuuuck", "fuuck"),
    ("soooo gooood", "soo good"),
    ("kill", "kill"),  # real double letters stay
    ("noooo!!!!!!", "noo!!"),
]

WHITESPACE = [
    ("  hello \n\t world  ", "hello world"),
    ("", ""),
    ("   ", ""),
]

ALL_CASES = (COMPATIBILITY_FORMS + CASE + ACCENTS_AND_ZALGO + INVISIBLES + CONFUSABLES + SPACED_LETTERS
             + LEETSPEAK + ELONGATION + WHITESPACE)


@pytest.mark.parametrize("text, expected", COMPATIBILITY_FORMS)
def test_folds_compatibility_forms(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", CASE)
def test_folds_case(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", ACCENTS_AND_ZALGO)
def test_strips_accents_and_zalgo(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", INVISIBLES)
def test_strips_invisible_characters(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", CONFUSABLES)
def test_folds_confusables_in_disguised_latin_words(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", SPACED_LETTERS)
def test_joins_runs_of_spaced_letters(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", LEETSPEAK)
def test_reads_leetspeak_inside_words(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", ELONGATION)
def test_collapses_elongation_to_two(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", WHITESPACE)
def test_collapses_whitespace(text, expected):
    assert normalize(text) == expected


def test_combined_evasions_from_obscenity_readme():
    assert normalize("ʃ𝐟ʃὗƈｋ ỹоứ 𝔟ⁱẗ𝙘ɦ").endswith("uck you bitch")


@pytest.mark.parametrize("text", [text for text, _ in ALL_CASES])
def test_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


# ---- look-alikes from the kept Unicode data, emoji, and the forms the rules match ----------------

from udfs.normalize import latin_lookalikes, match_forms  # noqa: E402

LOOKALIKES_FROM_UNICODE_DATA = [
    ("кіll", "kill"),  # Cyrillic к: UTS #39 maps it to ĸ, its capital К to K
    ("тнот", "thot"),  # Cyrillic т, н (small-capital look-alikes)
    ("βitch", "bitch"),  # Greek β: one letter (b) beats UTS #39's ß -> ss
    ("ꜰᴜᴄᴋ ʏᴏᴜ", "fuck you"),  # Latin small capitals
    ("ƈunt", "cunt"),  # c with hook: not in the table, named LATIN SMALL LETTER C WITH HOOK
]


@pytest.mark.parametrize("text, expected", LOOKALIKES_FROM_UNICODE_DATA)
def test_folds_lookalikes_derived_from_unicode_confusables(text, expected):
    assert normalize(text) == expected


def test_lookalike_table_comes_from_the_data_file_and_leaves_ascii_to_leetspeak():
    table = latin_lookalikes()
    assert len(table) > 1500  # derived, not hand-typed
    assert not any(char.isascii() for char in table)
    assert all(value.isascii() and value.isalpha() and value == value.lower() for value in table.values())


@pytest.mark.parametrize("text, folded", [
    ("you 🖕", "you middle finger"),
    ("🔪🔪 u", "kitchen knife kitchen knife u"),
    ("gg 👍🏽", "gg thumbs up medium skin tone"),
    ("no emoji here", "no emoji here"),
])
def test_match_forms_read_emoji_as_their_names(text, folded):
    assert match_forms(text).folded == folded


def test_match_forms_keep_digits_for_numbers_and_leave_the_model_input_without_emoji_names():
    forms = match_forms("Call ME 555-123-4567 🍕")
    assert forms.plain == "call me 555-123-4567 🍕"  # the phone number intact
    assert forms.folded == "call me 555-123-4567 pizza"  # elongation kept: the rules weigh it
    assert normalize("Call ME 555-123-4567 🍕") == "call me 55-123-4567 🍕"  # the model's input: no emoji names


# ---- the words the rules read every way (match_forms(...).disguised) ----------------------------

from udfs.normalize import LEET, SYMBOL_READINGS  # noqa: E402


@pytest.mark.parametrize("text, disguised", [
    ("f*ck you", ("f*ck",)),  # masked letter
    ("you b#tch!", ("b#tch",)),
    ("f.ck", ("f.ck",)),  # one "." in a word of 4 or more
    ("sh_t", ("sh_t",)),
    ("5h1t and @rgy", ("5h1t", "@rgy")),  # digits and symbols
    ("@$$", ("@$$",)),  # symbols alone, when two or more
    ("*hugs*", ()),  # emphasis
    ("***triggers", ()),  # markup, stripped: then a plain word
    ("k.k..where e.g. cool_kid_12", ()),  # "." and "_" joining words
    ("i have 1000 robux, 3.5 stars", ()),  # numbers
    ("f*** ****", ()),  # more mask than letter
    ("hello there", ()),
])
def test_disguised_words(text, disguised):
    assert match_forms(text).disguised == disguised


def test_normalize_reads_each_symbol_its_likeliest_way():
    # the text model's input must not change with the extra readings the rules weigh
    assert LEET == {char: readings[0] for char, readings in SYMBOL_READINGS.items()}
    assert normalize("1ez sh1t h@te") == "iez shit hate"


@pytest.mark.parametrize("hostile", ["\ufb03" * 4000, "\u3316" * 4000, "a" * 20000])
def test_long_plain_words_hold_no_disguised_word(hostile):
    # Words that NFKD lengthens after the length cap, and plain words of any length: once quadratic (issue 13).
    assert match_forms(hostile).disguised == ()


def test_a_disguised_word_is_still_found_beside_a_long_plain_one():
    assert match_forms("a" * 20000 + " f*ck").disguised == ("f*ck",)
