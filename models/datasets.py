"""Loads the labelled text sets under shared/data/ onto Lifeguard's categories.

Each record is a `LabelledText`. A category missing from its ``labels`` means "this data set does
not label it", never "negative": every category is trained and measured only on rows that label it.
The split (train / val / test) is `split_for(record)` everywhere: `models.splits.split_of(text)` for the
shared data sets, and the split its authors wrote it for in the synthetic child-directed set.

Label mapping (positive = 1, negative = 0, anything not listed = not labelled)

| data set | toxicity | hate | threat | sexual | sexual_minors | self_harm | spam |
|---|---|---|---|---|---|---|---|
| jigsaw-toxic-multilabel-sample | toxic, severe_toxic, obscene or insult | identity_hate | threat | clean row → 0 | clean row → 0 | clean row → 0 | clean row → 0 |
| davidson-hate-offensive | class hate or offensive | class hate | | | | | |
| toxigen-seed-statements | hate | hate | | | | | |
| openai-moderation-eval | HR, H or H2 = 1; 0 when HR = H = 0 | H or H2 = 1; 0 when H = 0 | V or H2 = 1; 0 when V = 0 | S or S3 = 1; 0 when S = 0 | S3; 0 when S = 0 | SH | |
| reddit-cssrs-suicide | | | | | | Ideation, Behavior, Attempt → 1; Supportive → 0 | |
| sms-spam-collection | | | | | | | spam |
| olid-offensive (evaluation only) | subtask_a OFF | | | | | | |
| ethos-multilabel-hate (evaluation only) | hate → 1 | isHate ≥ 0.5 | violence ≥ 0.5 (hateful rows only) | | | | |
| jigsaw-identity-templates (evaluation only) | toxic template | | | | | | |
| child-directed-synthetic (project-written) | bullying, threat | | threat | sexual approach | sexual approach, photo, meeting, secrecy, gifts | self-harm | |

The synthetic child-directed set (`models.child_directed`) also labels ``pii`` (personal information,
another app, account requests), and its benign game chat is a negative for every category. Its seeds
are augmented for training (train split, or val where `split_of(seed)` says val); its separately
written val set is all val; its test set is never read here (`models.evaluate` reports on it).

Choices, and why:
- Hate implies toxicity (Davidson, ToxiGen, ETHOS): the project treats hate as a kind of toxic
  speech, and it keeps the two heads from contradicting each other.
- openai-moderation-eval: a missing key is unknown (its README). S3 (sexual, involving a minor) is
  sexual; S = 0 rules out S3; H2 (hate with violence) is both hate and threat. V ("promotes or
  glorifies violence") is the nearest it has to a threat; graphic violence (V2) is not mapped.
- reddit-cssrs-suicide: one record per user (all their posts joined), because the severity is given
  per user, not per post. Ideation, Behavior and Attempt describe suicidal thoughts or acts, which is
  what the self_harm category flags. Supportive users write to help others: a hard negative.
  Indicator users show distress without ideation; they are left out (neither label fits the
  category's definition, and either guess would teach the model something we cannot defend).
- Borrowed negatives: only Jigsaw rows with all six labels 0 (Wikipedia talk-page comments rated
  clean) are used as negatives for categories Jigsaw does not label (sexual, sexual_minors,
  self_harm, spam). If raters saw nothing obscene or toxic in an editors' discussion, sexual or spam
  content is very unlikely. A keyword check of the 5,635 clean rows found no "kill myself" or "cut
  myself", and the rows sampled that mention sex discuss articles about sexuality. Without negatives
  from outside SMS and the OpenAI passages, those heads would learn the style of their only source. Davidson's "neither" tweets were not borrowed: they include
  porn-spam tweets. SMS ham was not borrowed: it includes private flirting.

Licences decide usage (`DataSet.usage`):
- Trained on: Jigsaw sample (labels CC0, text CC BY-SA 3.0), Davidson (MIT), ToxiGen seed
  statements (CDLA-Permissive-2.0, which puts no restriction on results such as models), OpenAI
  moderation eval (MIT), Reddit C-SSRS (CC BY), SMS Spam Collection (authors' free-use licence).
- Evaluation only: OLID (no licence stated: research use only), ETHOS (GPL-3.0: whether a model
  trained on it must be GPL is unsettled, so it stays out of the weights), and the identity
  templates (CC BY 4.0, but a synthetic fairness probe that training would make useless).
"""
from __future__ import annotations

