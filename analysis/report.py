"""Rich renderables for a run's report, built by pure functions from an Analysis."""
from __future__ import annotations

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from analysis.quality import quality_warnings
from analysis.run_analysis import Analysis


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


def threshold_table(analysis: Analysis) -> Table:
    bound = (f" and p(suggested) >= {analysis.min_ratio:g} x p(given)"
             if analysis.min_ratio else "")
    table = Table(title="dupes per vote threshold" + bound, header_style="bold")
    table.add_column("votes for one wrong class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    n = max(len(analysis.votes), 1)
    for thr, count in analysis.per_threshold.items():
        mark = "  <- selected" if thr == str(analysis.threshold) else ""
        table.add_row(thr + mark, f"{count:,}", f"{count / n:.2%}")
    return table


def confused_table(analysis: Analysis, *, top: int = 10) -> Table:
    table = Table(title=f"most confused pairs among dupes ({analysis.threshold})",
                  header_style="bold")
    table.add_column("given class")
    table.add_column("suggested class")
    table.add_column("dupes", justify="right")
    names = analysis.classes
    for given, sugg, count in analysis.confused.head(top).to_numpy():
        table.add_row(names[int(given)], names[int(sugg)], str(int(count)))
    return table


def dupes_table(analysis: Analysis, *, top: int = 20) -> Table:
    table = Table(title=f"top {top} dupes ({analysis.threshold}, of {len(analysis.dupes):,})",
                  header_style="bold")
    for col, just in [("relpath", "left"), ("given", "left"), ("suggested", "left"),
                      ("votes", "right"), ("mean loss", "right"), ("p(given)", "right"),
                      ("p(suggested)", "right")]:
        table.add_column(col, justify=just, overflow="fold")
    marks = bool(analysis.dupes["confirmed"].any())
    if marks:
        table.add_column("confirmed", justify="center")
    for row in analysis.dupes.head(top).itertuples():
        cells = [row.relpath, row.given_class, row.suggested_class,
                 f"{row.top_wrong_votes}/{row.n_evals}", f"{row.mean_loss:.2f}",
                 f"{row.mean_prob_given:.3f}",
                 f"{getattr(row, 'mean_prob_suggested', float('nan')):.3f}"]
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
    reading = ("large gap: the models memorise their half; more augmentation or fewer epochs"
               if gap > 0.1 else "small gap, low accuracy: the models underfit; train longer "
               "or use a bigger model" if ho < 0.7 else "healthy")
    table.add_row(str(len(fit)), f"{tr:.4f}", f"{ho:.4f}", f"{gap:+.4f}", reading)
    table.caption = "train acc: augmented training half, last epoch"
    return table


def class_errors_table(analysis: Analysis, *, top: int = 10) -> Table | None:
    """The given classes with the highest held-out error rates."""
    if analysis.per_class is None:
        return None
    table = Table(title=f"held-out error rate per given class (worst {top})",
                  header_style="bold")
    for col in ("class", "predictions", "error rate", "most taken for", "share of errors",
                "precision"):
        table.add_column(col, justify="left" if col in ("class", "most taken for") else "right")
    for r in analysis.per_class.head(top).itertuples():
        table.add_row(str(r[1]), f"{r.n:,}", f"{r.error_rate:.2%}", str(r.most_taken_for),
                      f"{r.share_of_errors:.0%}", f"{r.precision:.3f}")
    return table


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
    for col in ("estimated wrong labels", "flagged by cleanlab", f"dupes ({analysis.threshold})",
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
             threshold_table(analysis),
             second_opinion_table(analysis), class_errors_table(analysis),
             pairs_table(analysis), confused_table(analysis), dupes_table(analysis, top=top)]
    return Group(*[p for p in parts if p is not None])


def manifest_tables(per_action, pairs) -> Group:
    """What a review decided: counts per action and per relabel (given -> new) pair."""
    actions = Table(title="review actions", header_style="bold")
    actions.add_column("action")
    actions.add_column("images", justify="right")
    meaning = {"confirm": "label kept, remembered", "relabel": "label changed",
               "remove": "dropped from the dataset", "unsure": "no change, asked again"}
    actions.add_column("meaning")
    for action, count in per_action.items():
        actions.add_row(action, str(int(count)), meaning.get(action, ""))
    moves = Table(title="relabels per class pair", header_style="bold")
    for col in ("from", "to"):
        moves.add_column(col)
    moves.add_column("images", justify="right")
    for old, new, count in pairs.to_numpy():
        moves.add_row(str(old), str(new), str(int(count)))
    return Group(actions, moves)


def problems_table(problems) -> Table:
    """Everything in a review folder that could not be read as an action, with its fix."""
    table = Table(title=f"{len(problems)} problem(s): nothing was written", header_style="bold red")
    for col in ("file", "problem", "fix"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(p.path, p.issue, p.fix)
    return table


def rounds_table(rounds: list[dict]) -> Table:
    """Before and after a review: dupes, held-out accuracy and planted errors per round."""
    table = Table(title="review rounds", header_style="bold")
    cols = [("round", "round"), ("images", "n_samples"), ("dupes", "n_dupes"),
            ("new dupes", "n_dupes_unconfirmed"), ("held-out acc", "heldout_accuracy_mean"),
            ("planted errors left", "n_planted"), ("precision", "planted_precision"),
            ("recall", "planted_recall")]
    for title, _ in cols:
        table.add_column(title, justify="right")
    for r in rounds:
        cells = []
        for _, key in cols:
            v = r.get(key, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        table.add_row(*cells)
    return table


def sanity_table(checks) -> Table:
    """The preflight verdict: one row per check (objects with name, ok, detail, cause)."""
    failed = [c for c in checks if not c.ok and not c.warning]
    title = "sanity check: " + ("[red]FAILED[/]" if failed else "[green]passed[/]")
    table = Table(title=title, header_style="bold")
    for col in ("check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        result = "ok" if c.ok else ("warning" if c.warning else "FAILED")
        style = "green" if c.ok else ("yellow" if c.warning else "red")
        detail = c.detail if c.ok else f"{c.detail}\nlikely cause: {c.cause}"
        table.add_row(c.name, f"[{style}]{result}[/]", detail)
    return table


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


def trials_view(table, *, metric: str, scheduler: str, searched: list[str]) -> Table:
    """The trials of a `dupes tune` search, best first."""
    view = Table(title=f"trials ({scheduler}, {metric})", header_style="bold")
    searched = [k for k in searched if k in table.columns]
    for col in ["trial", "status", "epochs_run", f"best_{metric}", *searched]:
        view.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for row in table.sort_values(f"best_{metric}",
                                 ascending=metric == "heldout_loss").itertuples(index=False):
        r = row._asdict()
        cells = [str(r["trial"]), str(r["status"]), str(r["epochs_run"]),
                 f"{r[f'best_{metric}']:.4f}"]
        cells += [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in searched]
        view.add_row(*cells)
    return view


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
    training = (f"{d.get('epochs')} epochs, batch {d.get('batch_size')}"
                + (f", lr {d['lr']}" if "lr" in d else "")
                + (", flips" if d.get("flip") else ", no flips")
                + f", shifts up to {d.get('translate')} px")
    small = f"{model} (width {d.get('width')}" + (", whitening)" if d.get("whiten") else ")")
    return [("model", small if model == "smallcnn" else model),
            ("training", training)]


def trained_settings(config: dict, classes: dict) -> list[tuple[str, str]]:
    """(setting, value and why) of what the run trained: the resolved model, size and aspect
    policy, and every hyperparameter the pass chose, with its reason (config.json's
    `hyp_chosen`); the report shows them so a reader knows what the votes come from."""
    hyp, chosen = config.get("hyp", {}), config.get("hyp_chosen") or {}
    size, channels = classes.get("image_size"), classes.get("channels")
    model, training = model_and_training(hyp)
    rows = [model, ("image size", f"{size}x{size}x{channels}, {classes.get('aspect', 'pad')}"),
            training, *chosen.items()]
    given = set(config.get("hyp_set") or [])
    if given:
        rows.append(("given", ", ".join(sorted(given))))
    return rows
