"""Run one Python peer on a folder of images; bench/peers.py starts this in bench/.venv, one tool per process.

    bench/.venv/bin/python bench/peers_run.py imagededup PHash 10 DIR OUT.json
    bench/.venv/bin/python bench/peers_run.py imagehash 0 DIR OUT.json
    bench/.venv/bin/python bench/peers_run.py versions OUT.json

Each run writes the tool's own answer, untouched: imagededup's `find_duplicates` dictionary
(file -> files within the Hamming threshold, paths relative to DIR) and, for ImageHash, every
file's 64-bit pHash with the pairs within the threshold. Grouping and scoring happen in
bench/peers.py, the same way for every tool. Nothing here imports lookalike.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def _torchvision_importable() -> None:
    """Let `import torchvision` succeed on the CPU build of torch.

    PyPI's torchvision wheels are built against CUDA torch: with torch's CPU wheel their C
    extension does not load (libc10_cuda.so missing), and torchvision 0.28's import then
    fails registering fake kernels for two of its C operators, nms and qnms. imagededup
    imports torchvision at package import for its CNN method even when only a hash method is
    used. Declaring the two operators' schemas lets the import go through; the hash methods
    never touch torch.
    """
    import torch

    _torchvision_importable.lib = library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def run_imagededup(method: str, threshold: int, folder: str, out: str) -> None:
    _torchvision_importable()
    from imagededup import methods

    hasher = getattr(methods, method)()
    duplicates = hasher.find_duplicates(image_dir=folder, max_distance_threshold=threshold, recursive=True)
    Path(out).write_text(json.dumps({"duplicates": duplicates}))


def run_imagehash(threshold: int, folder: str, out: str) -> None:
    """ImageHash as its README and find_similar_images demo use it: phash(Image.open(f)), hash - hash."""
    import imagehash
    from PIL import Image

    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if os.path.splitext(name)[1].lower() in EXTENSIONS)
    hashes, failures = {}, {}
    for path in files:
        try:
            with Image.open(path) as image:
                hashes[os.path.relpath(path, folder)] = imagehash.phash(image)
        except Exception as exc:                            # as the demo does: report and go on
            failures[os.path.relpath(path, folder)] = repr(exc)
    pairs = [[a, b, int(d)] for (a, ha), (b, hb) in itertools.combinations(sorted(hashes.items()), 2)
             if (d := ha - hb) <= threshold]
    Path(out).write_text(json.dumps({"hashes": {k: str(h) for k, h in hashes.items()}, "pairs": pairs,
                                     "failures": failures}))


def versions(out: str) -> None:
    from importlib.metadata import version

    names = ["imagededup", "ImageHash", "torch", "torchvision", "numpy", "Pillow", "scipy", "PyWavelets"]
    Path(out).write_text(json.dumps({"python": sys.version.split()[0], **{n: version(n) for n in names}}))


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "imagededup":
        run_imagededup(args[0], int(args[1]), args[2], args[3])
    elif command == "imagehash":
        run_imagehash(int(args[0]), args[1], args[2])
    elif command == "versions":
        versions(args[0])
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
