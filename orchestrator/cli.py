"""The `dupes` command line: run, demo, report."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from analysis.thresholds import parse_threshold
from analysis.votes import DEFAULT_MIN_RATIO
from orchestrator.config import DEFAULT_THRESHOLD, RunConfig
from orchestrator.splits import SPLIT_MODES
from trainers.hyp import MODELS, Hyp

EXIT_FAILED_TRAININGS = 1
EXIT_BAD_INPUT = 2


def _threshold(text: str) -> str:
    try:
        parse_threshold(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def _positive(kind, *, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, got {text}")
        return value
    return parse


def _location(text: str) -> Path | str:
    """A local or mounted path, or an s3:// / gs:// URI (kept as text: a Path would fold
    its '//')."""
    from orchestrator.storage import is_uri

    if is_uri(text):
        return text.rstrip("/")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme and scheme != "file":
        raise argparse.ArgumentTypeError(
            f"{text}: {scheme}:// is not supported; use s3://, gs:// or a local/mounted path")
    return Path(text[len("file://"):] if scheme else text)


def _path(text: str) -> Path:
    """A local folder or file: what a person opens in a file manager, or a file we rename."""
    loc = _location(text)
    if not isinstance(loc, Path):
        raise argparse.ArgumentTypeError(
            f"{text}: this must be a local (or mounted) path; buckets are read and written "
            "by `dupes run`, `report`, `status`, `top-losses`, `sanity` and `review export`")
    return loc


def _resources(text: str) -> dict:
    import json
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in value.items()):
        raise argparse.ArgumentTypeError(f"must be a JSON object of resource name to a positive "
                                         f"amount, e.g. '{{\"trainer_node\": 1}}', got {text}")
    if {"CPU", "GPU"} & set(value):
        raise argparse.ArgumentTypeError("CPU and GPU have their own flags: --cpus-per-training "
                                         "and --gpus-per-training")
    return value


def _non_negative(kind):
    return _positive(kind, zero=True)


def add_pass_args(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("the pass")
    g.add_argument("--repeats", type=_positive(int), default=10,
                   help="swap-split repeats; each trains 2 models, so every image gets this "
                        "many held-out predictions (default 10)")
    g.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    g.add_argument("--train-seed", type=int, default=1,
                   help="training randomness seed, independent of the split (default 1)")
    g.add_argument("--split", choices=SPLIT_MODES, default="fresh",
                   help="fresh: a new 50:50 split every repeat; fixed: the same split every "
                        "repeat, as in the original method (default fresh)")
    g.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                   help="votes for one wrong class that make a dupe: 8 or '>=8' (at least 8), "
                        "'10', '>9', '==9', '8-10' (default '>=8')")
    g.add_argument("--min-ratio", type=_non_negative(float), default=DEFAULT_MIN_RATIO,
                   metavar="R", help="a dupe's suggested class must also be at least R times as "
                   "probable as its given label, in the mean of its held-out predictions; "
                   "keeps out look-alikes the models are undecided about; 0 = votes alone, as "
                   f"the original dupes method (default {DEFAULT_MIN_RATIO:g}, measured in "
                   "BENCHMARKS.md)")
    g.add_argument("--image-size", type=_positive(int), default=None,
                   help="training size in px (images are resized to a square); default: the "
                        "images' median size, at most 128 px")
    g.add_argument("--min-per-class", type=_positive(int), default=None,
                   help="drop classes with fewer usable images than this (reported); default: "
                        "a class with fewer than 2 is an error")
    g.add_argument("--sanity", action=argparse.BooleanOptionalAction, default=True,
                   help="preflight checks before the trainings: overfit one batch, beat chance "
                        "on held-out images, input statistics (default on; --no-sanity skips)")
    g.add_argument("--epoch-losses", type=_non_negative(int), default=5, metavar="K",
                   help="predict the held-out half every K-th epoch and at the end, and keep "
                        "its losses and margins in RUN/epochs/ for training-dynamics scores and "
                        "the live top losses; 1 = every epoch (each costs about a third of a "
                        "training epoch), 0 = off (default 5)")
    g.add_argument("--ledger", type=_location, default=None,
                   help="ledger of labels a technician confirmed (default: dupes-ledger.csv "
                        "beside the run directory)")
    g.add_argument("--ignore-confirmed", action="store_true",
                   help="leave images confirmed in the ledger out of the dupes (default: mark them)")
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-training", type=_positive(float), default=None,
                   help="CPUs per training (default 1 on CPU clusters, fractions allowed)")
    r.add_argument("--gpus-per-training", type=float, default=None,
                   help="GPUs per training, fractions allowed, e.g. 0.5 packs two per GPU "
                        "(default 1 when the cluster has GPUs, else 0)")
    r.add_argument("--resources-per-training", type=_resources, default=None, metavar="JSON",
                   help="custom Ray resources each training asks for, e.g. "
                        "'{\"trainer_node\": 1}' to keep trainings on nodes started with that "
                        "resource and off the head node, whose CPUs drive and write the run")
    r.add_argument("--max-failures", type=int, default=2,
                   help="times Ray Train restarts crashed workers before giving up (default 2)")
    r.add_argument("--address", default=None,
                   help="Ray cluster address (default: RAY_ADDRESS, else start a local Ray)")
    add_training_args(p, demo=demo)


def add_training_args(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    hyp = Hyp()
    t = p.add_argument_group("training")
    t.add_argument("--config", type=Path, default=None,
                   help="JSON file of hyperparameters, e.g. best.json from `dupes tune`; "
                        "flags given on the command line still win")
    t.add_argument("--model", choices=MODELS, default=hyp.model,
                   help="smallcnn for small images, a torchvision classifier for larger; auto "
                        "picks smallcnn up to 64 px, else resnet18 (default auto)")
    t.add_argument("--epochs", type=_positive(int), default=hyp.epochs,
                   help=f"epochs per training (default {hyp.epochs})")
    t.add_argument("--batch-size", type=_positive(int), default=hyp.batch_size,
                   help=f"images per step (default {hyp.batch_size})")
    t.add_argument("--lr", type=_positive(float), default=hyp.lr,
                   help=f"peak one-cycle learning rate (default {hyp.lr})")
    t.add_argument("--width", type=_positive(int), default=hyp.width,
                   help=f"small CNN width (default {hyp.width})")
    t.add_argument("--label-smoothing", type=float, default=hyp.label_smoothing,
                   help=f"training label smoothing (default {hyp.label_smoothing})")
    t.add_argument("--flip", action=argparse.BooleanOptionalAction,
                   default=False if demo else hyp.flip,
                   help="random left-right flips (default: on; off for the digits demo)")
    t.add_argument("--translate", type=int, default=1 if demo else hyp.translate,
                   help="max random shift in px (default 2; 1 for the 8-px digits demo)")
    t.add_argument("--weight-decay", type=float, default=hyp.weight_decay,
                   help=f"L2 weight decay of conv and linear weights (default {hyp.weight_decay})")
    t.add_argument("--mixup", type=float, default=hyp.mixup,
                   help="mixup alpha; 0 turns it off (default 0)")
    t.add_argument("--tta", action=argparse.BooleanOptionalAction, default=hyp.tta,
                   help="held-out predictions average each image and its mirror (only with "
                        "--flip; default on)")
    t.add_argument("--progressive", type=float, default=hyp.progressive,
                   help="progressive resizing: first epochs at this fraction of the size, e.g. "
                        "0.5 (measured on MNIST: 1.8x faster, -0.2 pt accuracy); 0 = off")
    t.add_argument("--crop-scale", type=float, default=hyp.crop_scale,
                   help=f"random-resized-crop min area for images > 64 px; 0 = off "
                        f"(default {hyp.crop_scale})")
    t.add_argument("--pretrained", action="store_true",
                   help="start from torchvision's ImageNet weights of --model (downloaded once)")
    t.add_argument("--weights", default=None,
                   help="start from a local weights file instead (offline clusters)")
    t.add_argument("--backbone-lr", type=float, default=hyp.backbone_lr,
                   help=f"fine-tuning: backbone LR = lr x this (default {hyp.backbone_lr})")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the model (pays off on GPU with long trainings)")


HYP_FLAGS = ("model", "width", "epochs", "batch_size", "lr", "label_smoothing", "flip",
             "translate", "weight_decay", "mixup", "tta", "progressive", "crop_scale",
             "pretrained", "weights", "backbone_lr", "compile")


def hyp_from_args(args) -> dict:
    """Hyperparameters: the --config file's, then the flags (whose defaults the file set)."""
    base = getattr(args, "config_hyp", None) or {}
    return Hyp.from_dict({**base, **{k: getattr(args, k) for k in HYP_FLAGS}}).to_dict()


