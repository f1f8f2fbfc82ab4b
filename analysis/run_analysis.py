"""Everything the report needs, computed from a run's tables (no I/O, no Ray)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.confident import flags_by_training, thresholds_by_training
from analysis.errors import confused_pairs, confusion_matrix, fit_table, per_class_errors
from analysis.probs import mean_probs_of, probs_matrix
from analysis.rule import RANKING_BELOW_ACCURACY, DupeRule
from analysis.scores import combined_score, label_quality
from analysis.thresholds import Threshold, parse_threshold
from analysis.votes import (count_votes, dupes_per_threshold, heldout_accuracy, most_confused,
                            rank_dupes, select_dupes)

REPORT_THRESHOLDS = ("10", ">=9", ">=8")
__all__ = ["Analysis", "analyze", "vote_table", "select", "prediction_arrays", "probs_matrix",
           "mean_probs_of", "dupes_export_table"]


@dataclass
class Analysis:
    """A run's vote table and summaries (built once), and the dupes one rule selects from it."""

    votes: pd.DataFrame           # one row per sample, with relpath and class names
    dupes: pd.DataFrame           # votes rows the rule selects, most suspect first
    accuracy: pd.DataFrame        # repeat, fold, n, accuracy
    per_threshold: dict[str, int]
    confused: pd.DataFrame        # given, suggested, count among the dupes
    rule: DupeRule
    n_prediction_rows: int
    classes: list[str]
    confusion: np.ndarray | None = None       # given x predicted, all held-out predictions
    per_class: pd.DataFrame | None = None     # error rate per given class
    pairs: pd.DataFrame | None = None         # most-confused (given, predicted) pairs
    fit: pd.DataFrame | None = None           # per training: train vs held-out accuracy
    num_issues: int | None = None             # cleanlab's estimate of wrong labels
    # cleanlab's uncalibrated off-diagonal count: the dupe set's size under weak models
    num_confident: int | None = None
    selected_by: str = "votes"                # how the dupes were chosen: votes or ranking
    selected_why: str = ""
    agreement: float | None = None            # how often two repeats predict an image alike
    mode: str | None = None                   # the models' kind: scratch, frozen, finetune

    @property
    def threshold(self) -> Threshold:
        return self.rule.votes

    @property
    def set_name(self) -> str:
        """What made the dupe set, in a few words: `>=8`, or `top 97 by combined`."""
        if self.selected_by == "ranking":
            return f"top {len(self.dupes):,} by {self.rule.rank}"
        return str(self.threshold)

    @property
    def min_ratio(self) -> float:
        return self.rule.min_ratio


FLAT_COLUMNS = ("sample_id", "repeat", "fold", "label", "pred", "loss", "prob_given")


def prediction_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """Flat arrays of a prediction table, with `prob_given` (the probability of the given
    label) in place of the n x C `probs`."""
    need = {"sample_id", "repeat", "fold", "label", "pred", "loss", "probs"}
    missing = sorted(need - set(table.column_names))
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    col = {name: table[name].to_numpy() for name in need - {"probs"}}
    probs = probs_matrix(table["probs"])
    label = col["label"].astype(np.int64)
    col["prob_given"] = probs[np.arange(len(probs)), label]
    # the whole table is here: each training's thresholds from its own rows, as the worker
    # records them for a run's streamed read
    col["confident"] = flags_by_training(label, probs, col["repeat"], col["fold"],
                                         thresholds_by_training(label, probs, col["repeat"],
                                                                col["fold"], probs.shape[1]))
    return col


