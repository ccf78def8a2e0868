"""Derives the text model's thresholds in flink-conf/policy.yaml from the val split.

    python -m models.thresholds            # print the thresholds and what they do on val
    python -m models.thresholds --write    # and rewrite the policy's `thresholds:` block

The scores are the cascade's (`udfs.text_model.TextModel` with its second stage), as the job computes
them: for the minor bands with ``minor_involved`` true (a child is at one end, so more messages reach
the second stage), for the adult band with it false.

Each threshold is the lowest value on a 0.01 grid at which at most a target share of the category's
val NEGATIVES score at or above it (the policy's ">="): a quantile of the negatives' scores, rounded up
so that the val false-positive rate never exceeds the target. The targets (`TARGET_FPR`) depend on the
action and the age band, not on the category; which actions each category gets is a policy decision
(`ACTIONS`), not something the data says.

Only the ``val`` split (`models.splits.split_of`) of the data sets trained on is read. The test split
stays untouched for measuring, and the evaluation-only data sets stay evaluation-only. Val already
served to Platt-scale the model (two parameters per head): reusing it for thresholds keeps test honest
at the price of a slightly optimistic val recall.

Why false-positive rates rather than the probabilities themselves: the scores are shifted to ASSUMED
chat base rates (models/chat_base_rates.yaml), so a fixed probability means whatever the assumption
makes it mean. A threshold set at a false-positive rate depends only on how the model ranks
negatives, so it stays put when a base rate is revised (the model's ranking does not change with the
prior). What it does not fix: val negatives are tweets, Wikipedia talk pages, SMS, Reddit posts and
passages, not children's game chat, and for sexual, sexual_minors, self_harm and spam most of them are
easy borrowed Jigsaw negatives. The false-positive rate on real chat will differ (see models/README.md).

Voice transcripts: the policy raises every model threshold by its ``voice_margin`` for them. The report
checks that margin on val text made to look like a speech-to-text transcript (`as_transcript`: no case,
no punctuation, about 10% of words dropped or swapped for another val word): per category, band and
action, the transcripts' false-positive rate and recall at the text threshold and at threshold + margin.
"""
from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from lifeguard.schemas import AgeBand
from models.datasets import CHILD_DIRECTED, DATA_SETS, DEFAULT_DATA_DIR, LabelledText, load, split_for
from udfs.policy import Policy, load_policy
from udfs.text_model import CATEGORIES, TextModel

DEFAULT_MODEL = Path(__file__).resolve().parent / "build" / "text_linear.onnx"
DEFAULT_SECOND_STAGE = Path(__file__).resolve().parent / "build" / "text_minilm.onnx"
MINOR_BANDS = tuple(band for band in AgeBand if band.is_minor)
ADULT_BANDS = tuple(band for band in AgeBand if not band.is_minor)
DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "flink-conf" / "policy.yaml"

ACTION_ORDER = ("warn", "review", "block")  # least to most severe; thresholds must not decrease along it

# Target share of val negatives at or above each threshold. Younger bands get more false positives in
# exchange for recall: a child is the one who needs the protection, and a wrong warn or review costs
# less than a missed threat. Within a band, the stronger the action the fewer false positives it may
# have: a block silently stops a message, so it must be rare on innocent text. The rates also fall
# from each band to the next older one, so a younger band's threshold is never above an older one's.
TARGET_FPR: dict[AgeBand, dict[str, float]] = {
    AgeBand.UNDER_13:   {"warn": 0.020, "review": 0.0100, "block": 0.0020},
    AgeBand.TEEN_13_15: {"warn": 0.015, "review": 0.0075, "block": 0.0015},
    AgeBand.TEEN_16_17: {"warn": 0.010, "review": 0.0050, "block": 0.0010},
    AgeBand.ADULT:      {"warn": 0.005, "review": 0.0025, "block": 0.0005},
}

