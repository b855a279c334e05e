"""Make tests/oracles/timm_preprocess.npz: timm's own eval transform applied to bundled photos.

Run once in a venv with timm (and torchvision), pointing at scikit-image's bundled images:

    python tests/oracles/make_preprocess_oracle.py /path/to/site-packages/skimage/data

For each image and size it stores timm's float32 output of
``create_transform(**resolve_data_config({}, model=timm.create_model("mixnet_s")))`` with the
input size replaced, plus the SHA-256 of the source file so the test can tell when the bundled
file changed. mixnet_deploy.data must reproduce it (tests/test_data.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import timm
from PIL import Image
from timm.data import create_transform, resolve_data_config

IMAGES = ("chelsea.png", "camera.png", "rocket.jpg")  # RGB PNG, grayscale PNG, JPEG
SIZES = (64, 96)


def main(data_dir: str) -> None:
    model = timm.create_model("mixnet_s", pretrained=False)
    base = resolve_data_config({}, model=model)
    arrays, meta = {}, {"timm_version": timm.__version__, "config": {k: str(v) for k, v in base.items()}, "files": {}}
    for name in IMAGES:
        path = Path(data_dir) / name
        meta["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
        for size in SIZES:
            cfg = dict(base, input_size=(3, size, size))
            transform = create_transform(**cfg, is_training=False)
            with Image.open(path) as img:
                arrays[f"{name}@{size}"] = transform(img.convert("RGB")).numpy().astype(np.float32)
    out = Path(__file__).with_name("timm_preprocess.npz")
    np.savez_compressed(out, meta=json.dumps(meta), **arrays)
    print(out, {k: v.shape for k, v in arrays.items()}, meta["config"])


if __name__ == "__main__":
    main(sys.argv[1])