def vote_table(index: pd.DataFrame, col: dict[str, np.ndarray], classes: list[str], *,
               confirmed: np.ndarray | None = None, dynamics: pd.DataFrame | None = None,
               scores: bool = True, neighbours: np.ndarray | None = None
               ) -> tuple[pd.DataFrame, tuple[int, int] | None]:
    """One row per sample: votes, losses, scores, class names; and cleanlab's two estimates
    of the number of wrong labels, calibrated and off-diagonal (None without scores).
    Independent of the dupe rule."""
    votes = count_votes(col["sample_id"], col["label"], col["pred"], col["loss"],
                        col["prob_given"], num_samples=len(index))
    names = np.asarray(classes, dtype=object)
    votes["relpath"] = index["relpath"].to_numpy()
    votes["given_class"] = names[index["label"].to_numpy().astype(np.int64)]
    top = votes["top_wrong_class"].to_numpy()
    votes["suggested_class"] = np.where(top >= 0, names[np.maximum(top, 0)], "")
    votes["confirmed"] = np.zeros(len(votes), bool) if confirmed is None else np.asarray(confirmed)
    if col.get("confident") is not None:  # trainings whose confident learning flags it
        votes["confident_votes"] = np.bincount(
            np.asarray(col["sample_id"], np.int64), weights=np.asarray(col["confident"], float),
            minlength=len(votes))[:len(votes)].astype(np.int16)
    num_issues = None
    mean_probs = col.get("mean_probs")
    if mean_probs is not None and len(mean_probs):
        rows = np.arange(len(votes))
        votes["mean_prob_suggested"] = np.where(
            top >= 0, mean_probs[:len(votes)][rows, np.maximum(top, 0)], np.nan).astype(np.float32)
        second, p_second = second_choice(mean_probs[:len(votes)], votes["label"].to_numpy(), top)
        votes["second_class"] = np.where(second >= 0, names[np.maximum(second, 0)], "")
        votes["mean_prob_second"] = p_second
    if scores and mean_probs is not None and len(mean_probs):
        labels = votes["label"].to_numpy().astype(np.int64)
        quality, votes["cl_issue"], *num_issues = label_quality(
            labels, mean_probs[:len(votes)], methods=("self_confidence", "normalized_margin"))
        num_issues = tuple(num_issues)
        for name in quality:
            votes[name] = quality[name].to_numpy(np.float32)
    if dynamics is not None:
        if len(dynamics) != len(votes):
            raise ValueError(f"dynamics has {len(dynamics)} rows for {len(votes)} samples")
        votes["aum"] = dynamics["aum"].to_numpy(np.float32)
        votes["forgetting"] = dynamics["forgetting"].to_numpy()
    if neighbours is not None:
        if len(neighbours) != len(votes):
            raise ValueError(f"neighbours has {len(neighbours)} rows for {len(votes)} samples")
        votes["neighbours"] = np.asarray(neighbours, np.float32)
    votes["combined"] = combined_score(votes.rename(columns={"top_wrong_votes": "votes"}))
    return votes, num_issues


