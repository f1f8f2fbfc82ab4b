"""The `dupes` command line's parser: subcommands, flags shared by several declared once.

Flags shared by several commands are declared once (argparse `parents=`), and those of the
typed configurations (`RunConfig`, `ScanSettings`, `DupeRule`, `Hyp`, `TuneSettings`) are
generated from their fields by `orchestrator.flags`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.rule import DupeRule
from orchestrator import flags
from orchestrator.config import RunConfig, ScanSettings
from orchestrator.demo_data import DEMO_HYP, DemoSettings
from orchestrator.pipeline.search_space import TuneSettings
from orchestrator.run.storage import parse_local_path, parse_location
from trainers.hyp import Hyp

PASS_FIELDS = ("repeats", "budget", "over_budget", "seed", "train_seed", "split", "sanity",
               "epoch_losses", "ledger")
RESOURCE_FIELDS = ("cpus_per_training", "gpus_per_training", "resources_per_training", "data_mode",
                   "max_failures", "address")


def _parent(build) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    build(p)
    return p


def training_flags(hyp: Hyp = Hyp()) -> argparse.ArgumentParser:
    def build(p):
        g = p.add_argument_group("training")
        g.add_argument("--config", type=Path, default=None,
                       help="JSON file of hyperparameters, e.g. best.json from `dupes tune`; "
                            "flags given on the command line still win")
        flags.add_flags(g, Hyp, defaults=hyp)
    return _parent(build)


def scan_flags() -> argparse.ArgumentParser:
    return _parent(lambda p: flags.add_flags(p.add_argument_group("scan"), ScanSettings))


def pass_flags(hyp: Hyp = Hyp()) -> list[argparse.ArgumentParser]:
    def build(p):
        flags.add_flags(p.add_argument_group("the pass"), RunConfig, only=PASS_FIELDS)
        flags.add_flags(p.add_argument_group("dupes"), DupeRule)
        flags.add_flags(p.add_argument_group("resources"), RunConfig, only=RESOURCE_FIELDS)
    return [_parent(build), scan_flags(), training_flags(hyp)]


def run_flags() -> argparse.ArgumentParser:
    return _parent(lambda p: p.add_argument(
        "run", type=parse_location, help="run directory: a folder, or an s3:// / gs:// URI"))


def rule_flags(only=None) -> argparse.ArgumentParser:
    def build(p):
        flags.add_flags(p.add_argument_group("dupes"), DupeRule, only=only,
                        default_note="the run's own")
        p.add_argument("--ledger", type=parse_location, default=None,
                       help="ledger of confirmed labels (default: the run's)")
    return _parent(build)


def review_folder_flags() -> argparse.ArgumentParser:
    def build(p):
        p.add_argument("review", type=Path, help="review folder made by `dupes review export`")
        p.add_argument("--ledger", type=parse_location, default=None,
                       help="ledger to update (default: the one chosen at export)")
    return _parent(build)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dupes", description="Find mislabeled images: 10 repeats of 50:50 swap-split "
        "trainings on Ray, then count how often each image is predicted as the same wrong class.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=pass_flags(), help="run a dupes pass on a class-folder "
                         "dataset", description="Run a dupes pass on DATA (one sub-folder per "
                         "class).")
    run.add_argument("data", nargs="?", type=parse_location, help="dataset folder with one "
                     "sub-folder per class, or a bucket prefix (not needed with --resume)")
    run.add_argument("--out", type=parse_location, default=None,
                     help="run directory, a folder or s3://, gs:// (default "
                          "STORAGE/<data name>-<date-time>); must not exist or be empty")
    run.add_argument("--storage", type=parse_location, default=Path("runs"), metavar="STORAGE",
                     help="where run directories go when --out is not given: a folder, or a "
                          "bucket prefix such as s3://bucket/runs (default runs/)")
    run.add_argument("--resume", type=parse_location, default=None, metavar="RUN",
                     help="continue an interrupted run: only trainings without predictions are "
                          "redone, with the run's saved configuration; resources, --no-sanity "
                          "and the dupe rule may be changed, other flags are ignored (said)")

    demo = sub.add_parser("demo", parents=pass_flags(DEMO_HYP),
                          help="run the full pass on bundled digits with planted noise",
                          description="Write scikit-learn's 1,797 digits as PNG class folders, "
                          "move a share of them to wrong classes, run the pass, and score the "
                          "dupes against the planted truth.")
    flags.add_flags(demo.add_argument_group("demo"), DemoSettings)

    rep = sub.add_parser("report", parents=[run_flags(), rule_flags()],
                         help="re-render a run's report from disk (no Ray)",
                         description="Re-render the report of RUN from its files.")
    rep.add_argument("--top", type=flags.positive(int), default=20,
                     help="dupes to list (default %(default)s)")
    rep.add_argument("--html", nargs="?", type=Path, const=True, default=None, metavar="PATH",
                     help="also write a self-contained HTML report (inline thumbnails, "
                          "sortable tables, confusion matrix) to PATH (default RUN/report.html) "
                          "and PNG contact sheets to sheets/ beside it")
    rep.add_argument("--html-top", type=flags.positive(int), default=1000,
                     help="thumbnails for the first N dupes, and rows of the top-loss table, "
                          "in the HTML report (every dupe is listed) (default %(default)s)")

    tl = sub.add_parser("top-losses", parents=[run_flags()],
                        help="the images with the highest held-out loss",
                        description="Rank images by their mean held-out loss over all runs "
                        "(every loss is out-of-sample), overall or per given class.")
    tl.add_argument("--k", type=flags.positive(int), default=50,
                    help="images to list (default %(default)s)")
    tl.add_argument("--per-class", action="store_true",
                    help="the k worst of every given class instead of overall")

    cmp = sub.add_parser("compare", help="rounds of review side by side, and whether "
                         "another is worth it",
                         description="Compare runs of successive rounds (a run on the "
                         "corrected copy of the data the run before it found dupes in): "
                         "held-out accuracy, agreement, estimated wrong labels, dupes, what "
                         "the review between them decided, and the next round's expected "
                         "value. No Ray needed.")
    cmp.add_argument("runs", nargs="+", type=parse_location, metavar="RUN",
                     help="run directories, oldest round first")

    sub.add_parser("status", parents=[run_flags()],
                   help="where a run stands, read from its directory",
                   description="Show the progress of RUN from its files (works while it runs, "
                               "e.g. under `ray job submit`, and after).")

    sn = sub.add_parser("sanity", parents=[scan_flags(), training_flags()],
                        help="check a dataset and training setup before a run",
                        description="Decode DATA and check it: input statistics, label "
                        "balance, image size; then overfit one small batch (the optimisation "
                        "works) and beat chance on held-out images after a short training (the "
                        "labels follow the images). Exit 0 if it passes, 1 if not.")
    sn.add_argument("data", type=parse_location, help="dataset folder, one sub-folder per class")

    tn = sub.add_parser("tune", parents=[scan_flags(), training_flags()],
                        help="search training hyperparameters with Ray Tune",
                        description="Search learning rate, weight decay, epochs, augmentation, "
                        "mixup and label smoothing with Ray Tune on one swap split of DATA; "
                        "TUNE/best.json then feeds `dupes run --config`.")
    tn.add_argument("data", nargs="?", type=parse_location,
                    help="dataset folder (not needed with --resume)")
    tn.add_argument("--out", type=parse_local_path, default=None,
                    help="search directory (default runs/tune-<data name>-<date-time>)")
    tn.add_argument("--resume", type=parse_local_path, default=None, metavar="TUNE",
                    help="continue an interrupted search in TUNE")
    flags.add_flags(tn.add_argument_group("search"), TuneSettings)

    review = sub.add_parser("review", help="export dupes for a technician, import the result",
                            description="The technician review loop: `export` a folder tree of "
                            "dupes, let a person delete/move files, then `import` it into a "
                            "relabel manifest.")
    rsub = review.add_subparsers(dest="review_command", required=True)
    exp = rsub.add_parser("export", parents=[run_flags(),
                                             rule_flags(("threshold", "min_ratio", "rank"))],
                          help="write the dupes of RUN into a review folder tree",
                          description="Write RUN's dupes into REVIEW/<given class>/"
                          "<rank>__<suggested>__<votes>of<n>__<file name> (rank 1 = most "
                          "suspect), as copies (reflinks where the file system has them): "
                          "editing one never edits the dataset.")
    exp.add_argument("--out", type=parse_local_path, required=True,
                     help="review folder (new or empty)")
    exp.add_argument("--include-confirmed", action="store_true",
                     help="export images the ledger lists as confirmed too (default: skip them)")
    exp.add_argument("--copy", action="store_true", help=argparse.SUPPRESS)  # always, now
    imp = rsub.add_parser("import", parents=[review_folder_flags()],
                          help="turn a reviewed folder into manifest.csv",
                          description="Read back what the technician did in REVIEW and write "
                          "REVIEW/after.txt and REVIEW/manifest.csv; confirmed images go into "
                          "the ledger. Nothing is written if anything cannot be interpreted.")
    imp.add_argument("--accept-untouched", action="store_true",
                     help="accept the suggestions of the files left in place even when they are "
                          "most of the review (without it, such an import is refused: it is "
                          "what a folder nobody reviewed looks like)")
    srv = rsub.add_parser("serve", parents=[review_folder_flags()],
                          help="triage a review folder in the browser, by keyboard",
                          description="Serve a page on 127.0.0.1 that shows every image of "
                          "REVIEW large, with its labels, votes and scores, and takes one "
                          "decision per image from the keyboard (a accept the suggestion, k keep "
                          "the label, c another class, r remove, u unsure, z undo). Each "
                          "decision is saved at once: REVIEW/manifest.csv and the ledger are "
                          "what `review import` gives for the same moves in a file manager. "
                          "Stop with Ctrl-C; a later serve goes on where it stopped.")
    srv.add_argument("--port", type=int, default=8765,
                     help="port on 127.0.0.1 (default 8765; 0 = any free port)")

    app = sub.add_parser("apply", help="build a corrected copy of a dataset from a manifest",
                         description="Copy DATA to OUT with the manifest's relabels and "
                         "removals applied, as copies (reflinks where the file system has "
                         "them). DATA is never modified.")
    app.add_argument("manifest", type=Path, help="manifest.csv from `dupes review import`")
    app.add_argument("--data", type=parse_location, required=True,
                     help="the dataset that was reviewed")
    app.add_argument("--out", type=parse_local_path, required=True,
                     help="new dataset folder (must not exist or be empty)")
    app.add_argument("--hardlink", action="store_true",
                     help="hardlink the files instead of copying them: no time and no space, "
                          "but OUT and DATA then share every file, so editing an image in OUT "
                          "edits it in DATA too (default: copies)")
    app.add_argument("--copy", action="store_true", help=argparse.SUPPRESS)  # the default now
    return parser