# Which actions the model may ask for, (for minors, for adults): the shipped policy's choices, kept.
# Warn only for toxicity and spam, where a nudge helps. Adults may swear: no toxicity block, and
# sexual content between adults is reviewed, not blocked. Self-harm is reviewed in every band: a
# person at risk needs someone to reach out, not a block. Spam is never blocked by the model: it is a
# nuisance, and malicious links are the link blocklist's job. Hate is reviewed, never blocked, by
# this model: it flags identity statements ("I am a gay man") at block-level scores (models/README.md),
# and a child must not be blocked for saying who they are.
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "toxicity":      (("warn", "review", "block"), ("warn", "review")),
    "hate":          (("review",),                 ("review",)),
    "threat":        (("review", "block"),         ("review", "block")),
    "sexual":        (("review", "block"),         ("review",)),
    "sexual_minors": (("review", "block"),         ("review", "block")),
    "self_harm":     (("review",),                 ("review",)),
    # Personal information, another app, account requests: a person looks where a child is involved;
    # between adults it is their own business.
    "pii":           (("review",),                 ()),
    "spam":          (("warn", "review"),          ("warn",)),
}

# Children's game chat that only looks harmful ("headshot the zombie", "meet me at the volcano spawn"): the
# synthetic child-directed set's benign val rows (models.child_directed). Every threshold is also at least
# the quantile that lets this share of them through, whatever the pooled negatives allow: they are few
# among the pooled val negatives, yet they are what children write all day. Chosen on the separately written
# val set (val_set.jsonl; judged harmful acted on / benign acted on, adult-to-child DM and child room):
# 0.002/0.002/0.001 gave 83.4% / 5.4% and 73.0% / 2.5%; 0.003/0.003/0.002 85.9% / 6.1% and 77.0% / 3.6%;
# 0.004/0.004/0.002 88.4% / 7.6% and 78.4% / 5.8%; 0.006/0.006/0.003 89.5% / 9.0% and 81.1% / 6.5%.
GAME_CHAT_FPR = {"warn": 0.003, "review": 0.003, "block": 0.002}

LOWEST, HIGHEST = 0.01, 0.99  # a threshold of 0 would fire on everything, 1 (or more) never
GRID = np.round(np.arange(round(LOWEST * 100), round(HIGHEST * 100) + 1) / 100, 2)  # 0.01, 0.02, ..., 0.99
SCORING_BATCH = 256

# Inline comments the generated block keeps (the reasons a reader of the policy needs beside the numbers).
CATEGORY_COMMENTS = {
    "self_harm": "a person at risk needs help, not a block: review so someone reaches out",
    "pii": "the model learnt it from synthetic child-directed text only (models/child_directed); the rules below too",
}


def actions_for(category: str, band: AgeBand) -> tuple[str, ...]:
    minors, adults = ACTIONS[category]
    return adults if band is AgeBand.ADULT else minors


def fpr_quantile(negative_scores: Sequence[float], fpr: float) -> float:
    """The lowest grid threshold t in [LOWEST, HIGHEST] with share(negatives >= t) <= fpr; HIGHEST when
    even that lets more through (the clamp: then the val rate is over the target, and the report says so)."""
    negatives = np.asarray(negative_scores, dtype=np.float64)
    if not len(negatives):
        raise ValueError("no negatives to take a false-positive rate from")
    rates = (negatives[None, :] >= GRID[:, None]).mean(axis=1)  # non-increasing along the grid
    within = np.flatnonzero(rates <= fpr)
    return float(GRID[within[0]]) if len(within) else HIGHEST


def ordered(thresholds: Mapping[str, float]) -> dict[str, float]:
    """`thresholds` with warn <= review <= block forced, by raising a lower action's threshold where
    needed (a stronger action must never fire below a weaker one)."""
    result, floor = {}, 0.0
    for action in ACTION_ORDER:
        if action in thresholds:
            floor = max(floor, thresholds[action])
            result[action] = floor
    return result