def read_hyp_file(path: Path) -> dict:
    """Hyperparameters from best.json (its "hyp") or a flat JSON object of them."""
    import json
    data = json.loads(Path(path).read_text())
    hyp = data.get("hyp", data) if isinstance(data, dict) else None
    if not isinstance(hyp, dict):
        raise ValueError(f"{path} holds no hyperparameters (a JSON object, or best.json)")
    Hyp.from_dict({**Hyp().to_dict(), **hyp})  # names checked here, with the valid ones listed
    return hyp


def _absolute(location: Path | str) -> str:
    from orchestrator.storage import is_uri
    return str(location) if is_uri(location) else str(Path(location).resolve())


def config_from_args(args, data_dir: Path | str, run_dir: Path,
                     storage: str | None = None) -> RunConfig:
    return RunConfig(
        data_dir=_absolute(data_dir), run_dir=str(Path(run_dir).resolve()), storage=storage,
        repeats=args.repeats, seed=args.seed, train_seed=args.train_seed, split=args.split,
        threshold=args.threshold, min_ratio=args.min_ratio,
        image_size=args.image_size, min_per_class=args.min_per_class,
        cpus_per_training=args.cpus_per_training, gpus_per_training=args.gpus_per_training,
        max_failures=args.max_failures, address=args.address, config=str(args.config or ""),
        resources_per_training=args.resources_per_training or {},
        sanity=args.sanity, epoch_losses=args.epoch_losses,
        ledger=_absolute(args.ledger) if args.ledger else None,
        ignore_confirmed=args.ignore_confirmed, hyp=hyp_from_args(args))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dupes", description="Find mislabeled images: 10 repeats of 50:50 swap-split "
        "trainings on Ray, then count how often each image is predicted as the same wrong class.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a dupes pass on a class-folder dataset",
                         description="Run a dupes pass on DATA (one sub-folder per class).")
    run.add_argument("data", nargs="?", type=_location,
                     help="dataset folder with one sub-folder per class (not needed with --resume)")
    run.add_argument("--out", type=_location, default=None,
                     help="run directory, a folder or s3://, gs:// (default "
                          "STORAGE/<data name>-<date-time>); must not exist or be empty")
    run.add_argument("--storage", type=_location, default=None, metavar="STORAGE",
                     help="where run directories go when --out is not given: a folder, or a "
                          "bucket prefix such as s3://bucket/runs (default runs/)")
    run.add_argument("--resume", type=_location, default=None, metavar="RUN",
                     help="continue an interrupted run: only trainings without predictions are "
                          "redone, with the run's saved configuration")
    add_pass_args(run)

    demo = sub.add_parser("demo", help="run the full pass on bundled digits with planted noise",
                          description="Write scikit-learn's 1,797 digits as PNG class folders, "
                          "move a share of them to wrong classes, run the pass, and score the "
                          "dupes against the planted truth.")
    demo.add_argument("--out", type=_path, default=None,
                      help="demo directory: data/, planted.csv and run/ go here "
                           "(default runs/demo-<date-time>)")
    demo.add_argument("--noise", type=float, default=0.05,
                      help="share of images moved to a wrong class folder (default 0.05)")
    demo.add_argument("--noise-seed", type=int, default=0,
                      help="seed of the planted noise (default 0)")
    demo.add_argument("--review-simulate", action="store_true",
                      help="go on through the review loop: an automatic technician who knows "
                           "the planted truth reviews the dupes, the corrected dataset is built, "
                           "and a second round runs on it (about twice the time)")
    add_pass_args(demo, demo=True)

    rep = sub.add_parser("report", help="re-render a run's report from disk (no Ray)",
                         description="Re-render the report of RUN from its files.")
    rep.add_argument("run", type=_location, help="run directory")
    rep.add_argument("--threshold", type=_threshold, default=None,
                     help="vote threshold (default: the run's own)")
    rep.add_argument("--min-ratio", type=_non_negative(float), default=None, metavar="R",
                     help="a dupe's p(suggested) >= R x p(given), 0 = votes alone "
                          "(default: the run's)")
    rep.add_argument("--top", type=int, default=20, help="dupes to list (default 20)")
    rep.add_argument("--ledger", type=_location, default=None,
                     help="ledger of confirmed labels (default: the run's)")
    rep.add_argument("--ignore-confirmed", action=argparse.BooleanOptionalAction, default=None,
                     help="leave confirmed images out of the dupes (default: the run's setting)")
    rep.add_argument("--html", nargs="?", type=Path, const=True, default=None, metavar="PATH",
                     help="also write a self-contained HTML report (inline thumbnails, "
                          "sortable tables, confusion matrix) to PATH (default RUN/report.html) "
                          "and PNG contact sheets to sheets/ beside it")
    rep.add_argument("--html-top", type=_positive(int), default=200,
                     help="images in the HTML report's dupes and top-loss tables (default 200)")

    tl = sub.add_parser("top-losses", help="the images with the highest held-out loss",
                        description="Rank images by their mean held-out loss over all runs "
                        "(every loss is out-of-sample), overall or per given class.")
    tl.add_argument("run", type=_location, help="run directory")
    tl.add_argument("--k", type=_positive(int), default=50, help="images to list (default 50)")
    tl.add_argument("--per-class", action="store_true",
                    help="the k worst of every given class instead of overall")

    st = sub.add_parser("status", help="where a run stands, read from its directory",
                        description="Show the progress of RUN from its files (works while it "
                                    "runs, e.g. under `ray job submit`, and after).")
    st.add_argument("run", type=_location, help="run directory")

    sn = sub.add_parser("sanity", help="check a dataset and training setup before a run",
                        description="Decode DATA and check it: input statistics, label "
                        "balance, image size; then overfit one small batch (the optimisation "
                        "works) and beat chance on held-out images after a short training (the "
                        "labels follow the images). Exit 0 if it passes, 1 if not.")
    sn.add_argument("data", type=_location, help="dataset folder, one sub-folder per class")
    sn.add_argument("--image-size", type=_positive(int), default=None,
                    help="training size in px (default: as `dupes run`)")
    sn.add_argument("--min-per-class", type=_positive(int), default=None,
                    help="drop classes with fewer usable images (default: error)")
    add_training_args(sn)

    tn = sub.add_parser("tune", help="search training hyperparameters with Ray Tune",
                        description="Search learning rate, weight decay, epochs, augmentation, "
                        "mixup and label smoothing with Ray Tune on one swap split of DATA; "
                        "TUNE/best.json then feeds `dupes run --config`.")
    tn.add_argument("data", nargs="?", type=_location,
                    help="dataset folder (not needed with --resume)")
    tn.add_argument("--out", type=_path, default=None,
                    help="search directory (default runs/tune-<data name>-<date-time>)")
    tn.add_argument("--resume", type=_path, default=None, metavar="TUNE",
                    help="continue an interrupted search in TUNE")
    tn.add_argument("--trials", type=_positive(int), default=8, help="trials (default 8)")
    tn.add_argument("--scheduler", choices=["asha", "pbt"], default="asha",
                    help="asha stops bad trials early; pbt copies good trials' state into bad "
                         "ones and perturbs their hyperparameters (default asha)")
    tn.add_argument("--metric", choices=["heldout_loss", "heldout_accuracy"],
                    default="heldout_loss", help="what the search optimises (default "
                    "heldout_loss: less noisy than accuracy on small data)")
    tn.add_argument("--space", type=Path, default=None,
                    help="YAML/JSON search space: `name: constant` or `name: {loguniform|"
                         "uniform|randint: [lo, hi]}` / `{choice: [...]}` (default: lr, "
                         "weight_decay, epochs, translate, mixup, label_smoothing)")
    tn.add_argument("--cpus-per-trial", type=_positive(float), default=1.0,
                    help="CPUs per trial (default 1)")
    tn.add_argument("--gpus-per-trial", type=float, default=None,
                    help="GPUs per trial, fractions allowed (default 1 if the cluster has "
                         "GPUs, else 0)")
    tn.add_argument("--max-concurrent", type=_positive(int), default=None,
                    help="trials at once (default: as many as the resources hold)")
    tn.add_argument("--grace-period", type=_positive(int), default=2,
                    help="ASHA: epochs every trial runs before it can be stopped (default 2)")
    tn.add_argument("--perturbation-interval", type=_positive(int), default=4,
                    help="PBT: epochs between exploit/explore steps (default 4)")
    tn.add_argument("--checkpoint-every-s", type=_positive(float), default=30.0,
                    help="seconds between a trial's checkpoints (also at PBT perturbations and "
                         "the last epoch); what a resumed search restarts from (default 30)")
    tn.add_argument("--seed", type=int, default=0, help="split and search seed (default 0)")
    tn.add_argument("--train-seed", type=int, default=1, help="training seed (default 1)")
    tn.add_argument("--image-size", type=_positive(int), default=None,
                    help="training size in px (default: as `dupes run`)")
    tn.add_argument("--min-per-class", type=_positive(int), default=None,
                    help="drop classes with fewer usable images (default: error)")
    tn.add_argument("--max-failures", type=int, default=1,
                    help="retries of a crashed trial (default 1)")
    tn.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    add_training_args(tn)

    review = sub.add_parser("review", help="export dupes for a technician, import the result",
                            description="The technician review loop: `export` a folder tree of "
                            "dupes, let a person delete/move files, then `import` it into a "
                            "relabel manifest.")
    rsub = review.add_subparsers(dest="review_command", required=True)
    exp = rsub.add_parser("export", help="write the dupes of RUN into a review folder tree",
                          description="Write RUN's dupes into REVIEW/<given class>/"
                          "<suggested>__<votes>of<n>__<file name> (hardlinks where possible).")
    exp.add_argument("run", type=_location, help="run directory")
    exp.add_argument("--out", type=_path, required=True, help="review folder (new or empty)")
    exp.add_argument("--threshold", type=_threshold, default=None,
                     help="vote threshold (default: the run's own)")
    exp.add_argument("--min-ratio", type=_non_negative(float), default=None, metavar="R",
                     help="a dupe's p(suggested) >= R x p(given), 0 = votes alone "
                          "(default: the run's)")
    exp.add_argument("--include-confirmed", action="store_true",
                     help="export images the ledger lists as confirmed too (default: skip them)")
    exp.add_argument("--ledger", type=_location, default=None,
                     help="ledger of confirmed labels (default: the run's)")
    exp.add_argument("--copy", action="store_true",
                     help="copy files instead of hardlinking them")
    imp = rsub.add_parser("import", help="turn a reviewed folder into manifest.csv",
                          description="Read back what the technician did in REVIEW and write "
                          "REVIEW/after.txt and REVIEW/manifest.csv; confirmed images go into "
                          "the ledger. Nothing is written if anything cannot be interpreted.")
    imp.add_argument("review", type=Path, help="review folder made by `dupes review export`")
    imp.add_argument("--ledger", type=_location, default=None,
                     help="ledger to update (default: the one chosen at export)")

    app = sub.add_parser("apply", help="build a corrected copy of a dataset from a manifest",
                         description="Copy DATA to OUT with the manifest's relabels and "
                         "removals applied (hardlinks where possible). DATA is never modified.")
    app.add_argument("manifest", type=Path, help="manifest.csv from `dupes review import`")
    app.add_argument("--data", type=_location, required=True, help="the dataset that was reviewed")
    app.add_argument("--out", type=_path, required=True,
                     help="new dataset folder (must not exist or be empty)")
    app.add_argument("--copy", action="store_true",
                     help="copy files instead of hardlinking them (hardlinked files share "
                          "content with DATA: edit them in OUT and DATA changes too)")
    return parser