import ast
import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

from lifeguard import PROJECT_ROOT
from models import child_directed
from models.splits import Split, split_of

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"

Usage = Literal["train", "eval_only"]


@dataclass(frozen=True)
class LabelledText:
    text: str
    # category -> 1 (positive) or 0 (negative); a missing category is not labelled by this source.
    labels: Mapping[str, int]
    source: str
    split: Split | None = None  # None: split_of(text)


def split_for(record: LabelledText) -> Split:
    return record.split or split_of(record.text)


@dataclass(frozen=True)
class DataSet:
    name: str  # its folder under the data directory
    files: tuple[str, ...]  # the files read, relative to that folder
    usage: Usage
    why: str
    read: Callable[[Path], list[LabelledText]]  # given the data set's folder
    folder: Path | None = None  # None: the data set's name under the data directory

    def folder_in(self, data_dir: Path) -> Path:
        return self.folder or data_dir / self.name


def load(data_set: DataSet, data_dir: Path = DEFAULT_DATA_DIR) -> list[LabelledText]:
    return data_set.read(data_set.folder_in(data_dir))


# Jigsaw rows with no label at all are negatives for the categories Jigsaw does not rate (see above).
JIGSAW_CLEAN_BORROWED_NEGATIVES = {"sexual": 0, "sexual_minors": 0, "self_harm": 0, "spam": 0}
JIGSAW_TOXICITY_COLUMNS = ("toxic", "severe_toxic", "obscene", "insult")
JIGSAW_ALL_COLUMNS = (*JIGSAW_TOXICITY_COLUMNS, "threat", "identity_hate")

CSSRS_SELF_HARM = {"Ideation": 1, "Behavior": 1, "Attempt": 1, "Supportive": 0}  # Indicator: left out

ETHOS_POSITIVE = 0.5  # its labels are annotator fractions; its README says >= 0.5 is positive


def _csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file, delimiter=delimiter))


def _read_jigsaw(folder: Path) -> list[LabelledText]:
    records = []
    for row in _csv_rows(folder / "jigsaw_toxic_sample.csv"):
        flags = {column: int(row[column]) for column in JIGSAW_ALL_COLUMNS}
        labels = {
            "toxicity": max(flags[column] for column in JIGSAW_TOXICITY_COLUMNS),
            "hate": flags["identity_hate"],
            "threat": flags["threat"],
        }
        if not any(flags.values()):
            labels |= JIGSAW_CLEAN_BORROWED_NEGATIVES
        records.append(LabelledText(row["comment_text"], labels, "jigsaw-toxic-multilabel-sample"))
    return records


def _read_davidson(folder: Path) -> list[LabelledText]:
    hate, offensive = 0, 1  # its `class` column; 2 is "neither"
    records = []
    for row in _csv_rows(folder / "labeled_data.csv"):
        label = int(row["class"])
        # Tweets keep HTML entities (&amp;, &#128514;) that chat text never has.
        text = html.unescape(row["tweet"])
        labels = {"toxicity": int(label in (hate, offensive)), "hate": int(label == hate)}
        records.append(LabelledText(text, labels, "davidson-hate-offensive"))
    return records


def _read_toxigen(folder: Path) -> list[LabelledText]:
    records = []
    for row in _csv_rows(folder / "toxigen_seed_statements.csv"):
        is_hate = int(row["label"] == "hate")
        records.append(LabelledText(row["text"], {"toxicity": is_hate, "hate": is_hate}, "toxigen-seed-statements"))
    return records