@dataclass(frozen=True)
class Labelled:
    """One category's val rows: their scores, 0/1 labels, and which rows are benign game chat."""

    scores: np.ndarray
    labels: np.ndarray
    game_chat: np.ndarray | None = None  # bool per row; None: none are

    @property
    def game_chat_negatives(self) -> np.ndarray:
        return self.scores[self.game_chat] if self.game_chat is not None else self.scores[:0]

    @property
    def negatives(self) -> np.ndarray:
        return self.scores[self.labels == 0]

    @property
    def positives(self) -> np.ndarray:
        return self.scores[self.labels == 1]


@dataclass(frozen=True)
class Threshold:
    category: str
    band: AgeBand
    action: str
    target_fpr: float
    value: float
    val_fpr: float  # share of val negatives >= value
    val_recall: float  # share of val positives >= value
    val_positives_caught: int


# category -> band -> action -> Threshold
Derived = dict[str, dict[AgeBand, dict[str, Threshold]]]


def derive(val: Mapping[str, Labelled], bands: Sequence[AgeBand] = tuple(AgeBand)) -> Derived:
    """Per category and band of `bands`, a Threshold per action the category gets (`ACTIONS`)."""
    derived: Derived = {}
    for category, rows in val.items():
        derived[category] = {}
        for band in bands:
            targets = TARGET_FPR[band]
            values = ordered({action: game_chat_floor(rows, fpr_quantile(rows.negatives, targets[action]), action)
                              for action in actions_for(category, band)})
            derived[category][band] = {
                action: Threshold(category, band, action, targets[action], value,
                                  val_fpr=float(np.mean(rows.negatives >= value)),
                                  val_recall=float(np.mean(rows.positives >= value)) if len(rows.positives) else 0.0,
                                  val_positives_caught=int(np.sum(rows.positives >= value)))
                for action, value in values.items()
            }
    return derived


def game_chat_floor(rows: Labelled, threshold: float, action: str) -> float:
    """`threshold`, raised where needed so that at most GAME_CHAT_FPR[action] of the benign game chat reach it."""
    game_chat = rows.game_chat_negatives
    return max(threshold, fpr_quantile(game_chat, GAME_CHAT_FPR[action])) if len(game_chat) else threshold


def derive_by_band(minor_val: Mapping[str, Labelled], adult_val: Mapping[str, Labelled]) -> Derived:
    """The minor bands' thresholds from scores with a minor involved, the adult band's from scores without."""
    minors, adults = derive(minor_val, MINOR_BANDS), derive(adult_val, ADULT_BANDS)
    return {category: {band: {**minors[category], **adults[category]}[band] for band in AgeBand} for category in minors}


def val_records(data_dir: Path = DEFAULT_DATA_DIR) -> list[LabelledText]:
    """The val rows of the data sets trained on (evaluation-only sets stay for evaluation)."""
    return [record for data_set in DATA_SETS if data_set.usage == "train"
            for record in load(data_set, data_dir) if split_for(record) == "val"]


def is_game_chat(record: LabelledText) -> bool:
    """A benign row of the synthetic child-directed set: negative for every category."""
    return record.source == CHILD_DIRECTED and not any(record.labels.values())


def counts_for(record: LabelledText, category: str) -> bool:
    """Whether the row counts for `category`'s thresholds: it labels the category, and is not a harmful
    synthetic child-directed row labelled 0 there. Those are harmful to a child whatever category acts on
    them (an offer of robux for a photo that the pii head flags): their 0 teaches the heads apart, but
    acting on them is no false positive."""
    if category not in record.labels:
        return False
    return not (record.source == CHILD_DIRECTED and record.labels[category] == 0 and any(record.labels.values()))


