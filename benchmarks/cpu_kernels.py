"""What the small CNN's kernels cost on one CPU thread: the measurements behind the trainer's
CPU settings (channels-last, bf16 autocast where the CPU has native bf16, held-out batches of
at most 128).

    .venv/bin/python benchmarks/cpu_kernels.py

Synthetic batches of the small CNN's shapes (MNIST 28 px x 1, CIFAR 32 px x 3), width 16 and
32; training steps (forward, backward, SGD) at batch 128, and inference at batches 64 to 1024.
Prints a table and writes benchmarks/results/cpu_kernels.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "cpu_kernels.json"


def rate(step, batch: int, seconds: float = 2.0) -> float:
    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    from trainers.models import SmallCNN
    from trainers.train import bf16_autocast

    torch.set_num_threads(1)
    native_bf16 = bf16_autocast(torch.device("cpu"))
    rows = []
    for channels, size, width in ((1, 28, 16), (3, 32, 16), (3, 32, 32)):
        for layout, amp in (("nchw", False), ("channels_last", False), ("channels_last", True)):
            if amp and not native_bf16:
                continue
            torch.manual_seed(0)
            model = SmallCNN(channels, 10, width)
            if layout == "channels_last":
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
            x, y = torch.randn(128, channels, size, size), torch.randint(0, 10, (128,))

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    loss = torch.nn.functional.cross_entropy(model(x).float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rows.append({"what": "train, batch 128", "shape": f"{size}x{size}x{channels}",
                         "width": width, "layout": layout, "bf16": amp,
                         "images_per_s": rate(step, 128)})
            model.eval()
            for batch in (64, 128, 256, 1024):
                xb = torch.randn(batch, channels, size, size)

                def infer():
                    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                         enabled=amp):
                        torch.softmax(model(xb).float(), 1)
                rows.append({"what": f"predict, batch {batch}",
                             "shape": f"{size}x{size}x{channels}", "width": width,
                             "layout": layout, "bf16": amp, "images_per_s": rate(infer, batch)})
    table = Table(title=f"small CNN on 1 CPU thread (native bf16: {native_bf16})")
    for col in ("what", "shape", "width", "layout", "bf16", "images/s"):
        table.add_column(col, justify="right" if col == "images/s" else "left")
    for r in rows:
        table.add_row(r["what"], r["shape"], str(r["width"]), r["layout"], str(r["bf16"]),
                      f"{r['images_per_s']:,.0f}")
    Console().print(table)
    OUT.write_text(json.dumps({"native_bf16": native_bf16, "torch": torch.__version__,
                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