def _read_openai(folder: Path) -> list[LabelledText]:
    with (folder / "samples-1680.jsonl").open(encoding="utf-8") as file:
        return [LabelledText(row["prompt"], _openai_labels(row), "openai-moderation-eval")
                for row in map(json.loads, file)]


def _openai_labels(row: Mapping[str, int]) -> dict[str, int]:
    """Maps its eight keys (a missing key is unknown) onto the categories; see the module doc."""
    def positive(*keys: str) -> bool:
        return any(row.get(key) == 1 for key in keys)

    def negative(*keys: str) -> bool:
        return all(row.get(key) == 0 for key in keys)

    rules = {
        "toxicity": (positive("HR", "H", "H2"), negative("HR", "H")),
        "hate": (positive("H", "H2"), negative("H")),
        "threat": (positive("V", "H2"), negative("V") and not positive("H2")),
        "sexual": (positive("S", "S3"), negative("S") and not positive("S3")),
        "sexual_minors": (positive("S3"), negative("S3") or negative("S")),
        "self_harm": (positive("SH"), negative("SH")),
    }
    labels = {}
    for category, (is_positive, is_negative) in rules.items():
        if is_positive:
            labels[category] = 1
        elif is_negative:
            labels[category] = 0
    return labels


def _read_cssrs(folder: Path) -> list[LabelledText]:
    records = []
    for row in _csv_rows(folder / "500_Reddit_users_posts_labels.csv"):
        if row["Label"] not in CSSRS_SELF_HARM:
            continue
        text = "\n".join(_cssrs_posts(row["Post"]))
        records.append(LabelledText(text, {"self_harm": CSSRS_SELF_HARM[row["Label"]]}, "reddit-cssrs-suicide"))
    return records


def _cssrs_posts(cell: str) -> list[str]:
    """`Post` is a Python list literal of the user's posts. 23 cells were cut at 32,759 characters (a
    spreadsheet's cell limit) in the middle of a post; closing the string and the list keeps them."""
    for ending in ("", "']", '"]'):
        try:
            return ast.literal_eval(cell + ending)
        except SyntaxError:
            continue
    raise ValueError(f"unreadable Post cell ending {cell[-40:]!r}")


def _read_sms(folder: Path) -> list[LabelledText]:
    with (folder / "SMSSpamCollection").open(encoding="utf-8", newline="") as file:
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [LabelledText(text, {"spam": int(label == "spam")}, "sms-spam-collection") for label, text in rows]


def _read_olid(folder: Path) -> list[LabelledText]:
    with (folder / "olid_all.tsv").open(encoding="utf-8", newline="") as file:
        rows = csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [LabelledText(row["tweet"], {"toxicity": int(row["subtask_a"] == "OFF")}, "olid-offensive")
                for row in rows]


def _read_ethos(folder: Path) -> list[LabelledText]:
    violence = {row["comment"]: float(row["violence"])
                for row in _csv_rows(folder / "Ethos_Dataset_Multi_Label.csv", delimiter=";")}
    records = []
    for row in _csv_rows(folder / "Ethos_Dataset_Binary.csv", delimiter=";"):
        comment = row["comment"]
        labels = {"hate": int(float(row["isHate"]) >= ETHOS_POSITIVE)}
        if labels["hate"]:
            labels["toxicity"] = 1
        if comment in violence:
            labels["threat"] = int(violence[comment] >= ETHOS_POSITIVE)
        records.append(LabelledText(comment, labels, "ethos-multilabel-hate"))
    return records


def _read_identity_templates(folder: Path) -> list[LabelledText]:
    return [LabelledText(row["phrase"], {"toxicity": int(row["toxicity"] == "toxic")}, "jigsaw-identity-templates")
            for row in _csv_rows(folder / "en_sentence_templates.csv")]


