"""Vote thresholds: which vote counts make an image a dupe.

The original method flags images predicted as the same wrong class in "10, 9 or 8" of 10
held-out evaluations; users write that as `10`, `>=9`, `8-10` and so on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_FORMS = "'N' (at least N), '>=N', '>N', '==N' (exactly N), 'A-B' (A to B inclusive)"


@dataclass(frozen=True)
class Threshold:
    """An inclusive range of vote counts, `low <= votes <= high` (high None: no upper bound)."""

    low: int
    high: int | None = None
    text: str = ""

    def mask(self, votes: np.ndarray) -> np.ndarray:
        votes = np.asarray(votes)
        keep = votes >= self.low
        if self.high is not None:
            keep &= votes <= self.high
        return keep

    def __str__(self) -> str:
        if self.high is None:
            return f">={self.low}"
        if self.high == self.low:
            return f"=={self.low}"
        return f"{self.low}-{self.high}"


def parse_threshold(text: str | int) -> Threshold:
    """Parse a vote threshold.

    `8` and `">=8"` mean at least 8 votes; `">8"` at least 9; `"==10"` exactly 10; `"8-10"`
    8 to 10 inclusive. A threshold below 1 would flag images nobody voted against, so it is
    refused.
    """
    s = str(text).strip().replace(" ", "")
    m = re.fullmatch(r"(>=|>|==|=)?(\d+)", s)
    if m:
        op, n = m.group(1) or ">=", int(m.group(2))
        low, high = {">=": (n, None), ">": (n + 1, None), "==": (n, n), "=": (n, n)}[op]
    else:
        m = re.fullmatch(r"(\d+)-(\d+)", s)
        if not m:
            raise ValueError(f"invalid threshold {text!r}: valid forms are {_FORMS}")
        low, high = int(m.group(1)), int(m.group(2))
        if high < low:
            raise ValueError(f"invalid threshold {text!r}: the range {low}-{high} is empty")
    if low < 1:
        raise ValueError(f"invalid threshold {text!r}: it must require at least 1 vote")
    return Threshold(low, high, str(text))
