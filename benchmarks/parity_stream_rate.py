"""Image rate and memory of mixnet-parity's streaming path (--labels / --predictions) on this machine.

    python benchmarks/parity_stream_rate.py CANDIDATE [CANDIDATE ...] --images DIR [--weights W] [--batch 8]

Measures, in one process: decoding + preprocessing alone (``data.iter_crops``, images/s), the peak
of numpy allocations while decoding a quarter of the folder and the whole of it (tracemalloc: equal
peaks mean memory does not grow with the number of images), and the whole pass (reference + every
candidate, predictions written) in images/s. Prints JSON with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from mixnet_deploy import data, parity
from mixnet_deploy.atomic import json_text
from mixnet_deploy.labels import labelled_images


def decode_pass(paths, pre, batch: int) -> tuple[float, int]:
    """(seconds, peak bytes of numpy allocations) to decode and normalize ``paths`` batch by batch."""
    tracemalloc.start()
    start = time.perf_counter()
    for _, crops in data.iter_crops(paths, pre, batch, {}):
        pre.normalize(crops)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--images", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    paths = labelled_images(args.images).paths
    pre = data.Preprocess()
    load = {"before": os.getloadavg()}
    quarter_s, quarter_peak = decode_pass(paths[: len(paths) // 4], pre, args.batch)
    decode_s, decode_peak = decode_pass(paths, pre, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parity.ParityConfig(
            candidates=tuple(args.candidates), weights=args.weights, images=args.images, batch=args.batch,
            predictions=str(Path(tmp) / "p.jsonl"),
        )  # fmt: skip
        start = time.perf_counter()
        report = parity.run_parity(cfg)
        total_s = time.perf_counter() - start
    load["after"] = os.getloadavg()
    result = {
        "images": len(paths), "batch": args.batch, "models": 1 + len(args.candidates), "cpus": os.cpu_count(),
        "decode_images_per_s": round(len(paths) / decode_s, 1),
        "decode_peak_numpy_mib": {f"{len(paths) // 4} images": round(quarter_peak / 2**20, 1),
                                  f"{len(paths)} images": round(decode_peak / 2**20, 1)},
        "end_to_end_images_per_s": round(report.results[0].metrics.n / total_s, 2),
        "end_to_end_s_including_model_loading": round(total_s, 1), "loadavg": load,
    }  # fmt: skip
    print(json_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
