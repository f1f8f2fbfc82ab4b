"""Where a dataset and a run stand in rounds of review.

`dupes apply` writes `.dupes/provenance.json` into the corrected copy: the round it ends, the
source, the manifest (with its sha256), the run the review came from and the ledger. A run on
that copy reads it, so it knows it is round N+1 and which run was round N, from any folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

PROVENANCE_REL = ".dupes/provenance.json"


def read_provenance(data: Path | str) -> dict | None:
    """The provenance a corrected copy holds, or None (an original dataset, a bucket, or a
    file that cannot be read: a round number is a convenience, never a reason to stop)."""
    path = Path(str(data)) / PROVENANCE_REL
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def provenance(src: Path | str, manifest_path: Path, changes: dict) -> dict:
    """What a corrected copy of `src` made from `manifest_path` records about itself."""
    manifest_path = Path(manifest_path).resolve()
    meta = {}
    review_json = manifest_path.parent / ".dupes" / "review.json"
    try:
        meta = json.loads(review_json.read_text())
    except (OSError, ValueError):
        pass  # a manifest written by hand or moved away from its review folder
    before = read_provenance(src) or {}
    return {"round": int(before.get("round", 0)) + 1, "source": str(src),
            "manifest": str(manifest_path),
            "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
            "run": meta.get("run_dir"), "ledger": meta.get("ledger"),
            "changes": changes}  # no time stamp: the same manifest gives the same tree


def run_round(data: Path | str) -> dict:
    """A new run's place in the rounds: `round` (1 on an original dataset) and, on a
    corrected copy, what made it (`after`: its provenance)."""
    prov = read_provenance(data)
    return {"round": int(prov["round"]) + 1, "after": prov} if prov else {"round": 1}
