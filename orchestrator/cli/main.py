"""The `dupes` command line: parse once, hand a typed configuration to the module that does
the work, and map every error to its documented exit code here, in one place.

Flags shared by several commands are declared once (argparse `parents=`), and those of the
typed configurations (`RunConfig`, `ScanSettings`, `DupeRule`, `Hyp`, `TuneSettings`) are
generated from their fields by `orchestrator.flags`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from analysis.rule import DupeRule
from orchestrator import flags
from orchestrator.config import RunConfig, ScanSettings
from orchestrator.run.storage import parse_local_path, parse_location
from trainers.hyp import Hyp

EXIT_OK, EXIT_FAILED_TRAININGS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
PASS_FIELDS = ("repeats", "budget", "seed", "train_seed", "split", "sanity", "epoch_losses",
               "ledger")
RESOURCE_FIELDS = ("cpus_per_training", "gpus_per_training", "resources_per_training", "data_mode",
                   "max_failures", "address")


class UsageError(ValueError):
    """The command line lacks something; the message says what to give."""


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


def get_args_parser() -> argparse.ArgumentParser:
    from orchestrator.demo import DEMO_HYP, DemoSettings
    from orchestrator.pipeline.tune import TuneSettings

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
    imp = rsub.add_parser("import", help="turn a reviewed folder into manifest.csv",
                          description="Read back what the technician did in REVIEW and write "
                          "REVIEW/after.txt and REVIEW/manifest.csv; confirmed images go into "
                          "the ledger. Nothing is written if anything cannot be interpreted.")
    imp.add_argument("review", type=Path, help="review folder made by `dupes review export`")
    imp.add_argument("--ledger", type=parse_location, default=None,
                     help="ledger to update (default: the one chosen at export)")
    imp.add_argument("--accept-untouched", action="store_true",
                     help="accept the suggestions of the files left in place even when they are "
                          "most of the review (without it, such an import is refused: it is "
                          "what a folder nobody reviewed looks like)")
    srv = rsub.add_parser("serve", help="triage a review folder in the browser, by keyboard",
                          description="Serve a page on 127.0.0.1 that shows every image of "
                          "REVIEW large, with its labels, votes and scores, and takes one "
                          "decision per image from the keyboard (a accept the suggestion, k keep "
                          "the label, c another class, r remove, u unsure, z undo). Each "
                          "decision is saved at once: REVIEW/manifest.csv and the ledger are "
                          "what `review import` gives for the same moves in a file manager. "
                          "Stop with Ctrl-C; a later serve goes on where it stopped.")
    srv.add_argument("review", type=Path, help="review folder made by `dupes review export`")
    srv.add_argument("--port", type=int, default=8765,
                     help="port on 127.0.0.1 (default 8765; 0 = any free port)")
    srv.add_argument("--ledger", type=parse_location, default=None,
                     help="ledger to update (default: the one chosen at export)")

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


def _console() -> Console:
    # soft wrap: a message never gets line breaks inside file paths in logs and pipes; and
    # logs get 120 columns rather than rich's 80, so tables keep paths on one line
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def cmd_run(args, console: Console) -> int:
    from orchestrator.config import new_config, resume_config
    from orchestrator.pipeline.passes import run_pass, save_summary
    from orchestrator.run.directory import Run
    from orchestrator.run.storage import absolute, child, name_of, same_tree

    t0 = time.perf_counter()
    if args.resume:
        run = Run.open(args.resume, need="all")
        cfg, applied, ignored = resume_config(run.config(), args, run_dir=run.location)
        for flag, (old, new) in applied.items():
            console.print(f"resume: {flag} {new} (was {old})", highlight=False)
        for flag, (old, new) in ignored.items():
            console.print(f"[yellow]warning:[/] --resume ignores {flag} {new}: the finished "
                          f"trainings used {old}; start a new run to change it", highlight=False)
    else:
        if args.data is None:
            raise UsageError("give a dataset folder (DATA) or --resume RUN")
        if isinstance(args.data, Path) and not args.data.is_dir():
            raise UsageError(f"dataset folder {args.data} does not exist or is not a folder: "
                             "pass a folder with one sub-folder per class")
        name = f"{name_of(args.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = args.out or child(args.storage, name)
        if same_tree(out, args.data):
            raise UsageError(f"the run directory {absolute(out)} would be inside the dataset "
                             f"{absolute(args.data)}, which is only ever read: put runs "
                             "elsewhere (--out or --storage)")
        cfg = new_config(args, data_dir=absolute(args.data), run_dir=absolute(out))
        run = Run.create(out)  # after every flag and file was read: a bad one leaves nothing
    try:
        summary = run_pass(run, cfg, console, t_start=t0)
    except Exception:
        if not args.resume and run.discard_unstarted():
            console.print(f"removed {run.location}: the run stopped before its scan finished "
                          "and holds nothing to resume; the same --out can be used again",
                          highlight=False)
        raise
    save_summary(run, summary)
    console.print(f"run directory: {run.describe()}  ({summary['wall_s']:.1f} s)",
                  highlight=False)
    return EXIT_FAILED_TRAININGS if summary["n_trainings_failed"] else EXIT_OK


def cmd_demo(args, console: Console) -> int:
    from orchestrator.demo import DemoSettings, run_demo

    summary = run_demo(flags.build(DemoSettings, args), args, console)
    return EXIT_FAILED_TRAININGS if summary["n_trainings_failed"] else EXIT_OK


def cmd_report(args, console: Console) -> int:
    from analysis.report import report
    from orchestrator.pipeline.passes import load_analysis
    from orchestrator.run.directory import Run
    from orchestrator.visual import write_html

    run = Run.open(args.run)
    analysis, seconds = load_analysis(run, ledger=args.ledger, **flags.given(args, DupeRule))
    console.print(report(analysis, seconds=seconds, top=args.top))
    if args.html:
        out, sheets = write_html(analysis, run, top=args.html_top,
                                 out=None if args.html is True else args.html)
        if run.on_bucket and out.is_relative_to(run.path):  # the report goes up too
            run.push()
            out = f"{run.location}/{out.relative_to(run.path).as_posix()} (and {out})"
        console.print(f"HTML report: {out}" + (f"; {len(sheets)} contact sheet(s) in "
                                                f"{sheets[0].parent}" if sheets else ""),
                      highlight=False)
    return EXIT_OK


def cmd_top_losses(args, console: Console) -> int:
    from analysis.report import top_losses_table
    from orchestrator.pipeline.passes import load_top_losses
    from orchestrator.run.directory import Run

    run = Run.open(args.run)
    top = load_top_losses(run, k=args.k, per_class=args.per_class)
    scope = f"the {args.k} worst of every class" if args.per_class else f"top {args.k}"
    console.print(top_losses_table(top, title=f"held-out losses: {scope} of "
                                              f"{len(run.index()):,} images"))
    return EXIT_OK


def cmd_status(args, console: Console) -> int:
    from orchestrator.pipeline.progress import show_status
    from orchestrator.run.directory import Run

    show_status(Run.open(args.run, need="status"), console)
    return EXIT_OK


def cmd_sanity(args, console: Console) -> int:
    from orchestrator.config import hyp_from_args, scan_from_args
    from orchestrator.pipeline.passes import run_sanity
    from orchestrator.data.scan import scan_dataset

    from orchestrator.pipeline.passes import SANITY_SAMPLE

    settings = scan_from_args(args)
    scan = scan_dataset(args.data, image_size=settings.image_size, aspect=settings.aspect,
                        min_per_class=settings.min_per_class, sample=SANITY_SAMPLE)
    console.print(f"{len(scan.index):,} images in {len(scan.classes)} classes, "
                  f"{len(scan.skipped)} skipped", highlight=False)
    ok = run_sanity(scan.images, scan.index["label"].to_numpy(), scan.classes,
                    hyp_from_args(args), console)
    return EXIT_OK if ok else EXIT_FAILED_TRAININGS


def cmd_tune(args, console: Console) -> int:
    from orchestrator.config import hyp_from_args, scan_from_args
    from orchestrator.run.storage import absolute, name_of, same_tree
    from orchestrator.pipeline.tune import (TuneSettings, load_search, run_search, show_search,
                                   start_search)

    if args.resume:
        settings = load_search(args.resume)
    elif args.data is None:
        raise UsageError("give a dataset folder (DATA) or --resume TUNE")
    else:
        out = (args.out or Path("runs") / f"tune-{name_of(args.data)}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        if same_tree(out, args.data):
            raise UsageError(f"the search directory {out} would be inside the dataset "
                             f"{args.data}, which is only ever read: choose --out elsewhere")
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"search directory {out} exists and is not empty: choose another "
                             f"--out, or continue that search with `dupes tune --resume {out}`")
        settings = start_search(flags.build(
            TuneSettings, args, data_dir=absolute(args.data), out=str(out),
            scan=scan_from_args(args), base_hyp=hyp_from_args(args)))
    console.print(f"searching {settings.trials} trial(s) with {settings.scheduler} on "
                  f"{settings.data_dir} -> {settings.out}", highlight=False)
    table, best = run_search(settings, resume=bool(args.resume))
    return EXIT_OK if show_search(table, best, settings, console) else EXIT_FAILED_TRAININGS


def cmd_review(args, console: Console) -> int:
    from analysis.report import manifest_tables, problems_table
    from analysis.review_plan import manifest_summary
    from orchestrator.review.files import export_review, import_review

    if args.review_command == "export":
        table = export_review(args.run, args.out, include_confirmed=args.include_confirmed,
                              ledger=args.ledger,
                              **flags.given(args, DupeRule))
        console.print(f"exported {len(table)} image(s) for review to {args.out.resolve()}; "
                      f"instructions in {args.out.resolve() / 'README.txt'}", highlight=False)
        return EXIT_OK
    if args.review_command == "serve":
        return serve_review(args, console)
    manifest, problems = import_review(args.review, ledger=args.ledger,
                                       accept_untouched=args.accept_untouched)
    if problems:
        console.print(problems_table(problems))
        return EXIT_BAD_INPUT
    console.print(manifest_tables(*manifest_summary(manifest)))
    console.print(f"wrote {args.review.resolve() / 'manifest.csv'}; apply it with `dupes apply "
                  f"{args.review / 'manifest.csv'} --data <dataset> --out <new folder>`",
                  highlight=False)
    return EXIT_OK


def serve_review(args, console: Console) -> int:
    import threading

    from orchestrator.review.server import ReviewServer

    server = ReviewServer(args.review, port=args.port, ledger=args.ledger).start()
    console.print(f"review page: {server.url}\n(only this machine can open it; Ctrl-C stops "
                  "the server, every decision is already saved)", highlight=False)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    t = server.triage
    console.print(f"{len(t.decisions)} of {len(t.before)} images decided; manifest: "
                  f"{t.review / 'manifest.csv'}", highlight=False)
    return EXIT_OK


def cmd_apply(args, console: Console) -> int:
    from analysis.review_plan import CHANGES_REL
    from orchestrator.review.files import apply_manifest

    if args.hardlink and args.copy:
        raise UsageError("--hardlink and --copy contradict each other: give one")
    changes = apply_manifest(args.manifest, args.data, args.out, hardlink=args.hardlink)
    counts = changes["action"].value_counts().to_dict()
    shared = " (hardlinked: editing a file there edits it in the dataset too)" \
        if args.hardlink else ""
    console.print(f"wrote the corrected dataset {args.out.resolve()}{shared}: "
                  f"{counts.get('relabel', 0)} relabelled, {counts.get('remove', 0)} removed "
                  f"(see {args.out.resolve() / CHANGES_REL}); {args.data} is unchanged",
                  highlight=False)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "report": cmd_report, "tune": cmd_tune,
            "sanity": cmd_sanity, "status": cmd_status, "top-losses": cmd_top_losses,
            "review": cmd_review, "apply": cmd_apply}


def exit_codes() -> dict[type, int]:
    """Every error a command may raise, and its documented exit code (README)."""
    from orchestrator.data.cache import CacheError
    from orchestrator.pipeline.cluster import ResourceError
    from orchestrator.pipeline.passes import SanityError
    from orchestrator.review.files import ReviewError
    from orchestrator.run.directory import RunError
    from orchestrator.data.scan import ScanError
    from orchestrator.run.storage import StorageError

    return {SanityError: EXIT_FAILED_TRAININGS, UsageError: EXIT_BAD_INPUT,
            ScanError: EXIT_BAD_INPUT, ResourceError: EXIT_BAD_INPUT,
            ReviewError: EXIT_BAD_INPUT, RunError: EXIT_BAD_INPUT,
            StorageError: EXIT_BAD_INPUT, CacheError: EXIT_BAD_INPUT,
            FileNotFoundError: EXIT_BAD_INPUT}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    console = _console()
    codes = exit_codes()
    try:
        return COMMANDS[args.command](args, console)
    except tuple(codes) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return next(code for kind, code in codes.items() if isinstance(e, kind))
    except ValueError as e:  # a value the parser could not judge alone (a --config file's)
        console.print(f"[red]error:[/] {e}", highlight=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        run = getattr(args, "resume", None) or getattr(args, "out", None)
        hint = f"`dupes run --resume {run}`" if run and args.command == "run" else \
            "`dupes run --resume <run directory>`"
        console.print(f"\n[yellow]interrupted.[/] Finished trainings are kept; continue with "
                      f"{hint}.")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
