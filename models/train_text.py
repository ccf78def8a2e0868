"""Trains the linear text model and exports it as one ONNX graph, with a manifest of what went in.

    python -m models.train_text --out models/build/text_linear.onnx

One logistic regression per category over hashed character n-grams (`udfs.text_features`), fitted on
the ``train`` split of the data sets marked for training (`models.datasets`), then Platt-calibrated
on the ``val`` split. The calibration is folded into the weights, so the graph is simply

    ids int64[N, L], weights float32[N, L]
      -> Gather(W float32[n_features, C], ids)       # [N, L, C]
      -> Mul(weights[..., None]) -> ReduceSum(L)     # [N, C]
      -> Add(bias float32[C]) -> Sigmoid             # scores float32[N, C]

Categories are the ones the training data labels (``pii`` has none: rules handle it). Metrics in the
manifest (``text_linear.manifest.json`` beside the model) are computed on the ``test`` split only,
by the exported graph itself through `udfs.text_model.TextModel`. Training is deterministic: the
hashing is seedless, liblinear's shuffling is seeded, and the manifest has no timestamps.
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
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from models.datasets import DATA_SETS, DEFAULT_DATA_DIR, DataSet, LabelledText, load, nontoxic_identity_templates
from models.splits import split_of
from udfs.text_features import FeaturizerParams, vectorize
from udfs.text_model import CATEGORIES, TextModel

VERSION = "text-linear-1"

# Chosen on the val split (sweep in models/README.md): word-bounded 3-5-grams beat 2-5 and 1-4 on the
# small categories, and 2**16 columns scored the same as 2**17 and 2**18 at a quarter of the size.
FEATURIZER = FeaturizerParams(n_features=2**16, ngram_range=(3, 5), analyzer="char_wb")
REGULARISATION_C = 4.0
SEED = 0

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime the project allows (>= 1.19)

FALSE_POSITIVE_BUDGET = 0.01  # for "recall at 1% FPR"
CALIBRATION_BINS = 10
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
    # Only what the data labels: pii has no training data, so the model does not score it.
    categories = tuple(c for c in CATEGORIES if any(c in example.record.labels for example in training))

    features = vectorize([example.record.text for example in training], FEATURIZER)
    heads = {category: fit_calibrated(features, training, category) for category in categories}

    metadata = {
        "version": VERSION,
        "categories": json.dumps(list(categories)),
        "featurizer": FEATURIZER.to_json(),
        "training_data_sha256": json.dumps(_hashes(args.data_dir, _used(examples, "train")), sort_keys=True),
    }
    weights = np.stack([head.weights for head in heads.values()], axis=1)
    bias = np.array([head.bias for head in heads.values()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_graph(weights, bias, metadata), args.out)

    command = ["python", "-m", "models.train_text", *(sys.argv[1:] if argv is None else argv)]
    manifest = build_manifest(args, shlex.join(command), examples, heads)
    manifest_path = args.out.with_name(args.out.stem + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) and {manifest_path.name} "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def build_manifest(args: argparse.Namespace, command: str, examples: Sequence[Example],
                   heads: dict[str, "Head"]) -> dict:
    """What went into the model and how it scores on the test split, measured through the exported
    graph itself (the same code path as the job)."""
    text_model = TextModel.load(args.out, prefer_gpu=False)
    return {
        "model": args.out.name,
        "version": VERSION,
        "command": command,
        "categories": list(heads),
        "featurizer": json.loads(FEATURIZER.to_json()),
        "classifier": {
            "kind": "logistic regression per category (liblinear, L2)",
            "C": REGULARISATION_C, "class_weight": "balanced", "seed": SEED,
            "calibration": "Platt scaling on the val split, folded into the weights. Probabilities are "
                           "calibrated to the val split's mix of data sets (val_positive_rate), not to chat.",
            "heads": {category: head.describe() for category, head in heads.items()},
        },
        "data": [_describe(args.data_dir, data_set, examples) for data_set in _used(examples, None)],
        "labelled_rows": _label_counts(examples, list(heads)),
        "test_metrics": _test_metrics(text_model, examples, "train"),
        "evaluation_only_test_metrics": _test_metrics(text_model, examples, "eval_only"),
        "identity_term_probe": _identity_term_probe(text_model, args.data_dir),
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.train_text", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared/data folder")
    return parser.parse_args(argv)


def load_examples(data_dir: Path) -> list[Example]:
    return [Example(record, data_set, split_of(record.text))
            for data_set in DATA_SETS for record in load(data_set, data_dir)]


def _rows(examples: Sequence[Example], category: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of the examples in `split` that label `category`."""
    chosen = [i for i, example in enumerate(examples) if example.split == split and category in example.record.labels]
    return np.array(chosen, dtype=np.int64), np.array([examples[i].record.labels[category] for i in chosen])


@dataclass(frozen=True)
class Head:
    """One category's column of the model, with Platt scaling already folded in."""

    weights: np.ndarray  # float32[n_features]
    bias: float
    platt_slope: float
    platt_intercept: float
    val_positive_rate: float  # the prior the probabilities are calibrated to

    def describe(self) -> dict:
        return {"platt_slope": round(self.platt_slope, 6), "platt_intercept": round(self.platt_intercept, 6),
                "val_positive_rate": round(self.val_positive_rate, 4)}


