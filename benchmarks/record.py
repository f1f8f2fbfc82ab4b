"""Where a benchmark's results go: one run appended to its JSON file under
benchmarks/results/, stamped with the time and the CPU (timings compare only within a CPU)."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def append_run(out: Path, **fields) -> None:
    """Append {"when", "cpu", **fields} to the "runs" of `out` (created if missing)."""
    old = json.loads(out.read_text()) if out.exists() else {"runs": []}
    old["runs"].append({"when": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), **fields})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(old, indent=1))
