"""Build the calibration and benchmark dataset from the real photos in ../shared/photos.

    python bench/dataset.py --photos ../shared/photos --out bench/.data/calibration

Writes, under --out:
  photos/       a copy of shared/photos (images/, near-duplicates/, same-scene/)
  copies/KIND/  one transformed copy of every photo in images/ per transform kind
  truth.json    the duplicate clusters (an original with its copies, and the labelled
                near-duplicate groups), the same-scene groups (similar, never duplicates) and
                the pairs left out of scoring (the ISO pairs: same tripod, same framing)

Deterministic: each copy's random choices are seeded from the photo's name and the kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

JPEG_QUALITY = 90


def _rng(name: str, kind: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{name}/{kind}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def resize(img, rng):
    scale = rng.uniform(0.35, 0.6)
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), ".jpg"


def recompress(img, rng):
    quality = int(rng.integers(25, 45))
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR), ".jpg"


def format_change(img, rng):
    return img, ".webp"


def crop_half(img, rng):
    h, w = img.shape[:2]
    side = rng.integers(4)
    return [img[:, : w // 2], img[:, w // 2:], img[: h // 2], img[h // 2:]][side], ".jpg"


def rotate_90(img, rng):
    return np.ascontiguousarray(np.rot90(img, -1)), ".jpg"


def rotate_180(img, rng):
    return np.ascontiguousarray(img[::-1, ::-1]), ".jpg"


def rotate_270(img, rng):
    return np.ascontiguousarray(np.rot90(img, 1)), ".jpg"


def rotate_small(img, rng):
    angle = float(rng.uniform(2, 8) * rng.choice([-1, 1]))
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, matrix, (w, h), borderMode=cv2.BORDER_CONSTANT), ".jpg"


def flip(img, rng):
    return np.ascontiguousarray(img[:, ::-1]), ".jpg"


def recolour(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(30, 150))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    gamma = rng.uniform(0.6, 1.5)
    out = 255.0 * (out / 255.0) ** gamma
    return np.clip(out, 0, 255).astype(np.uint8), ".jpg"


def grayscale(img, rng):
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), ".jpg"


def blur(img, rng):
    sigma = max(img.shape[:2]) / 640 * rng.uniform(1.5, 2.5)
    return cv2.GaussianBlur(img, (0, 0), sigma), ".jpg"


def border(img, rng):
    h, w = img.shape[:2]
    pad = int(max(h, w) * rng.uniform(0.05, 0.15))
    colour = [int(c) for c in rng.integers(0, 256, 3)]
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour), ".jpg"


def text_overlay(img, rng):
    out = img.copy()
    h, w = out.shape[:2]
    scale = max(h, w) / 400
    for line in range(int(rng.integers(2, 4))):
        words = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789 "), 14))
        y = int(h * rng.uniform(0.15, 0.95))
        x = int(w * rng.uniform(0.0, 0.2))
        cv2.putText(out, words, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(2, int(scale * 3)), cv2.LINE_AA)
    return out, ".jpg"


TRANSFORMS = {f.__name__: f for f in (
    resize, recompress, format_change, crop_half, rotate_90, rotate_180, rotate_270,
    rotate_small, flip, recolour, grayscale, blur, border, text_overlay)}


def build(photos: Path, out: Path) -> dict:
    if (out / "photos").exists():
        shutil.rmtree(out / "photos")
    shutil.copytree(photos, out / "photos", ignore=shutil.ignore_patterns("*.md", "*.json"))
    originals = sorted(p for p in (out / "photos" / "images").rglob("*") if p.is_file())
    clusters = []
    for original in originals:
        img = cv2.imdecode(np.fromfile(original, np.uint8), cv2.IMREAD_COLOR)
        cluster = {"original": str(original.relative_to(out)), "copies": {}}
        stem = "_".join(original.relative_to(out / "photos" / "images").with_suffix("").parts)
        for kind, transform in TRANSFORMS.items():
            pixels, ext = transform(img, _rng(stem, kind))
            target = out / "copies" / kind / f"{stem}{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else [cv2.IMWRITE_WEBP_QUALITY, 80]
            ok, data = cv2.imencode(ext, pixels, params)
            target.write_bytes(data.tobytes())
            cluster["copies"][str(target.relative_to(out))] = kind
        clusters.append(cluster)

    near = json.loads((photos / "near-duplicates" / "groups.json").read_text())["groups"]
    for group in near:
        clusters.append({"original": "photos/" + group["original"], "labelled": True, "copies": {
            "photos/" + f: group["transforms"][f] for f in group["files"] if f != group["original"]}})
    scenes = json.loads((photos / "same-scene" / "groups.json").read_text())["groups"]
    same_scene = [{"id": g["id"], "kind": g["kind"], "files": ["photos/" + f for f in g["files"]]}
                  for g in scenes]
    excluded = [g["files"] for g in same_scene if g["id"].endswith("_iso")]
    truth = {"clusters": clusters, "same_scene": same_scene, "excluded_pairs": excluded,
             "transform_kinds": list(TRANSFORMS)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--out", type=Path, default=Path("bench/.data/calibration"))
    args = parser.parse_args()
    truth = build(args.photos, args.out)
    files = sum(1 + len(c["copies"]) for c in truth["clusters"])
    print(f"{args.out}: {len(truth['clusters'])} duplicate clusters, {files} files in clusters, "
          f"{len(truth['same_scene'])} same-scene groups")


if __name__ == "__main__":
    main()