def second_choice(mean_probs: np.ndarray, labels: np.ndarray, suggested: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The class the models find likeliest after the suggested one, neither being the given
    label, and its mean held-out probability (-1 and NaN where there is none). When the
    suggestion is wrong (a third of the real errors a new user found on CIFAR-10N), the
    right class is most often this one."""
    p = np.array(mean_probs, dtype=np.float32, copy=True)
    rows = np.arange(len(p))
    p[rows, np.asarray(labels, np.int64)] = -np.inf
    has = np.asarray(suggested) >= 0
    p[rows[has], np.asarray(suggested)[has]] = -np.inf
    second = p.argmax(1) if p.shape[1] else np.zeros(len(p), np.int64)
    prob = p[rows, second] if p.shape[1] else np.full(len(p), -np.inf)
    ok = np.isfinite(prob) & (p.shape[1] > 2)
    return np.where(ok, second, -1), np.where(ok, prob, np.nan).astype(np.float32)


def selection(analysis: Analysis, rule: DupeRule) -> tuple[str, str]:
    """Which way `rule` selects the dupes of `analysis` ("votes" or "ranking"), and why."""
    acc = float(analysis.accuracy["accuracy"].mean()) if len(analysis.accuracy) else float("nan")
    if rule.select == "votes":
        return "votes", "--select votes"
    if analysis.num_issues is None:
        return "votes", ("no estimate of the number of wrong labels (no probabilities)"
                         if rule.select == "ranking" else "--select auto, no estimate of "
                         "the number of wrong labels")
    if rule.select == "ranking":
        return "ranking", "--select ranking"
    evals = int(analysis.votes["n_evals"].max()) if len(analysis.votes) else 0
    if rule.votes.low > evals:  # e.g. --repeats 2: no image could ever be a dupe by votes
        return "ranking", (f"{evals} held-out prediction(s) per image cannot reach "
                           f"{rule.votes} votes")
    if acc < RANKING_BELOW_ACCURACY:
        return "ranking", (f"held-out accuracy {acc:.3f} is under {RANKING_BELOW_ACCURACY}: "
                           "votes of models this weak flag far too much (BENCHMARKS.md)")
    return "votes", f"held-out accuracy {acc:.3f}: the votes of strong models"


def select(analysis: Analysis, rule: DupeRule) -> Analysis:
    """The same analysis under another rule: only the selection runs again."""
    votes = analysis.votes
    pool = votes[~votes["confirmed"]] if rule.ignore_confirmed else votes
    how, why = selection(analysis, rule)
    dupes = select_dupes(pool, rule.votes, min_ratio=rule.min_ratio, rank=rule.rank)
    if how == "ranking":
        # how many: the smaller of two estimates that both overcount with weak models
        # (confident learning's, and the votes'); which: the most suspect by the ranking.
        # Measured on 12 passes (BENCHMARKS.md "Models that see"): at the votes' count the
        # ranking's set had better precision and recall than the votes' own in every case.
        # Confident learning's count before calibration: calibrating scales each class's
        # confident counts up to all its labels, so the models' own mistakes count in
        # proportion (10 passes selecting by ranking, BENCHMARKS.md: mean F1 0.521 against
        # 0.504 with the calibrated one)
        #
        # Where each training recorded its thresholds, a third estimate: the images confident
        # learning flags in `rule.votes` of their held-out predictions (>= 8 of 10), each
        # training's predictions tested on their own. One count on the mean probabilities
        # takes in whatever a weak model's mean leans to; a flag that holds in 8 of 10
        # trainings is the votes' own idea, and with 10 repeats it is the smallest of the
        # three on every pass measured (BENCHMARKS.md "Which count": the photos' set 123
        # images at P 0.634 / R 0.780, where the count of the mean took 161 at P 0.522; under
        # heavier noise it trades recall for precision, said there).
        estimate = int(analysis.num_confident if analysis.num_confident is not None
                       else analysis.num_issues)
        evals = int(pool["n_evals"].max()) if len(pool) else 0
        if rule.count == "mean":  # --count mean: recall first, the user's choice
            count = estimate
            why = (f"{why}; as many as the images confident learning counts as confidently "
                   f"mislabelled in their mean ({estimate:,}; --count mean)")
        elif "confident_votes" in pool and rule.votes.low <= evals:
            steady = int(rule.votes.mask(pool["confident_votes"].to_numpy()).sum())
            count = min(estimate, len(dupes), steady)
            why = (f"{why}; as many as the smallest of the images confident learning flags "
                   f"in {rule.votes} of their held-out predictions ({steady:,}), the images "
                   f"it counts as confidently mislabelled in their mean ({estimate:,}) and "
                   f"the images the votes flag ({len(dupes):,})")
        elif rule.votes.low <= evals:
            count = min(estimate, len(dupes))
            why = (f"{why}; as many as the smaller of the images confident learning counts "
                   f"as confidently mislabelled ({estimate:,}) and the images the votes flag "
                   f"({len(dupes):,})")
        else:  # too few repeats for the threshold: the estimate alone
            count = estimate
            why = (f"{why}; as many as the images confident learning counts as confidently "
                   f"mislabelled ({estimate:,})")
        dupes = rank_dupes(pool, count=count, rank=rule.rank)
    per_threshold = dupes_per_threshold(votes, [parse_threshold(t) for t in REPORT_THRESHOLDS],
                                        min_ratio=rule.min_ratio)
    per_threshold.setdefault(str(rule.votes), len(dupes))
    return replace(analysis, dupes=dupes, per_threshold=per_threshold,
                   confused=most_confused(dupes), rule=rule, selected_by=how,
                   selected_why=why)


def analyze(index: pd.DataFrame, predictions: pa.Table | dict, classes: list[str], *,
            rule: DupeRule = DupeRule(), confirmed: np.ndarray | None = None,
            dynamics: pd.DataFrame | None = None, train_accuracy: dict | None = None,
            scores: bool = True, neighbours: np.ndarray | None = None) -> Analysis:
    """Votes, dupes, scores, per-training accuracy and error analysis of one run.

    `index` has `sample_id, relpath, label, class_name`; `predictions` the long-format
    held-out predictions (`sample_id, repeat, fold, label, pred, loss, probs`), as a table or
    as flat arrays with `prob_given` in place of `probs` (see `Run.prediction_columns`;
    its optional `mean_probs`, samples x classes, enables cleanlab's scores and the rule's
    ratio). `confirmed` marks samples a technician confirmed as correctly labelled; `rule`
    says which images are dupes (`DupeRule`). `dynamics` (from `dynamics_scores`) adds `aum`
    and `forgetting`; `train_accuracy` maps (repeat, fold) to the training accuracy for the
    fit table; `neighbours` (from `analysis.neighbours.neighbour_agreement`) adds the
    neighbour score. Every sample gets a `combined` suspect score in [0, 1].
    """
    if not isinstance(rule, DupeRule):
        raise ValueError(f"rule must be a DupeRule, got {type(rule).__name__}")
    if not isinstance(predictions, dict):
        table = predictions
        predictions = prediction_arrays(table)
        if scores:
            predictions["mean_probs"] = mean_probs_of(table, num_samples=len(index))
    missing = sorted(set(FLAT_COLUMNS) - set(predictions))
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    col = {name: np.asarray(predictions[name]) for name in FLAT_COLUMNS}
    col["mean_probs"] = predictions.get("mean_probs")
    col["confident"] = predictions.get("confident")
    votes, counts = vote_table(index, col, classes, confirmed=confirmed, dynamics=dynamics,
                               scores=scores, neighbours=neighbours)
    num_issues, num_confident = counts if counts is not None else (None, None)
    accuracy = heldout_accuracy(col["repeat"], col["fold"], col["label"], col["pred"])
    confusion = confusion_matrix(col["label"], col["pred"], num_classes=len(classes))
    summary = Analysis(votes, votes.iloc[:0], accuracy, {}, most_confused(votes.iloc[:0]), rule,
                       len(col["prob_given"]), list(classes), confusion=confusion,
                       per_class=per_class_errors(confusion, list(classes)),
                       pairs=confused_pairs(confusion, list(classes)),
                       fit=fit_table(accuracy, train_accuracy or {}), num_issues=num_issues,
                       num_confident=num_confident,
                       agreement=model_agreement(col["sample_id"], col["pred"],
                                                 num_samples=len(index),
                                                 num_classes=len(classes)))
    return select(summary, rule)


def model_agreement(sample_id: np.ndarray, pred: np.ndarray, *, num_samples: int,
                    num_classes: int) -> float | None:
    """The chance that two held-out predictions of the same image (by different trainings)
    name the same class, averaged over the images with two or more; None without any.
    Models that learned the images agree whatever their labels; models near chance do not."""
    sample_id, pred = np.asarray(sample_id, np.int64), np.asarray(pred, np.int64)
    if len(pred) == 0 or num_classes < 1:
        return None
    # per (image, class) counts from the predictions themselves: memory follows the
    # predictions (10 per image), not images x classes (8 GB at 10M images and 100 classes)
    pair, counts = np.unique(sample_id * num_classes + pred, return_counts=True)
    same = np.bincount(pair // num_classes, weights=counts * (counts - 1.0),
                       minlength=num_samples)
    n = np.bincount(sample_id, minlength=num_samples).astype(np.float64)
    ok = n >= 2
    if not ok.any():
        return None
    return float((same[ok] / (n[ok] * (n[ok] - 1))).mean())


def dupes_export_table(dupes: pd.DataFrame) -> pd.DataFrame:
    """The columns of dupes.csv / dupes.parquet, in the order a reviewer reads them."""
    return pd.DataFrame({
        "sample_id": dupes["sample_id"].to_numpy(),
        "relpath": dupes["relpath"].to_numpy(),
        "given_class": dupes["given_class"].to_numpy(),
        "suggested_class": dupes["suggested_class"].to_numpy(),
        "votes": dupes["top_wrong_votes"].to_numpy(),
        "n_evals": dupes["n_evals"].to_numpy(),
        "mean_loss": dupes["mean_loss"].to_numpy(),
        "mean_prob_given": dupes["mean_prob_given"].to_numpy(),
        "mean_prob_suggested": (dupes["mean_prob_suggested"].to_numpy()
                                if "mean_prob_suggested" in dupes else np.nan),
        "second_class": (dupes["second_class"].to_numpy() if "second_class" in dupes else ""),
        "mean_prob_second": (dupes["mean_prob_second"].to_numpy()
                             if "mean_prob_second" in dupes else np.nan),
        "confirmed": dupes["confirmed"].to_numpy(),
    })
