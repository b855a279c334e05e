"""Batch-size optimization profiles (``--batch MIN:OPT:MAX``) shared by engines, trtexec and Triton."""

from __future__ import annotations

from dataclasses import dataclass

from .contract import FLOAT_INPUT, input_shape
from .errors import InputError

MAX_BATCH = 4096


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 8
    max: int = 32

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def shapes(self, img_size: int, input_format: str = FLOAT_INPUT) -> dict[str, tuple[int, int, int, int]]:
        """Input shapes (NCHW, or NHWC for uint8-nhwc) for the profile's min, opt and max."""
        return {k: input_shape(input_format, getattr(self, k), img_size) for k in ("min", "opt", "max")}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch_profile(text: str) -> BatchProfile:
    """'1:8:32' -> BatchProfile(1, 8, 32); '8' -> static 8:8:8. Raises InputError naming the value."""
    expected = f"expected MIN:OPT:MAX (or one N) with 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}, e.g. 1:8:32"
    parts = str(text).strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not all(p.strip().isdecimal() for p in parts):  # not isdigit: '²'
        raise InputError(expected, field="batch", value=text)
    lo, opt, hi = (int(p) for p in parts)
    if not 1 <= lo <= opt <= hi <= MAX_BATCH:
        raise InputError(expected, field="batch", value=text)
    return BatchProfile(lo, opt, hi)