def fit_calibrated(features, examples: Sequence[Example], category: str) -> Head:
    train_rows, train_labels = _rows(examples, category, "train")
    # Balanced weights keep rare positives (threat: 1 in 60) from being ignored; Platt scaling on the
    # val split then restores probabilities at that split's real mix.
    classifier = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", solver="liblinear",
                                    max_iter=1000, random_state=SEED)
    classifier.fit(features[train_rows], train_labels)
    val_rows, val_labels = _rows(examples, category, "val")
    slope, intercept = platt_scaling(classifier.decision_function(features[val_rows]), val_labels)
    # sigmoid(slope * (w.x + b) + intercept) == sigmoid((slope * w).x + (slope * b + intercept))
    return Head(
        weights=(slope * classifier.coef_[0]).astype(np.float32),
        bias=float(slope * classifier.intercept_[0] + intercept),
        platt_slope=slope,
        platt_intercept=intercept,
        val_positive_rate=float(val_labels.mean()),
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


def build_graph(weights: np.ndarray, bias: np.ndarray, metadata: dict[str, str]) -> onnx.ModelProto:
    """The linear model as ONNX: see the module docstring for the ops and shapes."""
    n_categories = weights.shape[1]
    initializers = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ngram_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["W", "ids"], ["ngram_scores"], axis=0),  # [N, L, C]
        helper.make_node("Unsqueeze", ["weights", "last_axis"], ["ngram_weights"]),  # [N, L, 1]
        helper.make_node("Mul", ["ngram_scores", "ngram_weights"], ["weighted"]),  # [N, L, C]
        helper.make_node("ReduceSum", ["weighted", "ngram_axis"], ["dot"], keepdims=0),  # [N, C]
        helper.make_node("Add", ["dot", "bias"], ["logits"]),  # [N, C]
        helper.make_node("Sigmoid", ["logits"], ["scores"]),  # [N, C]
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
    return {f"{data_set.name}/{name}": hashlib.sha256((data_dir / data_set.name / name).read_bytes()).hexdigest()
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


def _label_counts(examples: Sequence[Example], categories: Sequence[str]) -> dict:
    """Positive / negative rows per category and split, over the data sets trained on."""
    training = [example for example in examples if example.data_set.usage == "train"]
    counts = {}
    for category in categories:
        counts[category] = {}
        for split in ("train", "val", "test"):
            _, labels = _rows(training, category, split)
            counts[category][split] = {"positive": int(labels.sum()), "negative": int(len(labels) - labels.sum())}
    return counts


def _test_metrics(model: TextModel, examples: Sequence[Example], usage: str) -> dict:
    """Per category: metrics over all test rows of the data sets of `usage`, and per data set."""
    test = [example for example in examples if example.split == "test" and example.data_set.usage == usage]
    scores = _score(model, [example.record.text for example in test])
    report = {}
    for category in model.categories:
        rows, labels = _rows(test, category, "test")
        if not len(rows):
            continue
        sources = np.array([test[i].data_set.name for i in rows])
        predicted = scores[rows, model.categories.index(category)]
        names = sorted(set(sources))
        report[category] = {
            "data": names,
            **classification_metrics(labels, predicted),
            "by_data_set": {name: classification_metrics(labels[sources == name], predicted[sources == name])
                            for name in names},
        }
    return report


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


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """Ranking and calibration metrics of probabilities `scores` against 0/1 `labels`.

    Ranking metrics need both classes; with one class only the rate flagged at 0.5 is reported.
    """
    n_positive = int(labels.sum())
    n_negative = len(labels) - n_positive
    metrics: dict = {"positives": n_positive, "negatives": n_negative}
    if n_positive:
        metrics["recall_at_0.5"] = round(float(np.mean(scores[labels == 1] >= 0.5)), 4)
    if n_negative:
        metrics["false_positive_rate_at_0.5"] = round(float(np.mean(scores[labels == 0] >= 0.5)), 4)
    if n_positive and n_negative:
        metrics |= {
            "roc_auc": round(roc_auc_score(labels, scores), 4),
            "roc_auc_95ci": _bootstrap_auc_interval(labels, scores),
            "pr_auc": round(average_precision_score(labels, scores), 4),
            "recall_at_1pct_fpr": round(recall_at_false_positive_rate(labels, scores, FALSE_POSITIVE_BUDGET), 4),
            "brier": round(brier_score_loss(labels, scores), 4),
            "ece": round(expected_calibration_error(labels, scores), 4),
        }
    return metrics


def recall_at_false_positive_rate(labels: np.ndarray, scores: np.ndarray, budget: float) -> float:
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    return float(true_positive_rate[false_positive_rate <= budget].max())


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean |predicted - observed| over 10 equal-width probability bins, weighted by bin size."""
    bins = np.minimum((scores * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        error += in_bin.mean() * abs(scores[in_bin].mean() - labels[in_bin].mean())
    return float(error)


def _bootstrap_auc_interval(labels: np.ndarray, scores: np.ndarray) -> list[float]:
    """A 95% percentile bootstrap interval: several test sets have fewer than 10 positives."""
    rng = np.random.default_rng(SEED)
    aucs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        sample = rng.integers(0, len(labels), len(labels))
        if 0 < labels[sample].sum() < len(sample):
            aucs.append(_rank_auc(labels[sample], scores[sample]))
    return [round(float(q), 4) for q in np.percentile(aucs, [2.5, 97.5])]


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half): equal to roc_auc_score, and fast
    enough to run hundreds of times per metric."""
    positive = labels == 1
    n_positive, n_negative = positive.sum(), (~positive).sum()
    rank_sum = rankdata(scores)[positive].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


if __name__ == "__main__":
    main()