def by_category(records: Sequence[LabelledText], scores: np.ndarray, categories: Sequence[str]) -> dict[str, Labelled]:
    """Per category (column of `scores`), the rows that count for its thresholds (`counts_for`): their
    scores and labels."""
    val = {}
    for column, category in enumerate(categories):
        rows = [i for i, record in enumerate(records) if counts_for(record, category)]
        labels = np.array([records[i].labels[category] for i in rows], dtype=np.int64)
        val[category] = Labelled(scores[rows, column], labels, np.array([is_game_chat(records[i]) for i in rows], bool))
    return val


def load_val(model: TextModel, data_dir: Path = DEFAULT_DATA_DIR) -> tuple[dict[str, Labelled], dict[str, Labelled]]:
    """The val rows scored by `model` with and without a minor involved, per category it scores (each
    only on the rows that label it): what `derive_by_band` takes."""
    records = val_records(data_dir)
    texts = [record.text for record in records]
    return tuple(by_category(records, model.score_matrix(texts, minor, SCORING_BATCH), model.categories) for minor in (True, False))


def strongest_action_rates(derived: Derived, scores: np.ndarray, categories: Sequence[str],
                           bands: Sequence[AgeBand] = tuple(AgeBand)) -> dict[AgeBand, dict[str, float]]:
    """Per band of `bands`, the share of rows (`scores` float[rows, categories]) whose strongest model
    action, over all categories, is warn, review or block: what the heads' false positives add up to."""
    rates = {}
    for band in bands:
        strongest = np.full(len(scores), -1)
        for column, category in enumerate(categories):
            for level, action in enumerate(ACTION_ORDER):
                if (limit := derived.get(category, {}).get(band, {}).get(action)) is not None:
                    strongest = np.where(scores[:, column] >= limit.value, np.maximum(strongest, level), strongest)
        rates[band] = {action: float(np.mean(strongest == level)) if len(scores) else 0.0
                       for level, action in enumerate(ACTION_ORDER)}
    return rates



# Voice transcripts

TRANSCRIPT_WORD_ERROR = 0.10  # a typical word error rate of speech-to-text on casual speech
_PUNCTUATION = re.compile(r"[^\w\s']+")


def as_transcript(text: str, vocabulary: Sequence[str], rng: random.Random) -> str:
    """`text` as a speech-to-text system might write it: lower case, no punctuation, and each word with
    a TRANSCRIPT_WORD_ERROR chance of being dropped (half the time) or heard as another word of
    `vocabulary` (the other half)."""
    words = []
    for word in _PUNCTUATION.sub(" ", text.lower()).split():
        draw = rng.random()
        if draw < TRANSCRIPT_WORD_ERROR / 2:
            continue
        words.append(rng.choice(vocabulary) if draw < TRANSCRIPT_WORD_ERROR else word)
    return " ".join(words)


def transcripts(texts: Sequence[str], seed: int = 0) -> list[str]:
    """Every text `as_transcript`, with the texts' own words as the vocabulary; seeded."""
    vocabulary = sorted({word for text in texts for word in _PUNCTUATION.sub(" ", text.lower()).split()})
    rng = random.Random(seed)
    return [as_transcript(text, vocabulary, rng) for text in texts]


def voice_report(derived: Derived, text_val: Mapping[str, Labelled], voice_val: Mapping[str, Labelled],
                 margin: float, band: AgeBand) -> str:
    """Markdown: for `band`, each threshold's val FPR and recall on text, on transcripts, and on
    transcripts at threshold + `margin` (the policy's voice rule, capped at 1)."""
    out = [f"\nVoice, {band.value}: val text vs the same rows as transcripts (as_transcript), voice_margin {margin:.2f}\n",
           "| category | action | threshold | text FPR / recall | transcript FPR / recall | transcript at +margin | "
           "margin needed |",
           "|---|---|---|---|---|---|---|"]
    needed = []
    for category, bands in derived.items():
        for action, t in bands[band].items():
            raised = min(t.value + margin, 1.0)
            cells = [_rates(text_val[category], t.value), _rates(voice_val[category], t.value),
                     _rates(voice_val[category], raised)]
            needed.append(margin_needed(voice_val[category].negatives, t.value, t.target_fpr))
            out.append(f"| {category} | {action} | {t.value:.2f} | " + " | ".join(cells) + f" | {needed[-1]:.2f} |")
    out.append(f"\nThe smallest voice_margin that keeps every {band.value} threshold within its target false-positive "
               f"rate on transcripts: {max(needed):.2f}")
    return "\n".join(out)


