"""Learn the AKAZE descriptor bit permutation that mirroring an image applies.

For each photo: extract AKAZE features from the image and from its left-right mirror, pair the
keypoints that land on the same mirrored position at the same scale, and for every bit of the
mirrored descriptor find the original bit (or its inverse) that agrees with it most often.

    python bench/derive_mirror_table.py PHOTOS/images > daemon/lookalike/imaging/akaze_mirror.json

PHOTOS: the development photo set (CALIBRATION.md, "Data"), the default.

The output records the agreement it reached; lookalike matches with the table, so an imperfect
bit only adds noise to a descriptor distance, it does not break matching.
"""

import json
import sys
from pathlib import Path

import numpy as np

from lookalike.imaging.decode import DecodeLimits, decode, read_file
from lookalike.imaging.features import extract_local

WORKING_SIZE = 640


def paired_descriptors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    limits = DecodeLimits(max_pixels=200_000_000, max_file_bytes=1 << 30)
    image = decode(str(path), read_file(str(path), limits).data, limits, WORKING_SIZE).pixels
    plain = extract_local(image, "akaze", 100_000)
    mirror = extract_local(np.ascontiguousarray(image[:, ::-1]), "akaze", 100_000)
    mapped = mirror.keypoints.copy()
    mapped[:, 0] = (image.shape[1] - 1) - mapped[:, 0]
    originals, mirrored = [], []
    for j, (x, y, size, _) in enumerate(mapped):
        distance = np.hypot(plain.keypoints[:, 0] - x, plain.keypoints[:, 1] - y)
        i = int(np.argmin(distance))
        if distance[i] < 0.3 and abs(plain.keypoints[i, 2] - size) < 0.01:
            originals.append(plain.descriptors[i])
            mirrored.append(mirror.descriptors[j])
    return np.array(originals).reshape(-1, 61), np.array(mirrored).reshape(-1, 61)


def main(folder: str) -> None:
    photos = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    pairs = [paired_descriptors(p) for p in photos]
    original = np.unpackbits(np.concatenate([a for a, _ in pairs]), axis=1).astype(bool)
    mirror = np.unpackbits(np.concatenate([b for _, b in pairs]), axis=1).astype(bool)
    agreement = np.stack([(mirror[:, [k]] == original).mean(axis=0) for k in range(mirror.shape[1])])
    best = np.maximum(agreement, 1 - agreement)
    permutation = best.argmax(axis=1)
    invert = agreement[np.arange(len(permutation)), permutation] < 0.5
    reached = best[np.arange(len(permutation)), permutation]
    derived = original[:, permutation] ^ invert
    json.dump({
        "detector": "akaze",
        "derived_by": "bench/derive_mirror_table.py " + folder,
        "photos": len(photos),
        "keypoint_pairs": int(len(original)),
        "bit_agreement_median": round(float(np.median(reached)), 4),
        "bit_agreement_min": round(float(reached.min()), 4),
        "mean_hamming_derived_vs_true": round(float((derived != mirror).sum(1).mean()), 2),
        "mean_hamming_plain_vs_true": round(float((original != mirror).sum(1).mean()), 2),
        "permutation": permutation.tolist(),
        "invert": invert.astype(int).tolist(),
    }, sys.stdout, indent=None)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/photos/images")
