"""Trains the linear text model and exports it as one ONNX graph, with a manifest of what went in.

    python -m models.train_text --out models/build/text_linear.onnx

Two logistic regressions per category over hashed character n-grams (`udfs.text_features`), one for each
kind of text (`REAL`: the shared data sets; `CHILD_DIRECTED_TEXT`: the synthetic child-directed set), each
fitted on its ``train`` rows, then Platt-calibrated on its ``val`` rows. The val split's class mix is
nothing like chat (toxicity val is 68% positive), so each head's prior is then moved from its val positive
rate to an assumed chat base rate (``models/chat_base_rates.yaml``) by a label-shift correction: the bias
gains ``logit(chat rate) - logit(val rate)``. Both steps are folded into the weights, and a category's score
is the higher of its two heads', so the graph is simply

    ids int64[N, L], weights float32[N, L]
      -> Gather(W float32[n_features, 2C], ids)      # [N, L, 2C]: real-text heads, then child-directed heads
      -> Mul(weights[..., None]) -> ReduceSum(L)     # [N, 2C]
      -> Add(bias float32[2C]) -> Sigmoid            # [N, 2C]
      -> Reshape [N, 2, C] -> ReduceMax(axis 1)      # scores float32[N, C]

Categories are the ones the training data labels (``pii`` only the child-directed set). Metrics in the
manifest (``text_linear.manifest.json`` beside the model) are computed on the ``test`` split only,
by the exported graph itself through `udfs.text_model.TextModel`. Brier score and ECE are computed
with the test rows re-weighted per class to the chat base rate, since the exported probabilities
are meant for that rate; ranking metrics do not depend on the prior. The manifest also gives the
share of test negatives and positives at or above each under_13 threshold of the shipped policy.
Training is deterministic: the hashing is seedless, liblinear's shuffling is seeded, and the
manifest has no timestamps.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import AgeBand
from models.datasets import (DATA_SETS, DEFAULT_DATA_DIR, SYNTHETIC_DATA_SETS, DataSet, LabelledText, load,
                             nontoxic_identity_templates, split_for)
from models.metrics import auc_interval, expected_calibration_error, prior_weights, recall_at_fpr
from models.splits import split_of
from udfs.policy import Policy, load_policy
from udfs.text_features import FeaturizerParams, vectorize
from udfs.text_model import CATEGORIES, TextModel

VERSION = "text-linear-4"

DEFAULT_BASE_RATES = PROJECT_ROOT / "models" / "chat_base_rates.yaml"
DEFAULT_POLICY = PROJECT_ROOT / "flink-conf" / "policy.yaml"
# The band whose thresholds the manifest reports crossings for: the strictest, and the one an
# unknown age or a room message is judged by.
REPORTED_BAND = AgeBand.UNDER_13

# Chosen on the val split (sweep in models/README.md): word-bounded 3-5-grams beat 2-5 and 1-4 on the
# small categories, and 2**16 columns scored the same as 2**17 and 2**18 at a quarter of the size.
FEATURIZER = FeaturizerParams(n_features=2**16, ngram_range=(3, 5), analyzer="char_wb")
REGULARISATION_C = 4.0
SEED = 0

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime the project allows (>= 1.19)

FALSE_POSITIVE_BUDGET = 0.01  # for "recall at 1% FPR"
BOOTSTRAP_RESAMPLES = 500
SCORING_BATCH = 128


@dataclass(frozen=True)
class Example:
    record: LabelledText
    data_set: DataSet
    split: str


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.perf_counter()
    examples = load_examples(args.data_dir)
    training = [example for example in examples if example.data_set.usage == "train"]
    # Only what the data labels (pii: the synthetic child-directed set alone).
    categories = tuple(c for c in CATEGORIES if any(c in example.record.labels for example in training))

    base_rates = load_chat_base_rates(args.base_rates, categories)
    policy = load_policy(args.policy)  # read before the minute of training: a bad file fails fast

    features = vectorize([example.record.text for example in training], FEATURIZER)
    heads = {category: fit_calibrated(features, training, category, base_rates[category].rate, REAL)
             for category in categories}
    child_heads = {category: fit_calibrated(features, training, category, base_rates[category].rate, CHILD_DIRECTED_TEXT)
                   for category in categories}

    metadata = {
        "version": VERSION,
        "categories": json.dumps(list(categories)),
        "featurizer": FEATURIZER.to_json(),
        "training_data_sha256": json.dumps(_hashes(args.data_dir, _used(examples, "train")), sort_keys=True),
        "prior_shift": json.dumps({category: head.prior() for category, head in heads.items()}),
        "child_directed_prior_shift": json.dumps({category: head.prior() for category, head in child_heads.items()}),
        "chat_base_rates_sha256": hashlib.sha256(args.base_rates.read_bytes()).hexdigest(),
    }
    both = [*heads.values(), *child_heads.values()]  # the real-text columns, then the child-directed ones
    weights = np.stack([head.weights for head in both], axis=1)
    bias = np.array([head.exported_bias for head in both])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_graph(weights, bias, metadata), args.out)

    command = ["python", "-m", "models.train_text", *(sys.argv[1:] if argv is None else argv)]
    manifest = build_manifest(args, shlex.join(command), examples, heads, child_heads, base_rates, policy)
    manifest_path = args.out.with_name(args.out.stem + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) and {manifest_path.name} "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)


CALIBRATION_NOTE = (
    "Platt scaling on the val split, folded into the weights, then a label-shift (prior) correction: "
    "each head's bias gains logit(chat_base_rate) - logit(val_positive_rate). The probabilities are "
    "meant as 'probability in chat' at the ASSUMED chat base rates of models/chat_base_rates.yaml, and "
    "only if text given its label looks the same in chat as in the training data, which it does not "
    "(see models/README.md).")
REWEIGHTING_NOTE = (
    "brier_chat_reweighted and ece_chat_reweighted are NOT plain test-split figures: they are computed "
    "on the test rows re-weighted per class to the category's chat base rate (each positive weighs "
    "chat_base_rate / p, each negative (1 - chat_base_rate) / (1 - p), where p is the positive rate of "
    "the rows measured). They check calibration at the assumed base rate on the training data sets' "
    "text, not calibration on real chat. roc_auc, pr_auc and recall_at_1pct_fpr do not depend on the "
    "prior and are unweighted, as are recall_at_0.5 and false_positive_rate_at_0.5.")
CROSSING_NOTE = (
    "Share of the category's test negatives and test positives (unweighted, all training data sets "
    "pooled) scoring at or above each threshold the policy sets for the band (text, no voice margin).")


def build_manifest(args: argparse.Namespace, command: str, examples: Sequence[Example],
                   heads: dict[str, "Head"], child_heads: dict[str, "Head"], base_rates: dict[str, "BaseRate"],
                   policy: Policy) -> dict:
    """What went into the model and how it scores on the test split, measured through the exported
    graph itself (the same code path as the job)."""
    text_model = TextModel.load(args.out, prefer_gpu=False)
    rates = {category: rate.rate for category, rate in base_rates.items()}
    test, evaluation_only = (_scored_test_rows(text_model, examples, usage) for usage in ("train", "eval_only"))
    return {
        "model": args.out.name,
        "version": VERSION,
        "command": command,
        "categories": list(heads),
        "featurizer": json.loads(FEATURIZER.to_json()),
        "classifier": {
            "kind": "logistic regression per category (liblinear, L2)",
            "C": REGULARISATION_C, "class_weight": "balanced", "seed": SEED,
            "calibration": CALIBRATION_NOTE,
            "heads": {category: head.describe() for category, head in heads.items()},
            "child_directed_heads": {category: head.describe() for category, head in child_heads.items()},
        },
        "chat_base_rates": {
            "file": _relative(args.base_rates),
            "sha256": hashlib.sha256(args.base_rates.read_bytes()).hexdigest(),
            "note": "assumptions, not measurements: no labelled chat from the platform exists",
            "rates": {category: {"rate": rate.rate, "basis": rate.basis} for category, rate in base_rates.items()},
        },
        "data": [_describe(args.data_dir, data_set, examples) for data_set in _used(examples, None)],
        "labelled_rows": _label_counts(examples, list(heads), REAL),
        "labelled_rows_child_directed": _label_counts(examples, list(heads), CHILD_DIRECTED_TEXT),
        "metric_notes": REWEIGHTING_NOTE,
        "test_metrics": _test_metrics(text_model, *test, rates),
        "evaluation_only_test_metrics": _test_metrics(text_model, *evaluation_only, rates),
        "policy_threshold_crossings": _threshold_crossings(text_model, *test, policy, REPORTED_BAND,
                                                           _relative(args.policy)),
        "identity_term_probe": _identity_term_probe(text_model, args.data_dir),
    }


def _relative(path: Path) -> str:
    """`path` relative to the project root where it lies inside it (the manifest names no home folders)."""
    path = path.resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.train_text", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared/data folder")
    parser.add_argument("--base-rates", type=Path, default=DEFAULT_BASE_RATES,
                        help="the assumed chat base rate per category (default: %(default)s)")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY,
                        help="the policy whose thresholds the manifest reports on (default: %(default)s)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class BaseRate:
    rate: float  # assumed share of chat messages that are positive for the category
    basis: str  # where the figure comes from, one line


def load_chat_base_rates(path: Path, categories: Sequence[str]) -> dict[str, BaseRate]:
    """The reviewed chat base rates, in `categories` order: exactly one entry per category, each with
    exactly a ``rate`` in (0, 1) and a one-line ``basis``. Anything else is an error, not a default."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of category -> {{rate, basis}}")
    if missing := [c for c in categories if c not in raw]:
        raise ValueError(f"{path}: no base rate for {missing}")
    if unknown := sorted(set(raw) - set(categories)):
        raise ValueError(f"{path}: base rates for categories the model does not score: {unknown}")
    rates = {}
    for category in categories:
        entry = raw[category]
        if not isinstance(entry, dict) or set(entry) != {"rate", "basis"}:
            raise ValueError(f"{path}: {category} needs exactly the keys rate and basis, got {entry!r}")
        rate, basis = entry["rate"], entry["basis"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise ValueError(f"{path}: {category}.rate must be a number strictly between 0 and 1, got {rate!r}")
        if not isinstance(basis, str) or not basis.strip() or "\n" in basis.strip():
            raise ValueError(f"{path}: {category}.basis must be one non-empty line")
        rates[category] = BaseRate(float(rate), basis.strip())
    return rates


def prior_shift(from_rate: float, to_rate: float) -> float:
    """The logit shift that moves a calibrated probability from class prior `from_rate` to `to_rate`
    (label shift: P(text | label) unchanged, only P(label) moves)."""
    return float(logit(to_rate) - logit(from_rate))


def load_examples(data_dir: Path) -> list[Example]:
    return [Example(record, data_set, split_for(record))
            for data_set in DATA_SETS for record in load(data_set, data_dir)]


# The two kinds of text each category has a head for (`Domain`), max-combined in the exported graphs:
# the real data sets, and the synthetic child-directed set. One shared head let the synthetic rows pull the
# weights away from the real text (stage 2, test split: sexual_minors PR-AUC .750 -> .449, threat .519 ->
# .470, OLID toxicity ROC-AUC .809 -> .802); with a head each, real text keeps a head fitted on it alone.
Domain = Callable[[Example, str], bool]  # (example, category) -> whether the domain's head learns from it


def REAL(example: Example, category: str) -> bool:
    return example.data_set.name not in SYNTHETIC_DATA_SETS


def CHILD_DIRECTED_TEXT(example: Example, category: str) -> bool:
    """The synthetic set, and the real rows negative for the category: taught only game chat as negatives,
    the head fired on real text it had never seen (stage 1, test toxicity ROC-AUC .978 -> .930 in the max)."""
    return example.data_set.name in SYNTHETIC_DATA_SETS or example.record.labels.get(category) == 0


def _rows(examples: Sequence[Example], category: str, split: str, domain: Domain | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of the examples in `split` (and of `domain`, when given) that label `category`."""
    chosen = [i for i, example in enumerate(examples) if example.split == split and category in example.record.labels
              and (domain is None or domain(example, category))]
    return np.array(chosen, dtype=np.int64), np.array([examples[i].record.labels[category] for i in chosen])


@dataclass(frozen=True)
class Head:
    """One category's column of the model, with Platt scaling already folded in."""

    weights: np.ndarray  # float32[n_features]
    bias: float  # after Platt scaling: calibrated to the val split's prior
    platt_slope: float
    platt_intercept: float
    val_positives: int
    val_rows: int
    chat_base_rate: float  # the prior the exported probabilities are moved to

    @property
    def val_positive_rate(self) -> float | None:
        return self.val_positives / self.val_rows if self.val_rows else None

    @property
    def prior_shift(self) -> float:
        """0 for a head that never fires (no val rows): its bias is NEVER_LOGIT already."""
        return prior_shift(self.val_positive_rate, self.chat_base_rate) if self.val_rows else 0.0

    @property
    def exported_bias(self) -> float:
        return self.bias + self.prior_shift

    def prior(self) -> dict:
        """The label-shift correction, as stored in the model's metadata (unrounded)."""
        return {"val_positive_rate": self.val_positive_rate, "chat_base_rate": self.chat_base_rate,
                "logit_shift": self.prior_shift}

    def describe(self) -> dict:
        return {"platt_slope": round(self.platt_slope, 6), "platt_intercept": round(self.platt_intercept, 6),
                "val_positives": self.val_positives, "val_rows": self.val_rows, **self.prior(),
                "val_calibrated_bias": self.bias, "exported_bias": self.exported_bias}


# The bias of a head that has no rows to learn from (pii among the real data sets): it never fires, so the
# max is the other head's.
NEVER_LOGIT = -40.0


def fit_calibrated(features, examples: Sequence[Example], category: str, chat_base_rate: float,
                   domain: Domain = REAL) -> Head:
    """The category's head fitted on the `domain`'s train rows and Platt-scaled on its val rows; where the
    domain labels the category in neither, or with one class only, a head that never fires."""
    train_rows, train_labels = _rows(examples, category, "train", domain)
    val_rows, val_labels = _rows(examples, category, "val", domain)
    if not (0 < train_labels.sum() < len(train_labels)) or not (0 < val_labels.sum() < len(val_labels)):
        return Head(np.zeros(features.shape[1], np.float32), NEVER_LOGIT, 0.0, NEVER_LOGIT, 0, 0, chat_base_rate)
    # Balanced weights keep rare positives (threat: 1 in 60) from being ignored; Platt scaling on the
    # val split then restores probabilities at that split's real mix.
    classifier = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", solver="liblinear",
                                    max_iter=1000, random_state=SEED)
    classifier.fit(features[train_rows], train_labels)
    slope, intercept = platt_scaling(classifier.decision_function(features[val_rows]), val_labels)
    # sigmoid(slope * (w.x + b) + intercept) == sigmoid((slope * w).x + (slope * b + intercept))
    return Head(
        weights=(slope * classifier.coef_[0]).astype(np.float32),
        bias=float(slope * classifier.intercept_[0] + intercept),
        platt_slope=slope,
        platt_intercept=intercept,
        val_positives=int(val_labels.sum()),
        val_rows=len(val_labels),
        chat_base_rate=chat_base_rate,
    )


def platt_scaling(decision: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Fits p = sigmoid(slope * decision + intercept) by log loss (Platt, 1999).

    Platt's soft targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2)) stop a small validation set, such as
    7 sexual_minors positives, from pushing probabilities to exactly 0 or 1.
    """
    n_positive = int(labels.sum())
    n_negative = len(labels) - n_positive
    target = np.where(labels == 1, (n_positive + 1) / (n_positive + 2), 1 / (n_negative + 2))

    def loss_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        logits = params[0] * decision + params[1]
        loss = np.sum(np.logaddexp(0, logits) - target * logits)
        residual = expit(logits) - target
        return loss, np.array([residual @ decision, residual.sum()])

    result = minimize(loss_and_gradient, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])


def build_graph(weights: np.ndarray, bias: np.ndarray, metadata: dict[str, str], domains: int = 2) -> onnx.ModelProto:
    """The linear model as ONNX: see the module docstring for the ops and shapes. `weights` float[F, domains * C]
    and `bias` hold each domain's heads side by side; the score is the most any domain's head gives."""
    n_categories = weights.shape[1] // domains
    initializers = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ngram_axis"),
        numpy_helper.from_array(np.array([-1, domains, n_categories], dtype=np.int64), "by_domain"),
    ]
    nodes = [
        helper.make_node("Gather", ["W", "ids"], ["ngram_scores"], axis=0),  # [N, L, C]
        helper.make_node("Unsqueeze", ["weights", "last_axis"], ["ngram_weights"]),  # [N, L, 1]
        helper.make_node("Mul", ["ngram_scores", "ngram_weights"], ["weighted"]),  # [N, L, C]
        helper.make_node("ReduceSum", ["weighted", "ngram_axis"], ["dot"], keepdims=0),  # [N, C]
        helper.make_node("Add", ["dot", "bias"], ["logits"]),  # [N, D * C]
        helper.make_node("Sigmoid", ["logits"], ["domain_scores"]),  # [N, D * C]
        helper.make_node("Reshape", ["domain_scores", "by_domain"], ["domain_scores_3d"]),  # [N, D, C]
        helper.make_node("ReduceMax", ["domain_scores_3d"], ["scores"], axes=[1], keepdims=0),  # [N, C]
    ]
    graph = helper.make_graph(
        nodes, "lifeguard_text_linear",
        inputs=[helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "ngrams"]),
                helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", "ngrams"])],
        outputs=[helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_categories])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lifeguard.models.train_text", ir_version=IR_VERSION)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def _used(examples: Sequence[Example], usage: str | None) -> list[DataSet]:
    """The data sets present in `examples` (of one usage, or all), in DATA_SETS order."""
    present = {example.data_set.name for example in examples}
    return [d for d in DATA_SETS if d.name in present and usage in (None, d.usage)]


def _hashes(data_dir: Path, data_sets: Sequence[DataSet]) -> dict[str, str]:
    """sha256 of every file read, keyed "data-set/file"."""
    return {f"{data_set.name}/{name}": hashlib.sha256((data_set.folder_in(data_dir) / name).read_bytes()).hexdigest()
            for data_set in data_sets for name in data_set.files}


def _describe(data_dir: Path, data_set: DataSet, examples: Sequence[Example]) -> dict:
    splits = [example.split for example in examples if example.data_set is data_set]
    return {
        "name": data_set.name,
        "usage": data_set.usage,
        "why": data_set.why,
        "sha256": _hashes(data_dir, [data_set]),
        "rows": {split: splits.count(split) for split in ("train", "val", "test")},
    }


def _label_counts(examples: Sequence[Example], categories: Sequence[str], domain: Domain) -> dict:
    """Positive / negative rows per category and split that the `domain`'s heads learn from."""
    training = [example for example in examples if example.data_set.usage == "train"]
    counts = {}
    for category in categories:
        counts[category] = {}
        for split in ("train", "val", "test"):
            _, labels = _rows(training, category, split, domain)
            counts[category][split] = {"positive": int(labels.sum()), "negative": int(len(labels) - labels.sum())}
    return counts


def _scored_test_rows(model: TextModel, examples: Sequence[Example], usage: str) -> tuple[list[Example], np.ndarray]:
    """The test rows of the data sets of `usage`, and their scores float[rows, categories]."""
    test = [example for example in examples if example.split == "test" and example.data_set.usage == usage]
    return test, _score(model, [example.record.text for example in test])


def _test_metrics(model: TextModel, test: Sequence[Example], scores: np.ndarray, base_rates: dict[str, float]) -> dict:
    """Per category: metrics over all scored test rows, and per data set, with calibration measured
    at the category's chat base rate."""
    report = {}
    for category in model.categories:
        rows, labels = _rows(test, category, "test")
        if not len(rows):
            continue
        sources = np.array([test[i].data_set.name for i in rows])
        predicted = scores[rows, model.categories.index(category)]
        names = sorted(set(sources))
        rate = base_rates[category]
        report[category] = {
            "data": names,
            **classification_metrics(labels, predicted, rate),
            "by_data_set": {name: classification_metrics(labels[sources == name], predicted[sources == name], rate)
                            for name in names},
        }
    return report


def _threshold_crossings(model: TextModel, test: Sequence[Example], scores: np.ndarray, policy: Policy,
                         band: AgeBand, policy_file: str) -> dict:
    """Per category the policy sets thresholds for: at each of the band's thresholds, the share of
    the scored test rows' negatives and positives that score at or above it."""
    report: dict = {"policy": policy_file, "policy_version": policy.version, "band": band.value,
                    "note": CROSSING_NOTE, "categories": {}}
    for category in model.categories:
        limits = policy.thresholds.get(category, {}).get(band)
        rows, labels = _rows(test, category, "test")
        if limits is None or not len(rows):
            continue
        predicted = scores[rows, model.categories.index(category)]
        report["categories"][category] = {
            "positives": int(labels.sum()), "negatives": int(len(labels) - labels.sum()),
            **{action: {"threshold": limit, **threshold_crossing(labels, predicted, limit)}
               for action in ("warn", "review", "block")
               if (limit := getattr(limits, action)) is not None},
        }
    return report


def threshold_crossing(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Share of negatives and of positives scoring at or above `threshold` (the policy's ">=")."""
    crossed = scores >= threshold
    return {"negatives": round(float(crossed[labels == 0].mean()), 4) if (labels == 0).any() else None,
            "positives": round(float(crossed[labels == 1].mean()), 4) if (labels == 1).any() else None}


def _identity_term_probe(model: TextModel, data_dir: Path) -> dict:
    """Mean toxicity and hate per identity term over the non-toxic identity templates (test split).

    The templates differ only in the term ("hug gay" / "hug asian"), so a fair model gives every term
    the same mean; the spread is bias learned from the training data.
    """
    templates = [(phrase, term) for phrase, term in nontoxic_identity_templates(data_dir) if split_of(phrase) == "test"]
    scores = _score(model, [phrase for phrase, _ in templates])
    terms = np.array([term for _, term in templates])
    probe: dict = {"data": "jigsaw-identity-templates, non-toxic rows, test split", "rows": len(templates)}
    for category in ("toxicity", "hate"):
        column = scores[:, model.categories.index(category)]
        means = {term: round(float(column[terms == term].mean()), 4) for term in sorted(set(terms))}
        probe[category] = {
            "mean": round(float(column.mean()), 4),
            "flagged_at_0.5": round(float(np.mean(column >= 0.5)), 4),
            "mean_by_term": dict(sorted(means.items(), key=lambda item: -item[1])),
        }
    return probe


def _score(model: TextModel, texts: Sequence[str]) -> np.ndarray:
    """float[len(texts), len(model.categories)], scored in batches as the job would."""
    rows = []
    for start in range(0, len(texts), SCORING_BATCH):
        rows += [[scores[c] for c in model.categories] for scores in model.score_batch(texts[start:start + SCORING_BATCH])]
    return np.array(rows).reshape(len(texts), len(model.categories))


def classification_metrics(labels: np.ndarray, scores: np.ndarray, base_rate: float) -> dict:
    """Ranking and calibration metrics of probabilities `scores` against 0/1 `labels`.

    Brier and ECE are computed with the rows re-weighted to `base_rate` (`prior_weights`), and named
    so: the probabilities are meant for that prior, not for the rows' own mix. Ranking metrics need both
    classes; with one class only the rate flagged at 0.5 is reported.
    """
    n_positive = int(labels.sum())
    n_negative = len(labels) - n_positive
    metrics: dict = {"positives": n_positive, "negatives": n_negative}
    if n_positive:
        metrics["recall_at_0.5"] = round(float(np.mean(scores[labels == 1] >= 0.5)), 4)
    if n_negative:
        metrics["false_positive_rate_at_0.5"] = round(float(np.mean(scores[labels == 0] >= 0.5)), 4)
    if n_positive and n_negative:
        weights = prior_weights(labels, base_rate)
        metrics |= {
            "roc_auc": round(roc_auc_score(labels, scores), 4),
            "roc_auc_95ci": [round(q, 4) for q in auc_interval(labels, scores, BOOTSTRAP_RESAMPLES, SEED)],
            "pr_auc": round(average_precision_score(labels, scores), 4),
            "recall_at_1pct_fpr": round(recall_at_fpr(labels, scores, FALSE_POSITIVE_BUDGET), 4),
            "brier_chat_reweighted": round(brier_score_loss(labels, scores, sample_weight=weights), 4),
            "ece_chat_reweighted": round(expected_calibration_error(labels, scores, weights), 4),
        }
    return metrics



if __name__ == "__main__":
    main()