def nontoxic_identity_templates(data_dir: Path = DEFAULT_DATA_DIR) -> list[tuple[str, str]]:
    """(phrase, identity term) of every non-toxic identity template that names a term: the fairness
    probe, where any score difference between terms is bias the model learned."""
    rows = _csv_rows(data_dir / "jigsaw-identity-templates" / "en_sentence_templates.csv")
    return [(row["phrase"], row["identity_term"]) for row in rows
            if row["toxicity"] == "nontoxic" and row["identity_term"]]


def _train_or_val(text: str) -> Split:
    """Val where `split_of` says val, train otherwise: the set's own test is written apart."""
    return "val" if split_of(text) == "val" else "train"


def _read_child_directed(folder: Path) -> list[LabelledText]:
    """The synthetic child-directed seeds, augmented; the further training messages as written; and the val
    set written apart from both."""
    source = CHILD_DIRECTED
    seeds = child_directed.read(folder / child_directed.TRAIN_SEEDS.name)
    pool = child_directed.benign_pool(seeds)
    records = []
    for seed in seeds:
        # All of a seed's variants share its split, so no variant of a val seed is trained on; the set's
        # own test is written apart (test_set.jsonl), so a seed split_of puts in test is trained on.
        records += [LabelledText(m.text, child_directed.labels(m), source, _train_or_val(seed.text))
                    for m in child_directed.variants(seed, pool)]
    for path in child_directed.TRAIN_MORE:
        records += [LabelledText(m.text, child_directed.labels(m), source, _train_or_val(m.text))
                    for m in child_directed.read(folder / path.name)]
    records += [LabelledText(m.text, child_directed.labels(m), source, "val")
                for m in child_directed.read(folder / child_directed.VAL_SET.name)]
    return records


CHILD_DIRECTED = "child-directed-synthetic"
# Written for the purpose rather than collected: each model learns them apart from the real data sets (a head
# per kind of text, models.train_text.Domain; the fine-tuned encoder's child_directed:* outputs).
SYNTHETIC_DATA_SETS = (CHILD_DIRECTED,)

DATA_SETS: tuple[DataSet, ...] = (
    DataSet("jigsaw-toxic-multilabel-sample", ("jigsaw_toxic_sample.csv",), "train",
            "labels CC0, Wikipedia text CC BY-SA 3.0", _read_jigsaw),
    DataSet("davidson-hate-offensive", ("labeled_data.csv",), "train", "MIT", _read_davidson),
    DataSet("toxigen-seed-statements", ("toxigen_seed_statements.csv",), "train",
            "CDLA-Permissive-2.0: no restriction on results such as trained models", _read_toxigen),
    DataSet("openai-moderation-eval", ("samples-1680.jsonl",), "train",
            "MIT; the only source of sexual and sexual_minors labels", _read_openai),
    DataSet("reddit-cssrs-suicide", ("500_Reddit_users_posts_labels.csv",), "train", "CC BY", _read_cssrs),
    DataSet("sms-spam-collection", ("SMSSpamCollection",), "train",
            "authors' free-use licence (copyright kept, citation asked)", _read_sms),
    DataSet("olid-offensive", ("olid_all.tsv",), "eval_only",
            "no licence stated (research use only): not trained on", _read_olid),
    DataSet("ethos-multilabel-hate", ("Ethos_Dataset_Binary.csv", "Ethos_Dataset_Multi_Label.csv"), "eval_only",
            "GPL-3.0: kept out of the weights so the model's licence is not in question", _read_ethos),
    DataSet("jigsaw-identity-templates", ("en_sentence_templates.csv",), "eval_only",
            "synthetic fairness probe (CC BY 4.0); training on it would spoil the probe", _read_identity_templates),
    DataSet(CHILD_DIRECTED, ("train_seeds.jsonl", *(p.name for p in child_directed.TRAIN_MORE), "val_set.jsonl"), "train",
            "project-written (synthetic): no real child-directed corpus may be used here", _read_child_directed,
            folder=child_directed.FOLDER),
)