def margin_needed(negative_scores: np.ndarray, threshold: float, target_fpr: float) -> float:
    """The smallest margin on the 0.01 grid at which at most `target_fpr` of `negative_scores` reach
    min(threshold + margin, 1), the policy's voice rule."""
    for margin in np.round(np.arange(0, 101) / 100, 2):
        if np.mean(negative_scores >= min(threshold + margin, 1.0)) <= target_fpr:
            return float(margin)
    return 1.0


def _rates(rows: Labelled, threshold: float) -> str:
    return f"{np.mean(rows.negatives >= threshold):.2%} / {np.mean(rows.positives >= threshold):.0%}"


# The policy file


def thresholds_block(derived: Derived, model_version: str, unscored: Iterable[str]) -> str:
    """The `thresholds:` block of policy.yaml, categories in canonical order; `unscored` categories
    (no model head, such as pii) get an empty mapping per band."""
    lines = ["thresholds:",
             f"  # Derived by `python -m models.thresholds --write` from {model_version}'s scores on the val split:",
             "  # each is the lowest 0.01 step at which at most a target share of val negatives score >= it",
             "  # (targets per band and action in models/thresholds.py). Regenerate, do not edit by hand."]
    unscored = set(unscored)
    if unknown := sorted((set(derived) | unscored) - set(CATEGORIES)):
        raise ValueError(f"thresholds for categories the project does not know: {unknown}")
    for category in CATEGORIES:
        if category not in derived and category not in unscored:
            continue
        comment = f"  # {CATEGORY_COMMENTS[category]}" if category in CATEGORY_COMMENTS else ""
        lines.append(f"  {category}:{comment}")
        for band in AgeBand:
            name = f'"{band.value}"' if band.value[0].isdigit() else band.value  # YAML reads 13_15 as 1315
            limits = derived.get(category, {}).get(band, {})
            values = ", ".join(f"{action}: {limits[action].value:.2f}" for action in ACTION_ORDER if action in limits)
            lines.append(f"    {name + ':':<10}{{{values}}}")
    return "\n".join(lines) + "\n"


def replace_thresholds(policy_text: str, block: str) -> str:
    """`policy_text` with its top-level `thresholds:` block (up to the next top-level line that is not
    blank) replaced by `block`; everything else, comments included, kept byte for byte."""
    lines = policy_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if re.match(r"thresholds:\s*(#.*)?$", line)]
    if len(starts) != 1:
        raise ValueError("expected exactly one top-level `thresholds:` line in the policy")
    start = starts[0]
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # trailing blank lines stay where they were
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def bump_version(policy_text: str) -> str:
    """Adds one to the trailing counter of the `version: "<date>.<n>"` line."""
    pattern = re.compile(r'^(version:\s*"[^"]*?\.)(\d+)(")', re.MULTILINE)
    if not pattern.search(policy_text):
        raise ValueError('expected a top-level line version: "<date>.<n>" in the policy')
    return pattern.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + 1}{m.group(3)}", policy_text, count=1)


def write_policy(path: Path, derived: Derived, model_version: str) -> bool:
    """Rewrites the thresholds block of the policy at `path` and bumps its version, only if the block
    changes; checks the result loads and carries exactly the derived numbers. True if it wrote."""
    text = path.read_text()
    current = load_policy(path)
    unscored = [category for category in current.thresholds if category not in derived]
    updated = replace_thresholds(text, thresholds_block(derived, model_version, unscored))
    if updated == text:
        return False
    updated = bump_version(updated)
    policy = load_policy(yaml.safe_load(updated))
    if shipped_values(policy) != derived_values(derived, unscored):
        raise ValueError("the rewritten policy does not load back as the derived thresholds; not written")
    path.write_text(updated)
    return True


