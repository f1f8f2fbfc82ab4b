"""Rich renderables for a run's report, built by pure functions from an Analysis."""
from __future__ import annotations

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from analysis.columns import shown
from analysis.quality import advice, noise_ceiling, quality_warnings
from analysis.run_analysis import Analysis
from analysis.sections import Section, class_errors_section, score_cells, thresholds_section

# the terminal's dupes table is narrow: these scores of the registry (the HTML shows them all)
DUPES_TABLE_SCORES = ("mean_loss", "mean_prob_given", "mean_prob_suggested")


def accuracy_table(analysis: Analysis, seconds: dict[tuple[int, int], float] | None = None) -> Table:
    """Held-out accuracy of every training against the given labels, a row per repeat."""
    acc = analysis.accuracy
    table = Table(title="held-out accuracy per training (vs given labels)", header_style="bold")
    for col in ("repeat", "fold 0", "fold 1", "mean"):
        table.add_column(col, justify="right")
    by = {(int(r), int(f)): a for r, f, a in acc[["repeat", "fold", "accuracy"]].to_numpy()}
    seconds = seconds or {}
    for r in sorted({k[0] for k in by}):
        cells = []
        for f in (0, 1):
            a = by.get((r, f))
            s = seconds.get((r, f))
            cells.append("missing" if a is None else f"{a:.4f}" + (f" ({s:.1f}s)" if s else ""))
        vals = [by[(r, f)] for f in (0, 1) if (r, f) in by]
        table.add_row(str(r), *cells, f"{np.mean(vals):.4f}")
    if len(acc):
        table.add_section()
        table.add_row("all", "", "", f"{acc['accuracy'].mean():.4f}")
    return table


def rich_table(section: Section) -> Table:
    """A report section (`analysis.sections`) as a rich table."""
    table = Table(title=section.title, header_style="bold")
    for label, left in section.header:
        table.add_column(label, justify="left" if left else "right")
    for i, row in enumerate(section.rows):
        mark = section.marks[i] if section.marks else ""
        table.add_row(*[c.text + (mark if j == 0 else "") for j, c in enumerate(row)])
    return table


def selection_text(analysis: Analysis) -> Text:
    """Which rule made the dupe set, and why."""
    if analysis.selected_by == "ranking":
        what = f"the {len(analysis.dupes):,} most suspect images by {analysis.rule.rank}"
    else:
        what = f"{analysis.threshold} votes for one wrong class" + (
            f" and p(suggested) >= {analysis.min_ratio:g} x p(given)" if analysis.min_ratio else "")
    return Text(f"dupes: {what} ({analysis.selected_why})" if analysis.selected_why
                else f"dupes: {what}")


def threshold_table(analysis: Analysis) -> Table:
    return rich_table(thresholds_section(analysis))


def confused_table(analysis: Analysis, *, top: int = 10) -> Table:
    table = Table(title=f"most confused pairs among dupes ({analysis.set_name})",
                  header_style="bold")
    table.add_column("given class")
    table.add_column("suggested class")
    table.add_column("dupes", justify="right")
    names = analysis.classes
    for given, sugg, count in analysis.confused.head(top).to_numpy():
        table.add_row(names[int(given)], names[int(sugg)], str(int(count)))
    return table


def dupes_table(analysis: Analysis, *, top: int = 20) -> Table:
    table = Table(title=f"top {top} dupes ({analysis.set_name}, of {len(analysis.dupes):,})",
                  header_style="bold")
    scores = shown(DUPES_TABLE_SCORES)
    for col, just in [("relpath", "left"), ("given", "left"), ("suggested", "left"),
                      ("votes", "right"), *[(c.label, "right") for c in scores]]:
        table.add_column(col, justify=just, overflow="fold")
    marks = bool(analysis.dupes["confirmed"].any())
    if marks:
        table.add_column("confirmed", justify="center")
    for row in analysis.dupes.head(top).itertuples():
        cells = [row.relpath, row.given_class, row.suggested_class,
                 f"{row.top_wrong_votes}/{row.n_evals}",
                 *[c.text for c in score_cells(row, scores)]]
        table.add_row(*cells, *(["yes" if row.confirmed else ""] if marks else []))
    if marks:
        table.caption = "confirmed: a technician kept this label in an earlier review"
    return table


