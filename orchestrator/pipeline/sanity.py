"""The preflight check, in a pass and as `dupes sanity`: overfit one batch, then a short
training that must beat chance, on a stratified sample of the image cache.

`dupes sanity DATA` reads a sample of DATA through the same cache code as a pass and settles
the image size, model and hyperparameters through the same settings path
(`pipeline.settings`), so it checks what `dupes run DATA` would train.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from analysis.report import format_duration, model_and_training
from orchestrator.config import ScanSettings
from orchestrator.data.cache import (build_cache, sharded_images, stratified_sample,
                                      usable_images)
from orchestrator.data.scan import auto_max
from orchestrator.pipeline.plan import probe_images
from orchestrator.pipeline.settings import aspect_for, resolve_hyperparameters, settle_flip
from orchestrator.run.remote import ShardStore
from trainers.hyp import Hyp
from trainers.sanity import mirror_check, sanity

SANITY_SAMPLE = 4096  # images the sanity check trains on: its cost must not grow with N


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


def run_sanity(images, labels, classes, hyp: Hyp, console: Console, *,
               expected_s: float | None = None) -> dict:
    """Run the preflight checks in this process and print the verdict; returns it as
    sanity.json holds it ({"ok", "seconds", "checks"})."""
    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    about = f", about {format_duration(expected_s)}" if expected_s else ""
    console.print(f"sanity check ({hyp.model}, {len(labels):,} images{about}): overfit one "
                  "batch, then a short training that must beat chance", highlight=False)
    verdict = sanity(np.asarray(images), np.asarray(labels), classes, hyp, device=device)
    console.print(sanity_table(verdict.checks))
    return {"ok": verdict.ok, "seconds": time.perf_counter() - t0,
            "checks": [dataclasses.asdict(c) for c in verdict.checks]}


def settings_table(hyp: Hyp, chosen: dict, *, n_images: int, image_size: int,
                   channels: int, aspect: str, shown: dict | None = None) -> Table:
    """What `dupes run` would train on these data, in the words of its plan; `shown` adds
    what the hyperparameters do not hold (frozen mode: the weights' name and sha256)."""
    table = Table(title="settings (as `dupes run` would train)", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("data", f"{n_images:,} images, {image_size}x{image_size}x{channels} "
                          f"({aspect})")
    for k, v in [*model_and_training({**hyp.to_dict(), **(shown or {})}), *chosen.items()]:
        table.add_row(k, v)
    return table


def check_dataset(data, scan: ScanSettings, hyp: Hyp, *, given, console: Console,
                  seed: int = 0) -> bool:
    """`dupes sanity DATA`: decode a sample of DATA into a temporary image cache, settle the
    settings as a pass would, print them, and run the checks; True if they pass."""
    gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory(prefix="dupes-sanity-") as tmp:
        store = ShardStore(tmp)
        cache = build_cache(data, store, image_size=scan.image_size, aspect=scan.aspect,
                            min_per_class=scan.min_per_class, seed=seed,
                            max_auto_size=auto_max(gpus), sample=SANITY_SAMPLE, local=True,
                            aspect_for=aspect_for(hyp, gpu=gpus > 0))
        images = store_images(store, cache)
    labels = cache.index["label"].to_numpy()
    p = cache.plan
    console.print(f"{len(cache.index):,} images in {len(cache.classes)} classes, "
                  f"{len(cache.skipped)} skipped", highlight=False)
    n_images = usable_images(cache)
    hyp, chosen = resolve_hyperparameters(hyp, given=given, n_images=n_images,
                                          image_size=p.size, channels=p.channels, gpu=gpus > 0)
    if hyp.mode == "frozen":
        return frozen_check(images, labels, hyp, chosen, console, gpu=gpus > 0,
                            table=dict(n_images=n_images, image_size=p.size,
                                       channels=p.channels, aspect=p.aspect), seed=seed)
    if "flip" not in given:  # as the pass's probe does, on the same kind of sample
        sample = stratified_sample(labels, 2 * probe_images(p.size), seed=seed)
        mirror = mirror_check(images[sample], labels[sample], seed=seed,
                              device="cuda" if gpus else "cpu")
        hyp, chosen = settle_flip(hyp, chosen, dataclasses.asdict(mirror))
    console.print(settings_table(hyp, chosen, n_images=n_images, image_size=p.size,
                                 channels=p.channels, aspect=p.aspect))
    return run_sanity(images, labels, cache.classes, hyp, console)["ok"]


def frozen_check(images: np.ndarray, labels: np.ndarray, hyp: Hyp, chosen: dict,
                 console: Console, *, gpu: bool, table: dict, seed: int = 0) -> bool:
    """Frozen mode's check, on the sample: the weights load (strictly), and a head on half of
    the sample's features beats always guessing the largest class on the other half."""
    from orchestrator.pipeline.embed import embed_size
    from trainers.backbones import embed, feature_extractor, spec_of
    from trainers.heads import train_head
    size = embed_size(hyp.embed_size, gpu=gpu, native=spec_of(hyp.backbone).size)
    hyp = dataclasses.replace(hyp, embed_size=size)
    ext, got = feature_extractor(hyp.backbone, size=size, weights=hyp.weights,
                                 device="cuda" if gpu else "cpu")
    console.print(settings_table(hyp, chosen, **table, shown={
        "weights_name": got.name, "weights_sha256": got.sha256}))
    features = embed(ext, images)
    order = np.random.default_rng(seed).permutation(len(labels))
    tr, ev = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
    held = train_head(hyp, features, labels, tr, ev, seed=seed, num_classes=int(labels.max()) + 1)
    accuracy = float((held.pred == labels[ev]).mean())
    chance = float(np.bincount(labels[ev]).max() / max(1, len(ev)))
    ok = accuracy > chance
    console.print(f"{'[green]ok[/]' if ok else '[red]failed[/]'}: a head on {len(tr)} images' "
                  f"features predicts {len(ev)} others at {accuracy:.3f} held-out accuracy "
                  f"(always the largest class: {chance:.3f})", highlight=False)
    return ok


def store_images(store: ShardStore, cache) -> np.ndarray:
    """A small cache's images in memory, in sample order (the store is about to go)."""
    return sharded_images(store, cache.placement, cache.n_shards).load_all()