def _open_run(location: Path | str, console: Console, *,
              only: set[str] | None = None) -> Path | None:
    """A run directory to read, as a local path (a bucket run is pulled into its mirror);
    None, with the reason printed, if it is not one."""
    from orchestrator.storage import open_run

    path = open_run(location, only=only)
    return path if _is_run_dir(path, console) else None


def _is_run_dir(path: Path, console: Console) -> bool:
    if (path / "config.json").exists():
        return True
    console.print(f"[red]error:[/] {path} is not a run directory (no config.json)")
    return False


def _fresh_dir(path: Path, what: str) -> None:
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"error: {what} {path} exists and is not empty: choose another --out, "
                         "or continue that run with `dupes run --resume " + str(path) + "`")


def _bucket_run(uri: str, *, fresh: bool):
    """The RemoteRun of a bucket run directory: a new one must not exist yet (its stale local
    mirror, if any, is cleared); one to resume is pulled into its mirror."""
    import shutil

    from orchestrator.storage import RemoteRun

    remote = RemoteRun(uri)
    if fresh:
        if remote.exists():
            raise SystemExit(f"error: run directory {uri} exists: choose another --out, or "
                             f"continue that run with `dupes run --resume {uri}`")
        shutil.rmtree(remote.local, ignore_errors=True)  # our cache of a run that never began
    else:
        remote.pull()
    return remote