def fit_table(analysis: Analysis) -> Table | None:
    """Training vs held-out accuracy over all trainings, with what the gap suggests."""
    fit = analysis.fit
    if fit is None or fit["train_accuracy"].isna().all():
        return None
    table = Table(title="fit: training vs held-out accuracy (vs given labels)",
                  header_style="bold")
    for col in ("trainings", "train acc", "held-out acc", "gap", "reading"):
        table.add_column(col, justify="left" if col == "reading" else "right")
    tr, ho = fit["train_accuracy"].mean(), fit["heldout_accuracy"].mean()
    gap = tr - ho
    ceiling = noise_ceiling(analysis)
    # not "train longer": on CIFAR-10N "worse" 29 epochs instead of 12 lowered the accuracy
    reading = ("large gap: the models memorise their half; more augmentation or fewer epochs"
               if gap > 0.1 else "healthy" if ho >= min(0.7, 0.9 * ceiling) else
               f"small gap, low accuracy: the models underfit, or the labels are noisy (a "
               f"perfect model would score about {ceiling:.2f} against them); "
               f"{advice(analysis.mode)}")
    table.add_row(str(len(fit)), f"{tr:.4f}", f"{ho:.4f}", f"{gap:+.4f}", reading)
    table.caption = "train acc: augmented training half, last epoch"
    return table


def class_errors_table(analysis: Analysis, *, top: int = 10) -> Table | None:
    """The given classes with the highest held-out error rates."""
    section = class_errors_section(analysis, top=top)
    return rich_table(section) if section is not None else None


def pairs_table(analysis: Analysis, *, top: int = 10) -> Table | None:
    """Most-confused (given, predicted) pairs over all held-out predictions."""
    if analysis.pairs is None:
        return None
    table = Table(title="most confused pairs over all held-out predictions",
                  header_style="bold")
    for col in ("given", "predicted", "predictions", "share of given"):
        table.add_column(col, justify="right" if col in ("predictions", "share of given")
                         else "left")
    for r in analysis.pairs.head(top).itertuples():
        table.add_row(str(r.given), str(r.predicted), f"{r.count:,}", f"{r.share_of_given:.2%}")
    return table


def second_opinion_table(analysis: Analysis) -> Table | None:
    """How cleanlab's confident learning agrees with the votes, on the same predictions."""
    votes = analysis.votes
    if "cl_issue" not in votes:
        return None
    dupe = np.zeros(len(votes), bool)
    dupe[analysis.dupes["sample_id"].to_numpy()] = True
    cl = votes["cl_issue"].to_numpy(bool)
    table = Table(title="second opinion: confident learning (cleanlab) on the mean "
                        "out-of-sample probabilities", header_style="bold")
    for col in ("estimated wrong labels", "flagged by cleanlab", f"dupes ({analysis.set_name})",
                "both", "cleanlab only", "dupes only"):
        table.add_column(col, justify="right")
    table.add_row(f"{analysis.num_issues:,}" if analysis.num_issues is not None else "-",
                  f"{cl.sum():,}", f"{dupe.sum():,}", f"{(cl & dupe).sum():,}",
                  f"{(cl & ~dupe).sum():,}", f"{(dupe & ~cl).sum():,}")
    return table


def quality_text(analysis: Analysis) -> Text | None:
    """The model-quality gate (`analysis/quality.py`), first in the report when it fires."""
    warnings = quality_warnings(analysis)
    if not warnings:
        return None
    text = Text("the votes of this run may not be trustworthy:\n", style="bold yellow")
    for w in warnings:
        text.append(f"  - {w}\n")
    return text


def report(analysis: Analysis, *, seconds: dict | None = None, top: int = 20) -> Group:
    """The whole report: accuracy per training and fit, dupes per threshold, the second
    opinion, error analysis, confusions among dupes, top dupes."""
    parts = [quality_text(analysis), accuracy_table(analysis, seconds), fit_table(analysis),
             threshold_table(analysis), selection_text(analysis),
             second_opinion_table(analysis), class_errors_table(analysis),
             pairs_table(analysis), confused_table(analysis), dupes_table(analysis, top=top)]
    return Group(*[p for p in parts if p is not None])


