"""The honest evaluation report of Lifeguard's text tier, from one command.

    python -m models.evaluate [--data ../shared/data] [--out models/reports]

It writes ``evaluation.md`` (the report), ``evaluation.json`` (every figure in it) and two PNGs
(``pr_curves.png``, ``reliability.png``) to ``--out``. Whatever text model and policy the project
is configured with (``flink-conf/lifeguard.yaml``) are what it measures: the model through
`udfs.text_model.TextModel.score_batch` (``Screener.text_model``), the whole text tier (rules,
links, model, policy) through `udfs.backtest.score_lines`, the code path of ``lifeguard score
text`` and of the job. Four parts:

1. Per category, on the **test split** (`models.splits.split_of`) of the data sets trained on,
   never used for training, calibration or thresholds: ROC-AUC (95% bootstrap interval), PR-AUC,
   recall at 1% FPR, recall / false-positive rate / precision at the policy's review and block
   thresholds (under_13 and adult), and expected calibration error, side by side with the PyPI
   baseline ``alt-profanity-check`` (``predict_prob``) on the same rows; then per data set, and on
   the test split of the evaluation-only sets.
2. The text-evasion benchmark in ``reference-vectors/text-evasion`` (better_profanity's obfuscated
   paragraphs and the 26 cases that peers were run on), next to the peers' figures.
3. An identity-term counterfactual probe on ``jigsaw-identity-templates``.
4. Which data each number comes from, and the caveats.
5. The child-directed test (`models.child_directed.report`): SYNTHETIC messages said to children and the game
   chat that looks like them, through the policy path, beside the figures from before they were learnt.

Everything is deterministic (fixed split, seeded bootstrap, sorted outputs): two runs on the same
model and data give the same files.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import yaml
from sklearn.metrics import precision_recall_curve

from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import AgeBand
from udfs.backtest import policy_actions
from models import child_directed
from models.child_directed import report as child_directed_report
from models.datasets import DATA_SETS, DEFAULT_DATA_DIR, LabelledText, load, split_for
from models.metrics import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CALIBRATION_BINS, auc_interval,
                            expected_calibration_error, pr_auc, prior_weights, recall_at_fpr, roc_auc)
from udfs.screening import Screener

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

DEFAULT_OUT = PROJECT_ROOT / "models" / "reports"
CHAT_BASE_RATES = PROJECT_ROOT / "models" / "chat_base_rates.yaml"
EVASION_DIR = "reference-vectors/text-evasion"

MODEL_BATCH = 128  # texts per score_batch call, as the job batches them
BASELINE_BATCH = 1000
# The policy's actions reported per category, for the youngest and the oldest band.
REPORTED_BANDS = (AgeBand.UNDER_13, AgeBand.ADULT)
REPORTED_ACTIONS = ("review", "block")
# The raw model "flags" a text when any head reaches this; the policy path uses the policy's thresholds.
RAW_MODEL_FLAG = 0.5
# Identity probe: every row of the short templates, and this many of the 576 `name_adj` rows per
# identity term and toxicity (the first by a hash of the phrase), to keep the run a few minutes.
NAME_TEMPLATE_SAMPLE = 60
WORST_TERMS = 5

BASELINE = "alt-profanity-check"
# The categories the baseline is built for (offensive and profane language): the verdict "beats the
# baseline" is given on these. Its scores on the other categories are shown for reference only.
BASELINE_COVERS = ("toxicity",)

# Policy-path contexts, as `lifeguard score text` input: a room message judged for the youngest
# audience, and a direct message between adults (the most permissive band).
CONTEXTS = {
    "under_13 room": {"sender_age_band": AgeBand.UNDER_13.value},
    "adult DM": {"sender_age_band": AgeBand.ADULT.value, "recipient_age_band": AgeBand.ADULT.value},
}


# Metrics live in models/metrics.py (training manifests use them too).



def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float, rate: float | None = None) -> dict:
    """What flagging at score >= `threshold` does: recall, false-positive rate, precision on these
    rows, and (given an assumed positive `rate`) the precision that rate would give."""
    flagged = scores >= threshold
    recall = float(flagged[labels == 1].mean())
    false_positive_rate = float(flagged[labels == 0].mean())
    result = {"threshold": threshold, "recall": recall, "fpr": false_positive_rate,
              "precision": float(labels[flagged].mean()) if flagged.any() else None}
    if rate is not None:
        caught, false_alarms = rate * recall, (1 - rate) * false_positive_rate
        result["precision_at_chat_rate"] = caught / (caught + false_alarms) if caught + false_alarms else None
    return result


def ranking(labels: np.ndarray, scores: np.ndarray, interval: bool = False) -> dict:
    """ROC-AUC (with its interval when asked), PR-AUC and recall at 1% FPR; None without both classes."""
    if not 0 < labels.sum() < len(labels):
        return {"roc_auc": None, "pr_auc": None, "recall_at_1pct_fpr": None}
    figures = {"roc_auc": roc_auc(labels, scores), "pr_auc": pr_auc(labels, scores),
               "recall_at_1pct_fpr": recall_at_fpr(labels, scores)}
    if interval:
        figures["roc_auc_95ci"] = auc_interval(labels, scores)
    return figures


# ---- scoring ----------------------------------------------------------------------------------


def model_scores(screener: Screener, texts: Sequence[str]) -> np.ndarray:
    """float[len(texts), len(model.categories)] from the configured model, batched as in the job, as for a
    message a child may read (the job's default: rooms are judged as holding children), which the cascade's
    second stage scores whatever stage 1 makes of it."""
    return screener.text_model.score_matrix(texts, minor_involved=True, batch=MODEL_BATCH)


def baseline_scores(texts: Sequence[str]) -> np.ndarray:
    """alt-profanity-check's probability of offensive language, per text."""
    from profanity_check import predict_prob  # loads its pickled model: only when a report is made

    return np.concatenate([predict_prob(list(texts[start:start + BASELINE_BATCH]))
                           for start in range(0, len(texts), BASELINE_BATCH)] or [np.zeros(0)])


# ---- the labelled test rows -------------------------------------------------------------------


def rows_in_test_split(data_dir: Path, usage: str) -> list[LabelledText]:
    """The test-split rows of the data sets of `usage` ("train" or "eval_only"), in DATA_SETS order."""
    return [record for data_set in DATA_SETS if data_set.usage == usage
            for record in load(data_set, data_dir) if split_for(record) == "test"]


def labelled(records: Sequence[LabelledText], category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices, labels and sources of the rows that label `category`."""
    rows = [i for i, record in enumerate(records) if category in record.labels]
    return (np.array(rows, dtype=np.int64), np.array([records[i].labels[category] for i in rows], dtype=np.int64),
            np.array([records[i].source for i in rows]))


def chat_base_rates(path: Path = CHAT_BASE_RATES) -> dict[str, float]:
    return {category: float(entry["rate"]) for category, entry in yaml.safe_load(path.read_text()).items()}


def category_section(screener: Screener, records: Sequence[LabelledText], model: np.ndarray, baseline: np.ndarray,
                     rates: Mapping[str, float]) -> dict:
    """Part 1: per category the model scores, pooled over the data sets, then per data set."""
    categories = screener.text_model.categories
    section = {}
    for column, category in enumerate(categories):
        rows, labels, sources = labelled(records, category)
        if not len(rows):
            continue
        scores, reference = model[rows, column], baseline[rows]
        rate = rates.get(category)
        thresholds = screener.policy.thresholds.get(category, {})
        section[category] = {
            "positives": int(labels.sum()), "negatives": int(len(labels) - labels.sum()),
            "data_sets": {name: {"positives": int(labels[sources == name].sum()),
                                 "negatives": int((labels[sources == name] == 0).sum())}
                          for name in sorted(set(sources))},
            "lifeguard": ranking(labels, scores, interval=True),
            "baseline": ranking(labels, reference, interval=True),
            "ece_test_rows": expected_calibration_error(labels, scores),
            "chat_base_rate": rate,
            "ece_at_chat_rate": (expected_calibration_error(labels, scores, prior_weights(labels, rate))
                                 if rate is not None else None),
            "policy_thresholds": {
                band.value: {action: at_threshold(labels, scores, limit, rate)
                             for action in REPORTED_ACTIONS
                             if (limit := getattr(thresholds.get(band), action, None)) is not None}
                for band in REPORTED_BANDS},
            "by_data_set": {name: {"lifeguard": ranking(labels[sources == name], scores[sources == name]),
                                   "baseline": ranking(labels[sources == name], reference[sources == name])}
                            for name in sorted(set(sources))},
        }
    return section


# ---- the text-evasion benchmark ---------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: str
    profane: bool  # the benchmark's definition: better_profanity censored something in it


def read_paragraphs(folder: Path) -> list[Paragraph]:
    """One better_profanity paragraph set (``original.txt`` / ``censored.txt``, one paragraph a line):
    a paragraph contains profanity iff its censored line differs from the original (its README)."""
    originals = (folder / "original.txt").read_text(encoding="utf-8").splitlines()
    censored = (folder / "censored.txt").read_text(encoding="utf-8").splitlines()
    if len(originals) != len(censored):
        raise ValueError(f"{folder}: {len(originals)} original paragraphs but {len(censored)} censored")
    return [Paragraph(original.strip(), original != cleaned) for original, cleaned in zip(originals, censored)]


@dataclass(frozen=True)
class PeerCase:
    text: str
    expected_match: bool
    case_source: str
    peer_answers: Mapping[str, bool]  # peer configuration -> did it match


def read_peer_cases(path: Path) -> list[PeerCase]:
    """``peer_results_computed_here.csv``: each case, what it should give, and each peer's answer."""
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    fixed = ("input", "expected_match", "case_source")
    return [PeerCase(row["input"], row["expected_match"] == "True", row["case_source"],
                     {peer: answer == "True" for peer, answer in row.items() if peer not in fixed})
            for row in rows]


# The best peer's recorded result on the 1000-paragraph set (issue 4, from the peer research).
RECORDED_PARAGRAPH_RESULTS = {
    "obscenity (npm) 0.4.6 englishDataset + recommended transformers": {"caught": 491, "profane": 952,
                                                                          "false_positives": 0},
}
PARAGRAPH_SET = "1000paras-005per"
CLEAN_PARAGRAPH_SETS = ("0001paras-000per", "0010paras-000per")


def caught_and_false_positives(profane: Sequence[bool], flagged: Sequence[bool]) -> dict:
    profane, flagged = np.asarray(profane, dtype=bool), np.asarray(flagged, dtype=bool)
    return {"caught": int((flagged & profane).sum()), "profane": int(profane.sum()),
            "false_positives": int((flagged & ~profane).sum()), "clean": int((~profane).sum())}


def evasion_section(screener: Screener, data_dir: Path) -> dict:
    """Part 2: Lifeguard (policy path, each context; caught = any action but allow) and the baseline
    (predict_prob >= 0.5) on the paragraphs and on the peers' 26 cases, beside the peers' figures."""
    folder = data_dir / EVASION_DIR
    paragraphs = read_paragraphs(folder / "better_profanity/data/paragraphs" / PARAGRAPH_SET)
    clean = [p for name in CLEAN_PARAGRAPH_SETS for p in read_paragraphs(folder / "better_profanity/data/paragraphs" / name)]
    cases = read_peer_cases(folder / "peer_results_computed_here.csv")
    expected = [case.expected_match for case in cases]

    def lifeguard(texts: Sequence[str]) -> dict[str, list[bool]]:
        return {name: [action != "allow" for action in policy_actions(screener, texts, context)]
                for name, context in CONTEXTS.items()}

    def results(items_profane: Sequence[bool], texts: Sequence[str]) -> dict:
        flagged = {f"Lifeguard, {name}": flags for name, flags in lifeguard(texts).items()}
        flagged[f"{BASELINE} (predict_prob >= 0.5, computed here)"] = list(baseline_scores(texts) >= 0.5)
        return {who: caught_and_false_positives(items_profane, flags) for who, flags in flagged.items()}

    peer_case_results = {peer: caught_and_false_positives(expected, [case.peer_answers[peer] for case in cases])
                         for peer in cases[0].peer_answers}
    lifeguard_cases = lifeguard([case.text for case in cases])
    return {
        "minors_only_rules": sorted(rule.id for rule in screener.policy.rules if rule.minors_only),
        "paragraphs": {
            "data": f"{EVASION_DIR}/better_profanity/data/paragraphs/{PARAGRAPH_SET}",
            "measured": results([p.profane for p in paragraphs], [p.text for p in paragraphs]),
            "recorded": RECORDED_PARAGRAPH_RESULTS,
        },
        "clean_paragraph_sets": {
            "data": [f"{EVASION_DIR}/better_profanity/data/paragraphs/{name}" for name in CLEAN_PARAGRAPH_SETS],
            "measured": results([p.profane for p in clean], [p.text for p in clean]),
        },
        "peer_cases": {
            "data": f"{EVASION_DIR}/peer_results_computed_here.csv",
            "recorded": peer_case_results,
            "measured": {f"Lifeguard, {name}": caught_and_false_positives(expected, flags)
                         for name, flags in lifeguard_cases.items()},
            "lifeguard_misses": sorted({case.text for flags in lifeguard_cases.values()
                                        for case, flag in zip(cases, flags) if flag != case.expected_match}),
        },
    }


# ---- the identity-term probe ------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    phrase: str
    term: str
    toxic: bool
    template: str


def identity_templates(data_dir: Path, name_sample: int = NAME_TEMPLATE_SAMPLE) -> list[Template]:
    """Every identity-term row of the short templates, and per term and toxicity the first
    `name_sample` `name_adj` rows in the order of a hash of the phrase (a fixed, even sample)."""
    with (data_dir / "jigsaw-identity-templates" / "en_sentence_templates.csv").open(encoding="utf-8", newline="") as file:
        rows = [Template(row["phrase"], row["identity_term"], row["toxicity"] == "toxic", row["template"])
                for row in csv.DictReader(file) if row["identity_term"]]
    short = [row for row in rows if row.template != "name_adj"]
    named: dict[tuple[str, bool], list[Template]] = {}
    for row in sorted((row for row in rows if row.template == "name_adj"),
                      key=lambda row: hashlib.blake2b(row.phrase.encode(), digest_size=8).digest()):
        named.setdefault((row.term, row.toxic), []).append(row)
    return short + [row for key in sorted(named) for row in named[key][:name_sample]]


def rate_by_term(terms: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    return {term: float(flagged[terms == term].mean()) for term in sorted(set(terms))}


def gap_summary(rates: Mapping[str, float], worst_high: bool) -> dict:
    """Spread of per-term rates: max - min, the mean, and the worst terms (highest when a flag is a
    false positive, lowest when it is a catch)."""
    ordered = sorted(rates.items(), key=lambda item: (-item[1], item[0]) if worst_high else (item[1], item[0]))
    values = list(rates.values())
    return {"mean": float(np.mean(values)), "max_gap": max(values) - min(values),
            "worst_terms": dict(ordered[:WORST_TERMS]), "by_term": rates}


def probe_section(screener: Screener, data_dir: Path) -> dict:
    """Part 3: per identity term, the share of templates flagged by the policy path (under_13 room:
    any action but allow) and by the raw model (any head >= 0.5), on non-toxic and toxic templates."""
    templates = identity_templates(data_dir)
    texts = [t.phrase for t in templates]
    terms = np.array([t.term for t in templates])
    toxic = np.array([t.toxic for t in templates])
    scores = model_scores(screener, texts)
    flagged = {
        "policy path, under_13 room": np.array([a != "allow" for a in policy_actions(screener, texts, CONTEXTS["under_13 room"])]),
        f"raw model, any head >= {RAW_MODEL_FLAG}": (scores >= RAW_MODEL_FLAG).any(axis=1),
    }
    toxicity = scores[:, screener.text_model.categories.index("toxicity")]
    baseline = baseline_scores(texts)
    policy_flags = flagged["policy path, under_13 room"]
    i_am = [i for i, t in enumerate(templates) if t.template == "am_hate_adj" and not t.toxic]
    return {
        "data": "jigsaw-identity-templates (evaluation only, never trained on): all rows of the verb_adj, "
                f"am_hate_adj, being_adj and you_are_adj templates, and {NAME_TEMPLATE_SAMPLE} name_adj rows "
                "per identity term and toxicity (first by blake2b hash of the phrase)",
        "rows": {"nontoxic": int((~toxic).sum()), "toxic": int(toxic.sum()), "terms": len(set(terms))},
        "flag_rates": {
            who: {"nontoxic (false positives)": gap_summary(rate_by_term(terms[~toxic], flags[~toxic]), worst_high=True),
                  "toxic (catches)": gap_summary(rate_by_term(terms[toxic], flags[toxic]), worst_high=False)}
            for who, flags in flagged.items()},
        "toxicity_ranking": {"lifeguard": ranking(toxic.astype(int), toxicity),
                             "baseline": ranking(toxic.astype(int), baseline)},
        # The issue's own example of the probe: a child saying who they are must not be acted on.
        "i_am_statements": {"rows": len(i_am),
                            "flagged_by_policy_path": sorted(texts[i] for i in i_am if policy_flags[i])},
        "baseline_flag_rates_at_0.5": {
            "nontoxic (false positives)": gap_summary(rate_by_term(terms[~toxic], baseline[~toxic] >= 0.5), worst_high=True),
            "toxic (catches)": gap_summary(rate_by_term(terms[toxic], baseline[toxic] >= 0.5), worst_high=False)},
    }


# ---- figures ----------------------------------------------------------------------------------


def plot_pr_curves(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """One panel per category: Lifeguard's and the baseline's precision-recall curves on its test rows."""
    figure, axes = plt.subplots(2, 4, figsize=(16, 8))
    for ax, (category, (labels, scores, reference)) in zip(axes.flat, curves.items()):
        for name, values, style in (("Lifeguard", scores, "-"), (BASELINE, reference, "--")):
            precision, recall, _ = precision_recall_curve(labels, values)
            ax.plot(recall, precision, style, label=f"{name} (AP {pr_auc(labels, values):.3f})", drawstyle="steps-post")
        ax.axhline(labels.mean(), color="grey", lw=0.8, ls=":", label=f"positive share {labels.mean():.3f}")
        ax.set(title=f"{category} ({int(labels.sum())} pos / {int((labels == 0).sum())} neg)",
               xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    figure.suptitle("Precision-recall on the test split (data sets trained on; never used to train or calibrate)")
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)


def reliability_points(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per non-empty equal-width bin: the weighted mean score and the weighted positive share."""
    bin_of = np.minimum((scores * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins = np.unique(bin_of)
    return (np.array([np.average(scores[bin_of == b], weights=weights[bin_of == b]) for b in bins]),
            np.array([np.average(labels[bin_of == b], weights=weights[bin_of == b]) for b in bins]))


def plot_reliability(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     rates: Mapping[str, float]) -> None:
    """One panel per category: observed positive share against mean score in 10 equal-width bins,
    on the test rows as they are and re-weighted to the assumed chat base rate."""
    figure, axes = plt.subplots(2, 4, figsize=(16, 8))
    for ax, (category, (labels, scores, _)) in zip(axes.flat, curves.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        x, y = reliability_points(labels, scores, np.ones(len(labels)))
        ax.plot(x, y, "o-", label="test rows as they are")
        if category in rates:
            x, y = reliability_points(labels, scores, prior_weights(labels, rates[category]))
            ax.plot(x, y, "s--", label=f"re-weighted to chat rate {rates[category]:g}")
        ax.set(title=category, xlabel="mean predicted probability", ylabel="observed positive share",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    figure.suptitle(f"Reliability, test split, {CALIBRATION_BINS} equal-width bins")
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)


# ---- the report -------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def verdicts(categories: Mapping[str, dict]) -> dict[str, dict]:
    """Per category: does Lifeguard rank better than the baseline on each ranking metric."""
    out = {}
    for category, figures in categories.items():
        mine, theirs = figures["lifeguard"], figures["baseline"]
        wins = {metric: mine[metric] > theirs[metric] for metric in ("roc_auc", "pr_auc", "recall_at_1pct_fpr")}
        out[category] = {"covered_by_baseline": category in BASELINE_COVERS, "better_on": wins,
                         "beats_baseline": all(wins.values())}
    return out


def render(report: dict) -> str:
    categories, evasion, probe = report["categories"], report["evasion"], report["identity_probe"]
    out = [
        "# Lifeguard text tier: evaluation report",
        "",
        f"Generated by `{report['command']}` (deterministic: the same model, policy and data give the same file).",
        f"Model `{report['model_version']}`, policy `{report['policy_version']}`. Baseline: `{BASELINE}` "
        f"{report['baseline_version']} (`predict_prob`). Figures in `evaluation.json`, curves in `pr_curves.png` "
        "and `reliability.png`.",
        "",
        "## Headline",
        "",
    ]
    for category, verdict in report["verdicts"].items():
        if verdict["covered_by_baseline"]:
            c = categories[category]
            out.append(f"- **{category}** (the category the baseline is built for), test split: ROC-AUC "
                       f"{_f(c['lifeguard']['roc_auc'])} vs {_f(c['baseline']['roc_auc'])}, PR-AUC "
                       f"{_f(c['lifeguard']['pr_auc'])} vs {_f(c['baseline']['pr_auc'])}, recall at 1% FPR "
                       f"{_f(c['lifeguard']['recall_at_1pct_fpr'])} vs {_f(c['baseline']['recall_at_1pct_fpr'])}: "
                       f"Lifeguard {'beats' if verdict['beats_baseline'] else 'does NOT beat'} the baseline on all three. "
                       f"Caveat: {BASELINE} was trained on all of Davidson and on Jigsaw's Wikipedia comments "
                       "(its README), so on those rows it is scored on text it learnt from; OLID and ETHOS (part 1's "
                       "evaluation-only rows) are unseen by both.")
    beaten = [c for c, v in report["verdicts"].items() if v["beats_baseline"]]
    not_beaten = [c for c, v in report["verdicts"].items() if not v["beats_baseline"]]
    out.append(f"- All categories (the baseline's scores used as a detector for each, reference only outside "
               f"{', '.join(BASELINE_COVERS)}): Lifeguard ranks better on all three metrics for "
               f"{', '.join(beaten) or 'none'}; not on all three for {', '.join(not_beaten) or 'none'}.")
    paragraphs = evasion["paragraphs"]["measured"]
    room = paragraphs["Lifeguard, under_13 room"]
    best = next(iter(evasion["paragraphs"]["recorded"].items()))
    ahead = room["caught"] > best[1]["caught"] and room["false_positives"] <= best[1]["false_positives"]
    out.append(f"- Evasion benchmark ({PARAGRAPH_SET}): Lifeguard (under_13 room) caught {room['caught']} of "
               f"{room['profane']} obfuscated paragraphs with {room['false_positives']} false positives on the "
               f"{room['clean']} clean ones; the best peer, {best[0].split(' ')[0]}, caught {best[1]['caught']} of "
               f"{best[1]['profane']} with {best[1]['false_positives']}: Lifeguard is "
               f"{'ahead of' if ahead else 'NOT ahead of'} the best peer.")
    policy_probe = probe["flag_rates"]["policy path, under_13 room"]["nontoxic (false positives)"]
    out.append(f"- Identity probe: the policy path (under_13 room) flags {_pct(policy_probe['mean'])} of non-toxic "
               f"identity templates on average, with a gap of {_pct(policy_probe['max_gap'])} between the most and "
               f"least flagged identity term (worst: {', '.join(policy_probe['worst_terms'])}).")
    cd = report["child_directed"]["contexts"]
    out.append(f"- Child-directed messages (SYNTHETIC, part 5), judged harmful acted on / benign acted on: "
               + "; ".join(f"{name} {_pct(c['harmful_acted'])} / {_pct(c['benign_acted'])}" for name, c in cd.items())
               + ". `pii` is measured there only: no real data set labels it. Grooming conversations have no real "
               "data: the grooming bank is project-written and synthetic, and nothing here measures it.")

    out += ["", "## 1. Per category, test split", "",
            "Rows: the test split (`models.splits.split_of(text) == \"test\"`, 15% by a hash of the text) of the "
            "data sets trained on; training used `train`, Platt scaling and the policy thresholds used `val`. "
            "Each category is measured only on the rows whose data set labels it. Recall at 1% FPR: the highest "
            "recall of any threshold whose false-positive rate on these rows is at most 1%. The ROC-AUC interval "
            f"is a 95% percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).", "",
            f"| category | pos / neg | data sets (pos / neg) | ROC-AUC Lifeguard (95% CI) | ROC-AUC {BASELINE} | "
            f"PR-AUC Lifeguard | PR-AUC {BASELINE} | recall@1%FPR Lifeguard | recall@1%FPR {BASELINE} |",
            "|---|---|---|---|---|---|---|---|---|"]
    for category, c in categories.items():
        mine, theirs = c["lifeguard"], c["baseline"]
        sets = "; ".join(f"{name} {n['positives']}/{n['negatives']}" for name, n in c["data_sets"].items())
        low, high = mine["roc_auc_95ci"]
        out.append(f"| {category} | {c['positives']} / {c['negatives']} | {sets} | {_f(mine['roc_auc'])} "
                   f"({_f(low)}–{_f(high)}) | {_f(theirs['roc_auc'])} | {_f(mine['pr_auc'])} | {_f(theirs['pr_auc'])} | "
                   f"{_f(mine['recall_at_1pct_fpr'], 2)} | {_f(theirs['recall_at_1pct_fpr'], 2)} |")
    out.append("| pii | — | no real data set labels it: see part 5 (synthetic) | | | | | | |")
    out += ["", f"`{BASELINE}` is a profanity / offensive-language detector: it covers **{', '.join(BASELINE_COVERS)}**, "
            "which is where \"beats the baseline\" is judged. Its score is shown for the other categories only as a "
            "reference (an offensive-language detector fires on some hate, threats and sexual text).", "",
            "Sexual, sexual_minors, self_harm and spam borrow clean Jigsaw talk-page comments as negatives (see "
            "`models/datasets.py`), which are easy to tell apart; the per-data-set table below shows each source alone.", ""]

    out += ["### At the policy thresholds (model head alone, test rows)", "",
            "Recall and false-positive rate of the model head at the thresholds in `flink-conf/policy.yaml` "
            "(flag when score >= threshold). Precision on the test rows depends on their class mix, which is nothing "
            "like chat; \"precision at chat rate\" is what the same recall and FPR would give at the assumed chat "
            "base rate π (`models/chat_base_rates.yaml`), an assumption, not a measurement. Rules and links are "
            "not included here (they are in parts 2 and 3).", "",
            "| category | band | action | threshold | recall | FPR | precision (test mix) | precision at chat rate π |",
            "|---|---|---|---|---|---|---|---|"]
    for category, c in categories.items():
        for band, actions in c["policy_thresholds"].items():
            if not actions:
                out.append(f"| {category} | {band} | — | no review or block threshold | | | | |")
            for action, t in actions.items():
                out.append(f"| {category} | {band} | {action} | {t['threshold']:.2f} | {_pct(t['recall'])} | "
                           f"{_pct(t['fpr'])} | {_pct(t['precision'])} | {_pct(t.get('precision_at_chat_rate'))} |")

    out += ["", "### Calibration", "",
            f"Expected calibration error: {CALIBRATION_BINS} equal-width bins over [0, 1] (a score of 1 in the last), "
            "each bin's |mean score − positive share| weighted by its share of rows. The model's probabilities are "
            "shifted to an assumed chat base rate π, so on the test rows as they are (toxicity is two-thirds "
            "positive) they are not meant to be calibrated; the re-weighted column weighs each positive π/p and "
            "each negative (1−π)/(1−p) (p: the rows' positive share), which checks calibration at π on this "
            "text, not on real chat. At small π almost all weight is on negatives scored near 0, so small values "
            "are easy to get. Diagram: `reliability.png`.", "",
            "| category | chat base rate π | ECE, test rows as they are | ECE, re-weighted to π |", "|---|---|---|---|"]
    for category, c in categories.items():
        out.append(f"| {category} | {c['chat_base_rate'] if c['chat_base_rate'] is not None else '—'} | "
                   f"{_f(c['ece_test_rows'])} | {_f(c['ece_at_chat_rate'])} |")

    out += ["", "### Per data set (test split)", "",
            "Each source alone, including the evaluation-only sets (never trained on, not used for thresholds): "
            "the best guide to how the model transfers to text it has not seen the like of.", "",
            f"| category · data set | usage | pos / neg | ROC-AUC Lifeguard | ROC-AUC {BASELINE} | PR-AUC Lifeguard | "
            f"PR-AUC {BASELINE} | recall@1%FPR Lifeguard | recall@1%FPR {BASELINE} |",
            "|---|---|---|---|---|---|---|---|---|"]
    for usage, section in (("trained on", categories), ("evaluation only", report["evaluation_only"])):
        for category, c in section.items():
            for name, figures in c["by_data_set"].items():
                n = c["data_sets"][name]
                mine, theirs = figures["lifeguard"], figures["baseline"]
                out.append(f"| {category} · {name} | {usage} | {n['positives']} / {n['negatives']} | "
                           f"{_f(mine['roc_auc'])} | {_f(theirs['roc_auc'])} | {_f(mine['pr_auc'])} | {_f(theirs['pr_auc'])} | "
                           f"{_f(mine['recall_at_1pct_fpr'], 2)} | {_f(theirs['recall_at_1pct_fpr'], 2)} |")
    out += ["", "Where a source has only one class for a category (borrowed negatives), its ranking cells are "
            "empty."]

    out += ["", "## 2. Text-evasion benchmark", "",
            f"Data: `{evasion['paragraphs']['data']}` (better_profanity's benchmark, MIT): 1,000 lorem-ipsum "
            "paragraphs with obfuscated profanity from its 944-word list; a paragraph \"contains profanity\" iff "
            "its censored line differs from the original (the README's definition). Lifeguard runs through the "
            "full policy path (`udfs.backtest.score_lines`: normalisation, rules, links, model, current policy); "
            "**caught = any action other than allow** (warn included). Two contexts: a room message for the "
            "youngest audience (under_13, the policy's room default) and a direct message between adults.", "",
            "| who | obfuscated paragraphs caught | false positives on clean paragraphs | source of the figure |",
            "|---|---|---|---|"]
    for who, r in evasion["paragraphs"]["measured"].items():
        out.append(f"| {who} | {r['caught']} / {r['profane']} | {r['false_positives']} / {r['clean']} | measured here |")
    for who, r in evasion["paragraphs"]["recorded"].items():
        out.append(f"| {who} | {r['caught']} / {r['profane']} | {r['false_positives']} | recorded (issue 4, peer research) |")
    clean = evasion["clean_paragraph_sets"]
    out += ["", f"Wholly clean paragraph sets ({', '.join(f'`{d}`' for d in clean['data'])}): "
            + "; ".join(f"{who} flagged {r['false_positives']} of {r['clean']}" for who, r in clean["measured"].items()) + ".",
            "", f"The peers' 26 cases (`{evasion['peer_cases']['data']}`: the obscenity README's 14 and "
            "better_profanity's tests' 12, each with the answer expected): matches on the cases that should match, "
            "and false matches on the ones that should not. Peers' answers as recorded there.", "",
            "| who | should match: matched | should not match: matched |", "|---|---|---|"]
    for who, r in {**evasion["peer_cases"]["measured"], **evasion["peer_cases"]["recorded"]}.items():
        out.append(f"| {who} | {r['caught']} / {r['profane']} | {r['false_positives']} / {r['clean']} |")
    out += ["", "Lifeguard's keyword rules are written for the policy, not taken from better_profanity's word list, "
            "which defines this benchmark's labels; a rule list built from that list would make the benchmark "
            "circular. The profanity rule's words come from the project's own list and two licensed lists "
            "(LDNOOBW, dsojevic/profanity-list; see udfs/data/README.md), which share 192 of better_profanity's 835 "
            "distinct words. The rules marked `minors_only` do not fire between adults: "
            + (", ".join(f"`{rule}`" for rule in evasion["minors_only_rules"]) or "none") + "."]
    misses = evasion["peer_cases"]["lifeguard_misses"]
    out += ["", "Cases Lifeguard answers wrongly in at least one context: "
            + (", ".join(f"`{m}`" for m in misses) if misses else "none") + "."]

    out += ["", "## 3. Identity-term counterfactual probe", "",
            f"Data: {probe['data']}: {probe['rows']['nontoxic']} non-toxic and {probe['rows']['toxic']} toxic rows "
            f"over {probe['rows']['terms']} identity terms. Templates that differ only in the identity term should be "
            "flagged equally often: on non-toxic templates every flag is a false positive against people saying who "
            "they are; on toxic templates a low rate means a group is less protected. Policy path: any action but "
            f"allow for an under_13 room message. Raw model: any head >= {RAW_MODEL_FLAG}.", "",
            "| who | templates | mean flag rate | max gap between terms | worst terms (rate) |", "|---|---|---|---|---|"]
    for who, kinds in {**probe["flag_rates"], f"{BASELINE} >= 0.5": probe["baseline_flag_rates_at_0.5"]}.items():
        for kind, s in kinds.items():
            worst = ", ".join(f"{term} {_pct(rate)}" for term, rate in s["worst_terms"].items())
            out.append(f"| {who} | {kind} | {_pct(s['mean'])} | {_pct(s['max_gap'])} | {worst} |")
    i_am = probe["i_am_statements"]
    out += ["", f"The \"I am <term>\" statements (template am_hate_adj, non-toxic, {i_am['rows']} rows here): the policy "
            f"path acts on {len(i_am['flagged_by_policy_path'])} of them"
            + (": " + ", ".join(f"\"{phrase}\"" for phrase in i_am["flagged_by_policy_path"]) if i_am["flagged_by_policy_path"] else "")
            + "."]
    ranking_ = probe["toxicity_ranking"]
    out += ["", f"Toxicity ranking on the same rows (toxic vs non-toxic template): ROC-AUC Lifeguard "
            f"{_f(ranking_['lifeguard']['roc_auc'])}, {BASELINE} {_f(ranking_['baseline']['roc_auc'])}; PR-AUC "
            f"{_f(ranking_['lifeguard']['pr_auc'])} vs {_f(ranking_['baseline']['pr_auc'])}. Per-term rates for every "
            "term are in `evaluation.json` (`identity_probe.flag_rates`)."]

    out += ["", "## 4. Data and caveats", ""] + [f"- {line}" for line in report["caveats"]]
    before = json.loads(child_directed_report.BEFORE.read_text()) if child_directed_report.BEFORE.is_file() else None
    out += [""] + child_directed_report.render(report["child_directed"], before)
    return "\n".join(out) + "\n"


CAVEATS = (
    "**Which data.** Part 1: the test split of jigsaw-toxic-multilabel-sample, davidson-hate-offensive, "
    "toxigen-seed-statements, openai-moderation-eval, reddit-cssrs-suicide (one row per user) and sms-spam-collection "
    "(the data sets trained on; the per-category table lists which labels each category), plus the test split of "
    "olid-offensive and ethos-multilabel-hate (evaluation only). Part 2: reference-vectors/text-evasion. Part 3: "
    "jigsaw-identity-templates. Every set is the 80% part in ../shared/data: **a fifth of each data set is held out "
    "outside this repository** and these figures will be re-measured there; the test split here was never used to "
    "train, calibrate or set thresholds, and nothing was tuned on it.",
    "**Not chat.** None of this text is children's game chat: tweets (Davidson, OLID), Wikipedia talk pages "
    "(Jigsaw), paragraph-length passages (OpenAI), Reddit (C-SSRS), SMS, templates. Precision on real chat depends "
    "on the real base rates, which are assumed, not measured (`models/chat_base_rates.yaml`).",
    "**pii** has no real labelled data here: its model head learnt from the synthetic child-directed set, and "
    "part 5 is its only measure. **Grooming has no real data**: no "
    "licensed grooming corpus could be had; the grooming bank used for conversation-level detection is "
    "project-written and synthetic, and no figure in this report measures grooming detection. `sexual_minors` is "
    "measured on OpenAI S3 passages (sexual content involving minors), not on grooming chat, and has very few test "
    "positives: read its intervals.",
    "**Small counts.** threat, sexual_minors and the OpenAI parts of sexual and self_harm have tens of test "
    "positives or fewer; the bootstrap intervals are wide.",
    "**Licences.** Trained on: Jigsaw sample (labels CC0, Wikipedia text CC BY-SA 3.0), Davidson (MIT; tweet text "
    "under X's terms), ToxiGen seed statements (CDLA-Permissive-2.0), OpenAI moderation eval (MIT, although "
    "published as an evaluation set), Reddit C-SSRS (CC BY), SMS Spam Collection (authors' free-use licence). "
    "Evaluation only, and `models/datasets.py` keeps them out of training (`usage=\"eval_only\"`): OLID (no licence "
    "stated: research use only), ETHOS (GPL-3.0), the identity templates (CC BY 4.0, kept out so the probe stays a "
    "probe). No data set README forbids training on a set that the current training uses.",
    "**Peer figures.** The peers' answers on the 26 cases are as recorded in peer_results_computed_here.csv "
    "(alt-profanity-check 1.9.1 there; 1.9.0 is installed here and measured here). The obscenity figure on the "
    "1,000 paragraphs (491 / 952, no false positive) is the one recorded in issue 4; it was not re-run here (npm).",
)


def build_report(data_dir: Path, command: str) -> tuple[dict, dict]:
    """Every figure (JSON-ready) and the curves' raw data per category."""
    config = load_config()
    screener = Screener.from_config(config)
    rates = chat_base_rates()
    records, evaluation_only = rows_in_test_split(data_dir, "train"), rows_in_test_split(data_dir, "eval_only")
    # The identity templates have their own part (3); their test split would double it here.
    evaluation_only = [r for r in evaluation_only if r.source != "jigsaw-identity-templates"]
    texts = [r.text for r in records]
    model, baseline = model_scores(screener, texts), baseline_scores(texts)
    categories = category_section(screener, records, model, baseline, rates)
    eval_texts = [r.text for r in evaluation_only]
    eval_section = category_section(screener, evaluation_only, model_scores(screener, eval_texts),
                                    baseline_scores(eval_texts), rates)
    curves = {}
    for column, category in enumerate(screener.text_model.categories):
        rows, labels, _ = labelled(records, category)
        if len(rows):
            curves[category] = (labels, model[rows, column], baseline[rows])
    report = {
        "command": command,
        "model_version": screener.text_model.version,
        "policy_version": screener.policy.version,
        "baseline_version": importlib.metadata.version(BASELINE),
        "categories": categories,
        "unmeasured_categories": {"pii": "no labelled data in ../shared/data; measured on the synthetic "
                                         "child-directed test set only (child_directed)"},
        "evaluation_only": {c: {k: v for k, v in figures.items() if k in ("data_sets", "by_data_set")}
                            for c, figures in eval_section.items()},
        "verdicts": verdicts(categories),
        "evasion": evasion_section(screener, data_dir),
        "identity_probe": probe_section(screener, data_dir),
        "child_directed": child_directed_report.measure(screener, child_directed.read(child_directed.TEST_SET)),
        "caveats": list(CAVEATS),
    }
    return report, {"curves": curves, "rates": rates}


def _rounded(value):
    """Floats to 4 decimals, recursively, so the JSON is stable and readable."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (np.bool_, np.integer)):
        return value.item()
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the report goes (default: %(default)s)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    command = "python -m models.evaluate" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    report, plots = build_report(args.data, command)
    report = _rounded(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "evaluation.md").write_text(render(report))
    plot_pr_curves(args.out / "pr_curves.png", plots["curves"])
    plot_reliability(args.out / "reliability.png", plots["curves"], plots["rates"])
    print(f"wrote {args.out}/evaluation.md, evaluation.json, pr_curves.png, reliability.png "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