def cmd_run(args, console: Console) -> int:
    from orchestrator import rundir
    from orchestrator.passes import run_pass, save_summary
    from orchestrator.storage import is_uri, name_of

    t0 = time.perf_counter()
    if args.resume:
        remote = _bucket_run(args.resume, fresh=False) if is_uri(args.resume) else None
        run_dir = remote.local if remote else args.resume
        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            console.print(f"[red]error:[/] {cfg_path} not found: --resume takes a run directory "
                          "written by `dupes run`")
            return EXIT_BAD_INPUT
        cfg = RunConfig.from_dict(rundir.read_json(cfg_path))
        if remote:  # this machine's mirror, wherever the first attempt ran
            cfg.run_dir, cfg.storage = str(remote.local.resolve()), remote.uri
        for name in ("cpus_per_training", "gpus_per_training", "address"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        cfg.max_failures = args.max_failures
    else:
        if args.data is None:
            console.print("[red]error:[/] give a dataset folder (DATA) or --resume RUN")
            return EXIT_BAD_INPUT
        name = f"{name_of(args.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
        storage = args.storage or Path("runs")
        out = args.out or (f"{storage}/{name}" if is_uri(storage) else storage / name)
        if is_uri(out):
            remote = _bucket_run(out, fresh=True)
            cfg = config_from_args(args, args.data, remote.local, storage=remote.uri)
        else:
            _fresh_dir(out, "run directory")
            cfg = config_from_args(args, args.data, out)
    summary = run_pass(cfg, console, t_start=t0)
    save_summary(cfg.run_path, summary, storage=cfg.storage)
    console.print(f"run directory: {cfg.storage or cfg.run_path}  ({summary['wall_s']:.1f} s)"
                  + (f"; local mirror {cfg.run_path}" if cfg.storage else ""), highlight=False)
    return EXIT_FAILED_TRAININGS if summary["n_trainings_failed"] else 0


def _score_round(summary: dict, run_dir: Path, planted) -> dict:
    import pandas as pd

    from analysis.votes import precision_recall

    dupes = pd.read_parquet(run_dir / "dupes.parquet")
    precision, recall = precision_recall(dupes["relpath"].to_numpy(),
                                         planted["relpath"].to_numpy())
    summary.update(planted_precision=precision, planted_recall=recall, n_planted=len(planted),
                   n_dupes_unconfirmed=int((~dupes["confirmed"]).sum()))
    return summary


def simulate_technician(review: Path, exported, planted) -> None:
    """Review like a technician who knows the truth: delete false alarms (confirm), leave
    correct suggestions in place (relabel), move wrong suggestions to the true class."""
    import shutil

    truth = dict(zip(planted["relpath"], planted["true_class"]))
    for row in exported.itertuples():
        path = review / row.review_path
        true = truth.get(row.relpath)
        if true is None:
            path.unlink()
        elif true != row.suggested_class:
            shutil.move(path, review / true / path.name)


def cmd_demo(args, console: Console) -> int:
    from dataclasses import replace

    from analysis.report import manifest_tables, rounds_table
    from analysis.review import manifest_summary
    from orchestrator.demo import write_digits
    from orchestrator.passes import run_pass, save_summary
    from orchestrator.review import apply_manifest, export_review, import_review

    t0 = time.perf_counter()
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    _fresh_dir(out, "demo directory")
    planted = write_digits(out / "data", noise=args.noise, seed=args.noise_seed)
    console.print(f"wrote 1,797 digit images to {out / 'data'}; planted {len(planted)} wrong "
                  f"labels (truth in {out / 'planted.csv'})", highlight=False)
    cfg = config_from_args(args, out / "data", out / "run")
    summary = _score_round(run_pass(cfg, console, t_start=t0), cfg.run_path, planted)
    summary["wall_s"] = time.perf_counter() - t0
    save_summary(cfg.run_path, summary)
    console.print(f"[bold]planted noise: {len(planted)} images; dupes {summary['threshold']}: "
                  f"{summary['n_dupes']}; precision {summary['planted_precision']:.3f}, recall "
                  f"{summary['planted_recall']:.3f}[/]  wall {summary['wall_s']:.1f} s, "
                  f"{summary['n_trainings']} trainings, {summary['n_prediction_rows']:,} "
                  "predictions", highlight=False)
    console.print(f"run directory: {cfg.run_path}")
    if not args.review_simulate or summary["n_trainings_failed"]:
        return EXIT_FAILED_TRAININGS if summary["n_trainings_failed"] else 0

    console.rule("review round 1 (simulated technician)")
    review = out / "review"
    exported = export_review(cfg.run_path, review)
    simulate_technician(review, exported, planted)
    manifest, problems = import_review(review)
    assert not problems, problems  # the simulated technician only does valid actions
    console.print(manifest_tables(*manifest_summary(manifest)))
    apply_manifest(review / "manifest.csv", out / "data", out / "data-round2")
    fixed = set(manifest.loc[manifest["action"] == "relabel", "relpath"])
    left = planted[~planted["relpath"].isin(fixed)].reset_index(drop=True)

    console.rule("round 2 on the corrected dataset")
    cfg2 = replace(cfg, data_dir=str((out / "data-round2").resolve()),
                   run_dir=str((out / "run2").resolve()))
    summary2 = _score_round(run_pass(cfg2, console), cfg2.run_path, left)
    save_summary(cfg2.run_path, summary2)
    summary["review"] = {"manifest": str(review / "manifest.csv"),
                         "actions": manifest_summary(manifest)[0].to_dict(),
                         "round2": {k: summary2[k] for k in (
                             "n_samples", "n_dupes", "n_dupes_unconfirmed",
                             "heldout_accuracy_mean", "n_planted", "planted_precision",
                             "planted_recall", "run_dir")}}
    summary["wall_s"] = time.perf_counter() - t0
    save_summary(cfg.run_path, summary)
    console.print(rounds_table([{"round": 1, **summary}, {"round": 2, **summary2}]))
    return EXIT_FAILED_TRAININGS if summary2["n_trainings_failed"] else 0


def cmd_report(args, console: Console) -> int:
    from analysis.report import report
    from orchestrator.passes import load_analysis
    from orchestrator.storage import RemoteRun

    run = _open_run(args.run, console)
    if run is None:
        return EXIT_BAD_INPUT
    analysis, seconds = load_analysis(run, args.threshold, ledger=args.ledger,
                                      ignore_confirmed=args.ignore_confirmed,
                                      min_ratio=args.min_ratio)
    console.print(report(analysis, seconds=seconds, top=args.top))
    if args.html:
        from orchestrator.visual import write_html
        out, sheets = write_html(analysis, run, top=args.html_top,
                                 out=None if args.html is True else args.html)
        if run != args.run and out.is_relative_to(run):  # a bucket run: the report goes up too
            RemoteRun(str(args.run), run).push()
            out = f"{args.run}/{out.relative_to(run).as_posix()} (and {out})"
        console.print(f"HTML report: {out}" + (f"; {len(sheets)} contact sheet(s) in "
                                                f"{sheets[0].parent}" if sheets else ""),
                      highlight=False)
    return 0


def cmd_top_losses(args, console: Console) -> int:
    import pandas as pd

    from analysis.losses import loss_stats, top_losses
    from analysis.report import top_losses_table
    from analysis.run_analysis import analyze
    from orchestrator import rundir
    from orchestrator.passes import load_dynamics

    run = _open_run(args.run, console)
    if run is None:
        return EXIT_BAD_INPUT
    cols = rundir.read_prediction_columns(run)
    index = pd.read_parquet(run / "index.parquet")
    classes = rundir.read_json(run / "classes.json")["classes"]
    votes = analyze(index, cols, classes, scores=False, min_ratio=0,
                    dynamics=load_dynamics(run, index["label"].to_numpy())).votes
    stats = loss_stats(cols["sample_id"], cols["loss"], num_samples=len(index))
    by = index["label"].to_numpy() if args.per_class else None
    top = top_losses(stats, k=args.k, by=by).merge(
        votes.drop(columns=["mean_loss", "n_evals"]), on="sample_id", how="left")
    scope = f"the {args.k} worst of every class" if args.per_class else f"top {args.k}"
    console.print(top_losses_table(top, title=f"held-out losses: {scope} of {len(index):,} images"))
    return 0


def cmd_status(args, console: Console) -> int:
    from orchestrator import rundir
    from orchestrator.driver import all_trainings
    from orchestrator.progress import progress_table
    from orchestrator.storage import RemoteRun, is_uri

    bucket = is_uri(args.run)
    # the progress files; the partitions' markers in the bucket say what is done
    run = _open_run(args.run, console, only={"config.json", "progress.json", "summary.json"})
    if run is None:
        return EXIT_BAD_INPUT
    cfg = RunConfig.from_dict(rundir.read_json(run / "config.json"))
    planned = all_trainings(cfg.repeats)
    state = {}
    if (run / "progress.json").exists():
        saved = rundir.read_json(run / "progress.json")
        state = {(t["repeat"], t["fold"]): t for t in saved["trainings"]}
        console.print(f"progress saved {saved['updated']} "
                      f"({'running' if saved['running'] else 'stopped'})", highlight=False)
    completed = RemoteRun(args.run).committed() if bucket else rundir.completed_trainings(run)
    for item in completed:
        state.setdefault(item, {})["status"] = "done"  # the partitions are the truth
    done = sum(p.get("status") == "done" for p in state.values())
    failed = sum(p.get("status") == "failed" for p in state.values())
    console.print(progress_table(planned, state, max_rows=len(planned)))
    console.print(f"{done}/{len(planned)} trainings done, {failed} failed"
                  + (f"; summary in {args.run}/summary.json"
                     if (run / "summary.json").exists() else ""), highlight=False)
    return 0


def cmd_sanity(args, console: Console) -> int:
    from orchestrator.passes import run_sanity
    from orchestrator.scan import scan_dataset

    scan = scan_dataset(args.data, image_size=args.image_size, min_per_class=args.min_per_class)
    console.print(f"{len(scan.index):,} images in {len(scan.classes)} classes, "
                  f"{len(scan.skipped)} skipped", highlight=False)
    ok = run_sanity(scan.images, scan.index["label"].to_numpy(), scan.classes,
                    hyp_from_args(args), console)
    return 0 if ok else EXIT_FAILED_TRAININGS


def cmd_tune(args, console: Console) -> int:
    from rich.table import Table

    from orchestrator import rundir
    from orchestrator.storage import name_of
    from orchestrator.tune import load_space, run_search

    if args.resume:
        settings = rundir.read_json(args.resume / "tune.json")
    else:
        if args.data is None:
            console.print("[red]error:[/] give a dataset folder (DATA) or --resume TUNE")
            return EXIT_BAD_INPUT
        out = (args.out or Path("runs") / f"tune-{name_of(args.data)}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        _fresh_dir(out, "search directory")
        out.mkdir(parents=True, exist_ok=True)
        gpus = args.gpus_per_trial
        if gpus is None:
            import ray
            from orchestrator.driver import init_ray
            init_ray(args.address)  # stays up for the search
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        settings = {
            "data_dir": _absolute(args.data), "out": str(out), "trials": args.trials,
            "scheduler": args.scheduler, "metric": args.metric,
            "space": load_space(args.space), "base_hyp": hyp_from_args(args),
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": gpus,
            "max_concurrent": args.max_concurrent, "grace_period": args.grace_period,
            "perturbation_interval": args.perturbation_interval, "seed": args.seed,
            "train_seed": args.train_seed, "image_size": args.image_size,
            "min_per_class": args.min_per_class, "max_failures": args.max_failures,
            "address": args.address, "checkpoint_s": args.checkpoint_every_s}
        rundir.write_json(out / "tune.json", settings)
    console.print(f"searching {settings['trials']} trial(s) with {settings['scheduler']} on "
                  f"{settings['data_dir']} -> {settings['out']}", highlight=False)
    table, best = run_search(settings, resume=bool(args.resume))
    metric = settings["metric"]
    view = Table(title=f"trials ({settings['scheduler']}, {metric})", header_style="bold")
    searched = [k for k in settings["space"] if k in table.columns]
    for col in ["trial", "status", "epochs_run", f"best_{metric}", *searched]:
        view.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for row in table.sort_values(f"best_{metric}",
                                 ascending=metric == "heldout_loss").itertuples(index=False):
        r = row._asdict()
        cells = [str(r["trial"]), str(r["status"]), str(r["epochs_run"]),
                 f"{r[f'best_{metric}']:.4f}"]
        cells += [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in searched]
        view.add_row(*cells)
    console.print(view)
    errors = table[table["status"] == "error"]
    if len(errors):
        console.print(f"[yellow]{len(errors)} trial(s) failed[/]; first error: "
                      f"{errors.iloc[0]['error']}", highlight=False)
    if best is None:
        console.print("[red]every trial failed[/]: no best.json was written")
        return EXIT_FAILED_TRAININGS
    console.print(f"best {metric} {best['value']:.4f} (trial {best['trial']}): "
                  f"{best['tuned']}; use it with `dupes run DATA --config "
                  f"{Path(settings['out']) / 'best.json'}`", highlight=False)
    return 0


def cmd_review(args, console: Console) -> int:
    from analysis.report import manifest_tables, problems_table
    from analysis.review import manifest_summary
    from orchestrator.review import export_review, import_review

    if args.review_command == "export":
        run = _open_run(args.run, console)
        if run is None:
            return EXIT_BAD_INPUT
        table = export_review(run, args.out, threshold=args.threshold,
                              include_confirmed=args.include_confirmed, ledger=args.ledger,
                              copy=args.copy, min_ratio=args.min_ratio)
        console.print(f"exported {len(table)} image(s) for review to {args.out.resolve()}; "
                      f"instructions in {args.out.resolve() / 'README.txt'}", highlight=False)
        return 0
    manifest, problems = import_review(args.review, ledger=args.ledger)
    if problems:
        console.print(problems_table(problems))
        return EXIT_BAD_INPUT
    console.print(manifest_tables(*manifest_summary(manifest)))
    console.print(f"wrote {args.review.resolve() / 'manifest.csv'}; apply it with `dupes apply "
                  f"{args.review / 'manifest.csv'} --data <dataset> --out <new folder>`",
                  highlight=False)
    return 0


def cmd_apply(args, console: Console) -> int:
    from orchestrator.review import apply_manifest

    changes = apply_manifest(args.manifest, args.data, args.out, copy=args.copy)
    counts = changes["action"].value_counts().to_dict()
    console.print(f"wrote the corrected dataset {args.out.resolve()}: "
                  f"{counts.get('relabel', 0)} relabelled, {counts.get('remove', 0)} removed "
                  f"(see CHANGES.csv there); {args.data} is unchanged", highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    from orchestrator.driver import ResourceError
    from orchestrator.storage import StorageError
    from orchestrator.passes import SanityError
    from orchestrator.review import ReviewError
    from orchestrator.scan import ScanError

    parser = get_args_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        # the file's values become the defaults, so flags on the command line still win
        try:
            file_hyp = read_hyp_file(args.config)
        except (OSError, ValueError) as e:
            parser.error(f"--config {args.config}: {e}")
        sub = parser._subparsers._group_actions[0].choices[args.command]
        sub.set_defaults(**{k: v for k, v in file_hyp.items() if k in HYP_FLAGS})
        args = parser.parse_args(argv)
        args.config_hyp = file_hyp
    # soft wrap: a message never gets line breaks inside file paths in logs and pipes; and
    # logs get 120 columns rather than rich's 80, so tables keep paths on one line
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    try:
        commands = {"run": cmd_run, "demo": cmd_demo, "report": cmd_report, "tune": cmd_tune,
                    "sanity": cmd_sanity, "status": cmd_status, "top-losses": cmd_top_losses,
                    "review": cmd_review, "apply": cmd_apply}
        return commands[args.command](args, console)
    except (ScanError, ResourceError, ReviewError, FileNotFoundError, StorageError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return EXIT_BAD_INPUT
    except SanityError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return EXIT_FAILED_TRAININGS
    except KeyboardInterrupt:
        run = getattr(args, "resume", None) or getattr(args, "out", None)
        hint = f" `dupes run --resume {run}`" if run and args.command == "run" else \
            " `dupes run --resume <run directory>`"
        console.print(f"\n[yellow]interrupted.[/] Finished trainings are kept; continue with{hint}.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