def top_losses_table(rows, *, title: str) -> Table:
    """Rows with relpath, given/suggested class, votes, n_evals, mean/max loss, p(given),
    and the training-dynamics scores (AUM, forgetting) when the run recorded epochs."""
    table = Table(title=title, header_style="bold")
    dyn = "aum" in rows
    for col, just in [("rank", "right"), ("relpath", "left"), ("given", "left"),
                      ("most voted wrong", "left"), ("votes", "right"), ("mean loss", "right"),
                      ("max loss", "right"), ("p(given)", "right")] + (
                          [("AUM", "right"), ("forgot", "right")] if dyn else []):
        table.add_column(col, justify=just, overflow="fold")
    for r in rows.itertuples():
        table.add_row(str(r.rank), r.relpath, r.given_class, r.suggested_class or "-",
                      f"{r.top_wrong_votes}/{r.n_evals}", f"{r.mean_loss:.2f}",
                      f"{r.max_loss:.2f}", f"{r.mean_prob_given:.3f}",
                      *([f"{r.aum:.3f}", str(r.forgetting)] if dyn else []))
    if dyn:
        table.caption = ("AUM: mean held-out margin p(given) - max p(other) over the recorded "
                         "epochs (< 0: another class wins); forgot: correct-to-wrong flips")
    return table


def format_duration(seconds: float) -> str:
    """`42 s`, `12.5 min`, `2 h 05 min`."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def model_and_training(d: dict) -> list[tuple[str, str]]:
    """The "model" and "training" rows of a plan or of a run's hyperparameters (both dicts
    name them alike): one wording in the printed plan and in the report."""
    model = str(d.get("model", "?"))
    mode = d.get("mode")
    if mode == "frozen":  # heads on a backbone's features: no epochs, no augmentation
        weights = d.get("weights_name")
        head = (f"MLP ({d.get('head_hidden')} hidden), {d.get('head_epochs')} epochs"
                if d.get("head_hidden") else f"logistic regression, L2 {d.get('head_l2')}")
        return [("model", f"frozen {d.get('backbone')} features at {d.get('embed_size')} px"
                          + (", with its last 3 stages'" if d.get("embed_stages") else "")
                          + (f" ({weights}, sha256 {str(d.get('weights_sha256'))[:12]})"
                             if weights else "")),
                ("training", f"a head per training: {head}" + (
                    ", fit again without what a cross-fit on its half flags"
                    if d.get("head_prune") else ""))]
    if mode == "finetune":
        model = f"{model} fine-tuned from its pretrained weights"
    training = (f"{d.get('epochs')} epochs, batch {d.get('batch_size')}"
                + (f", lr {d['lr']}" if "lr" in d else "")
                + (", flips" if d.get("flip") else ", no flips")
                + f", shifts up to {d.get('translate')} px")
    small = f"{model} (width {d.get('width')}" + (", whitening)" if d.get("whiten") else ")")
    return [("model", small if model == "smallcnn" else model),
            ("training", training)]


def model_settings(config: dict) -> dict:
    """A run's hyperparameters with what made its features, if any (config.json's `hyp` and
    `embedding`): what `model_and_training` words."""
    hyp, emb = dict(config.get("hyp", {})), config.get("embedding") or {}
    if emb:
        hyp.update(embed_size=emb.get("size"), weights_name=emb.get("weights"),
                   weights_sha256=emb.get("sha256"), backbone=emb.get("backbone"),
                   embed_stages=bool(emb.get("stages")))
    return hyp


def provenance_text(config: dict) -> Text:
    """One line: which model, mode and weights produced a run's votes."""
    (_, model), (_, training) = model_and_training(model_settings(config))
    return Text(f"votes from: {model}; {training}")


def trained_settings(config: dict, classes: dict) -> list[tuple[str, str]]:
    """(setting, value and why) of what the run trained: the resolved model, size and aspect
    policy, and every hyperparameter the pass chose, with its reason (config.json's
    `hyp_chosen`); the report shows them so a reader knows what the votes come from."""
    hyp, chosen = model_settings(config), config.get("hyp_chosen") or {}
    size, channels = classes.get("image_size"), classes.get("channels")
    model, training = model_and_training(hyp)
    rows = [model, ("image size", f"{size}x{size}x{channels}, {classes.get('aspect', 'pad')}"),
            training, *chosen.items()]
    given = set(config.get("hyp_set") or [])
    if given:
        rows.append(("given", ", ".join(sorted(given))))
    return rows