def derived_values(derived: Derived, unscored: Iterable[str] = ()) -> dict[str, dict[str, dict[str, float]]]:
    values = {category: {band.value: {action: t.value for action, t in limits.items()} for band, limits in bands.items()}
              for category, bands in derived.items()}
    return values | {category: {band.value: {} for band in AgeBand} for category in unscored}


def shipped_values(policy: Policy) -> dict[str, dict[str, dict[str, float]]]:
    return {category: {band.value: limits.model_dump(exclude_none=True) for band, limits in bands.items()}
            for category, bands in policy.thresholds.items()}


# The report


def report(derived: Derived, val: Mapping[str, Labelled], clean_rates: Mapping[AgeBand, Mapping[str, float]], clean_rows: int) -> str:
    """Markdown: per category, the band, action, target, threshold, val false-positive rate and recall;
    then, per band, what share of the val rows negative for every head the model acts on."""
    out = []
    for category, bands in derived.items():
        rows = val[category]
        out.append(f"\n{category}: val {len(rows.positives)} positives / {len(rows.negatives)} negatives\n")
        out.append("| band | action | target FPR | threshold | val FPR | val recall |")
        out.append("|---|---|---|---|---|---|")
        for band, limits in bands.items():
            for action, t in limits.items():
                out.append(f"| {band.value} | {action} | {t.target_fpr:.1%} | {t.value:.2f} | {t.val_fpr:.2%} | "
                           f"{t.val_recall:.0%} ({t.val_positives_caught}/{len(rows.positives)}) |")
    out.append(f"\nAll heads together: the {clean_rows} val rows negative for every head (Jigsaw comments rated "
               "clean), by the strongest model action any head asks for\n")
    out.append("| band | warn | review | block |")
    out.append("|---|---|---|---|")
    for band, rates in clean_rates.items():
        out.append(f"| {band.value} | " + " | ".join(f"{rates[action]:.1%}" for action in ACTION_ORDER) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.thresholds", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the thresholds block of the policy")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the first stage (default: %(default)s)")
    parser.add_argument("--second-stage", type=Path, default=DEFAULT_SECOND_STAGE,
                        help="the cascade's second stage (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared/data folder")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="the policy (default: %(default)s)")
    args = parser.parse_args(argv)

    model = TextModel.load(args.model, prefer_gpu=False, second_stage=args.second_stage)
    records = val_records(args.data_dir)
    texts = [record.text for record in records]
    minor_scores, adult_scores = model.score_matrix(texts, True, SCORING_BATCH), model.score_matrix(texts, False, SCORING_BATCH)
    minor_val, adult_val = (by_category(records, s, model.categories) for s in (minor_scores, adult_scores))
    derived = derive_by_band(minor_val, adult_val)
    clean = [i for i, record in enumerate(records) if all(record.labels.get(c) == 0 for c in model.categories)]
    clean_rates = (strongest_action_rates(derived, minor_scores[clean], model.categories, MINOR_BANDS)
                   | strongest_action_rates(derived, adult_scores[clean], model.categories, ADULT_BANDS))
    print(f"model {model.version}: second stage scored {model.escalated} of {model.scored} val scorings")
    print(report(derived, minor_val, clean_rates, len(clean)))
    voice_val = by_category(records, model.score_matrix(transcripts(texts), True, SCORING_BATCH), model.categories)
    print(voice_report(derived, minor_val, voice_val, load_policy(args.policy).voice_margin, AgeBand.UNDER_13))
    if args.write:
        wrote = write_policy(args.policy, derived, model.version)
        print(f"\n{'rewrote the thresholds of' if wrote else 'no change to'} {args.policy}")


if __name__ == "__main__":
    main()
