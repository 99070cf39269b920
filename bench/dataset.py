"""Build the calibration dataset from the project's real photos, and the held-out one from
photographs shipped in a Debian package.

    python bench/dataset.py --photos PHOTOS --out bench/.data/calibration

PHOTOS defaults to the development photo set (CALIBRATION.md, "Data").
    python bench/dataset.py --held-out --out bench/.data/held-out

Writes, under --out:
  photos/       the photos (calibration: a copy of PHOTOS: images/, near-duplicates/,
                same-scene/; held-out: the package's photographs)
  copies/KIND/  one transformed copy of every photo per transform kind
  frames/KIND/  hard negatives: different pictures in one frame (a viewer window, a meme
                template, a slide...), one file per picture; same frame, different content
  truth.json    the duplicate clusters (an original with its copies, and the labelled
                near-duplicate groups), the same-scene groups (similar, never duplicates), the
                framed files, and the pairs left out of scoring (the ISO pairs: same tripod,
                same framing; a framed file and the picture it shows)

The two sets share no photo, no transform kind beyond the common ones (TRANSFORMS) and no frame:
the model is fitted on the calibration set and only reported on the held-out one.
Deterministic: each copy's random choices are seeded from the photo's name and the kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
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


def crop_heavy(img, rng):
    """A centre crop keeping 36 % of the area, saved at JPEG quality 60."""
    h, w = img.shape[:2]
    y0, x0 = int(round(h * 0.2)), int(round(w * 0.2))
    return img[y0:h - y0, x0:w - x0], ".jpg", 60


# --- held-out transform kinds (never fitted on) ---------------------------------------------

def crop_third_q50(img, rng):
    """A third of the area, off centre, saved at quality 50."""
    h, w = img.shape[:2]
    ch, cw = int(h * 0.577), int(w * 0.577)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return img[y0:y0 + ch, x0:x0 + cw], ".jpg", 50


def white_border(img, rng):
    h, w = img.shape[:2]
    pad = int(max(h, w) * rng.uniform(0.08, 0.2))
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(255, 255, 255)), ".jpg"


def thumbnail_q40(img, rng):
    scale = rng.uniform(0.15, 0.25)
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), ".jpg", 40


def stretch(img, rng):
    h, w = img.shape[:2]
    return cv2.resize(img, (int(w * rng.uniform(1.1, 1.3)), h), interpolation=cv2.INTER_AREA), ".jpg"


def noise(img, rng):
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8), ".jpg"


def rotate_crop(img, rng):
    """Straightened: turned 6-12 degrees and cropped to the picture, no corners."""
    angle = float(rng.uniform(6, 12) * rng.choice([-1, 1]))
    h, w = img.shape[:2]
    turned = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h))
    margin_y, margin_x = int(h * 0.15), int(w * 0.15)
    return turned[margin_y:h - margin_y, margin_x:w - margin_x], ".jpg"


def flip_resize(img, rng):
    return cv2.resize(np.ascontiguousarray(img[:, ::-1]), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), ".jpg"


def logo_overlay(img, rng):
    """An opaque logo block over a tenth of the picture, in a corner."""
    out = img.copy()
    h, w = out.shape[:2]
    bh, bw = int(h * 0.25), int(w * 0.4)
    y0, x0 = [(0, 0), (0, w - bw), (h - bh, 0), (h - bh, w - bw)][int(rng.integers(4))]
    out[y0:y0 + bh, x0:x0 + bw] = (30, 60, 200)
    cv2.putText(out, "BRAND", (x0 + bw // 10, y0 + bh * 2 // 3), cv2.FONT_HERSHEY_DUPLEX, bw / 180,
                (255, 255, 255), max(2, bw // 90), cv2.LINE_AA)
    return out, ".jpg"


TRANSFORMS = {f.__name__: f for f in (
    resize, recompress, format_change, crop_half, rotate_90, rotate_180, rotate_270,
    rotate_small, flip, recolour, grayscale, blur, border, text_overlay)}
CALIBRATION_TRANSFORMS = {**TRANSFORMS, "crop_heavy": crop_heavy}
HELD_OUT_TRANSFORMS = {f.__name__: f for f in (
    resize, recompress, rotate_90, flip, grayscale, crop_third_q50, white_border, thumbnail_q40, stretch,
    noise, rotate_crop, flip_resize, logo_overlay)}


# --- hard negatives: one frame, different pictures -------------------------------------------
# Each frame is the same for every picture put in it (no randomness): two framed files agree
# on the frame exactly and on nothing else.

FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_into(canvas, picture, x0, y0, x1, y1):
    """`picture` scaled to fit the box, centred in it, drawn on `canvas`."""
    h, w = picture.shape[:2]
    scale = min((x1 - x0) / w, (y1 - y0) / h)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    fitted = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    top, left = y0 + (y1 - y0 - size[1]) // 2, x0 + (x1 - x0 - size[0]) // 2
    canvas[top:top + size[1], left:left + size[0]] = fitted
    return canvas


def _text(canvas, lines, x, y, step, scale, colour, thickness=1):
    for number, line in enumerate(lines):
        cv2.putText(canvas, line, (x, y + number * step), FONT, scale, colour, thickness, cv2.LINE_AA)


def viewer_window(picture):
    """An image viewer's window: title bar, toolbar, a sidebar of album names, a status bar."""
    canvas = np.full((800, 1280, 3), 38, np.uint8)
    canvas[:34] = 64
    _text(canvas, ["Photos - Holiday 2026 - IMG_0412.JPG"], 420, 23, 0, 0.6, (230, 230, 230))
    for x, colour in ((16, (80, 80, 250)), (40, (60, 200, 250)), (64, (80, 200, 80))):
        cv2.circle(canvas, (x, 17), 7, colour, -1, cv2.LINE_AA)
    canvas[34:80, 250:] = 52
    for number, label in enumerate(["Import", "Edit", "Rotate", "Share", "Delete", "Slideshow"]):
        cv2.rectangle(canvas, (262 + number * 110, 44), (362 + number * 110, 70), (90, 90, 90), 1)
        _text(canvas, [label], 272 + number * 110, 63, 0, 0.5, (220, 220, 220))
    canvas[34:, :250] = 28
    albums = ["Library", "Favourites", "Recent", "Screenshots", "Camera Roll", "Family", "Beach 2024",
              "Mountains", "Birthday", "Garden", "Paris trip", "Wedding", "Scans", "Pets", "Archive 2019",
              "Snow", "Concerts", "Recipes", "Documents", "Trash"]
    for number, album in enumerate(albums):
        cv2.rectangle(canvas, (14, 52 + number * 36), (34, 72 + number * 36), (120, 160, 200), -1)
        _text(canvas, [album], 44, 68 + number * 36, 0, 0.55, (210, 210, 210))
    canvas[772:, 250:] = 52
    _text(canvas, ["4032 x 3024   2.4 MB   f/1.8   1/120 s   ISO 100   12 of 431"], 262, 792, 0, 0.5, (200, 200, 200))
    return _fit_into(canvas, picture, 256, 86, 1274, 766)


def meme_template(picture):
    """A meme: the picture between two white bands with the same caption."""
    h, w = picture.shape[:2]
    width = 800
    height = int(h * width / w)
    canvas = np.full((height + 260, width, 3), 255, np.uint8)
    canvas[130:130 + height] = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    _text(canvas, ["WHEN THE CODE WORKS"], 40, 85, 0, 1.7, (0, 0, 0), 4)
    _text(canvas, ["ON THE FIRST TRY"], 110, height + 215, 0, 1.7, (0, 0, 0), 4)
    _text(canvas, ["memes.example.org"], width - 230, height + 250, 0, 0.6, (120, 120, 120), 1)
    return canvas


def slide_template(picture):
    """A presentation slide: title bar, bullet points, footer with a logo; the picture at the right."""
    canvas = np.full((720, 1280, 3), 250, np.uint8)
    canvas[:100] = (140, 70, 20)
    _text(canvas, ["Quarterly Review: Field Work 2026"], 40, 65, 0, 1.3, (255, 255, 255), 2)
    bullets = ["- Sites visited: 14", "- Samples taken: 312", "- Weather: mostly dry",
               "- Next steps: lab analysis", "- Budget: on track", "- Questions?"]
    for number, line in enumerate(bullets):
        _text(canvas, [line], 50, 190 + number * 60, 0, 0.9, (40, 40, 40), 2)
    canvas[670:] = (140, 70, 20)
    cv2.circle(canvas, (60, 695), 18, (0, 180, 255), -1, cv2.LINE_AA)
    _text(canvas, ["ACME Research  |  Confidential  |  3"], 100, 703, 0, 0.7, (255, 255, 255), 1)
    return _fit_into(canvas, picture, 640, 130, 1250, 650)


def caption_band(picture):
    """A black frame with a caption band and a logo under the picture, as a photo club posts it."""
    h, w = picture.shape[:2]
    width = 900
    height = int(h * width / w)
    canvas = np.zeros((height + 200, width + 60, 3), np.uint8)
    canvas[30:30 + height, 30:30 + width] = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    cv2.circle(canvas, (90, height + 115), 40, (40, 180, 240), -1, cv2.LINE_AA)
    _text(canvas, ["CAMERA CLUB"], 58, height + 120, 0, 0.45, (0, 0, 0), 1)
    _text(canvas, ["Summer Festival 2026", "photo of the week - vote at club.example"], 160, height + 100, 42, 1.0,
          (255, 255, 255), 2)
    return canvas


def watermark(picture):
    """A stock-photo watermark: a large translucent text across the middle, a corner logo."""
    h, w = picture.shape[:2]
    width = 1000
    height = int(h * width / w)
    canvas = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    mark = np.zeros_like(canvas)
    _text(mark, ["PREVIEW  STOCKPIX"], 60, height // 2, 0, 2.6, (255, 255, 255), 7)
    _text(mark, ["stockpix.example  #48213"], width - 360, height - 24, 0, 0.8, (255, 255, 255), 2)
    return cv2.addWeighted(canvas, 1.0, mark, 0.55, 0)


def product_shot(picture):
    """A shop's product photo: the item (a square from the picture's centre) on the shop's white
    background, with its name, price badge and logo."""
    h, w = picture.shape[:2]
    side = int(min(h, w) * 0.6)
    item = picture[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    canvas = np.full((1000, 1000, 3), 255, np.uint8)
    cv2.ellipse(canvas, (500, 800), (260, 40), 0, 0, 360, (225, 225, 225), -1, cv2.LINE_AA)
    canvas[230:730, 250:750] = cv2.resize(item, (500, 500), interpolation=cv2.INTER_AREA)
    _text(canvas, ["SHOPNAME"], 40, 70, 0, 1.4, (30, 30, 30), 3)
    cv2.rectangle(canvas, (760, 860), (960, 950), (40, 40, 220), -1)
    _text(canvas, ["19.99"], 790, 920, 0, 1.3, (255, 255, 255), 3)
    _text(canvas, ["Free delivery - 30 day returns"], 40, 960, 0, 0.8, (90, 90, 90), 2)
    return canvas


def phone_screenshot(picture):
    """A phone's screenshot of a social app: status bar, app header, the picture, action row and
    navigation bar."""
    canvas = np.full((1600, 900, 3), 250, np.uint8)
    canvas[:60] = (20, 20, 20)
    _text(canvas, ["09:41"], 30, 42, 0, 1.0, (255, 255, 255), 2)
    _text(canvas, ["5G  87%"], 720, 42, 0, 0.9, (255, 255, 255), 2)
    cv2.circle(canvas, (60, 120), 36, (180, 120, 60), -1, cv2.LINE_AA)
    _text(canvas, ["natureshots_daily", "Sponsored"], 115, 112, 34, 0.9, (30, 30, 30), 2)
    _fit_into(canvas, picture, 0, 180, 900, 1240)
    for number, label in enumerate(["Like", "Comment", "Share", "Save"]):
        _text(canvas, [label], 30 + number * 220, 1300, 0, 0.9, (40, 40, 40), 2)
    _text(canvas, ["1,204 likes", "natureshots_daily  Golden hour again #nofilter"], 30, 1360, 44, 0.85,
          (30, 30, 30), 2)
    canvas[1480:] = (245, 245, 245)
    for number in range(5):
        cv2.rectangle(canvas, (70 + number * 170, 1510), (120 + number * 170, 1560), (60, 60, 60), 3)
    return canvas


CALIBRATION_FRAMES = {f.__name__: f for f in (viewer_window, meme_template, slide_template, watermark)}
HELD_OUT_FRAMES = {f.__name__: f for f in (caption_band, product_shot, phone_screenshot)}


def _write(pixels, target: Path, ext: str, quality: int = JPEG_QUALITY) -> None:
    """A transform returns (pixels, ext), or (pixels, ext, JPEG quality) when it saves at its own."""
    target.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else [cv2.IMWRITE_WEBP_QUALITY, 80]
    ok, data = cv2.imencode(ext, pixels, params)
    target.write_bytes(data.tobytes())


def _copies(out: Path, originals: list[Path], root: Path, transforms: dict) -> list[dict]:
    clusters = []
    for original in originals:
        img = cv2.imdecode(np.fromfile(original, np.uint8), cv2.IMREAD_COLOR)
        cluster = {"original": str(original.relative_to(out)), "copies": {}}
        stem = "_".join(original.relative_to(root).with_suffix("").parts)
        for kind, transform in transforms.items():
            pixels, ext, *quality = transform(img, _rng(stem, kind))
            target = out / "copies" / kind / f"{stem}{ext}"
            _write(pixels, target, ext, *quality)
            cluster["copies"][str(target.relative_to(out))] = kind
        clusters.append(cluster)
    return clusters


def _frames(out: Path, pictures: dict[str, list[str]], frames: dict) -> list[dict]:
    """Every picture in every frame. `pictures` maps a picture's file (relative to `out`) to the
    files showing the same picture: a framed file is not scored against those, nor against the
    same picture in another frame."""
    framed = []
    for kind, frame in frames.items():
        for picture, same_picture in pictures.items():
            img = cv2.imdecode(np.fromfile(out / picture, np.uint8), cv2.IMREAD_COLOR)
            target = out / "frames" / kind / (Path(picture).stem + ".jpg")
            _write(frame(img), target, ".jpg")
            framed.append({"file": str(target.relative_to(out)), "frame": kind, "shows": same_picture})
    for one in framed:
        one["shows"] = one["shows"] + [other["file"] for other in framed
                                       if other["shows"][0] == one["shows"][0] and other is not one]
    return framed


def build(photos: Path, out: Path) -> dict:
    if (out / "photos").exists():
        shutil.rmtree(out / "photos")
    shutil.copytree(photos, out / "photos", ignore=shutil.ignore_patterns("*.md", "*.json"))
    originals = sorted(p for p in (out / "photos" / "images").rglob("*") if p.is_file())
    clusters = _copies(out, originals, out / "photos" / "images", CALIBRATION_TRANSFORMS)

    near = json.loads((photos / "near-duplicates" / "groups.json").read_text())["groups"]
    for group in near:
        clusters.append({"original": "photos/" + group["original"], "labelled": True, "copies": {
            "photos/" + f: group["transforms"][f] for f in group["files"] if f != group["original"]}})
    scenes = json.loads((photos / "same-scene" / "groups.json").read_text())["groups"]
    same_scene = [{"id": g["id"], "kind": g["kind"], "files": ["photos/" + f for f in g["files"]]}
                  for g in scenes]
    excluded = [g["files"] for g in same_scene if g["id"].endswith("_iso")]
    # The frames hold one picture of each same-scene group that is in no cluster.
    pictures = {g["files"][0]: [g["files"][0]] for g in same_scene if not g["id"].endswith("_iso")}
    framed = _frames(out, pictures, CALIBRATION_FRAMES)
    truth = {"clusters": clusters, "same_scene": same_scene, "framed": framed,
             "excluded_pairs": excluded + [[f["file"], shown] for f in framed for shown in f["shows"]],
             "transform_kinds": list(CALIBRATION_TRANSFORMS), "frame_kinds": list(CALIBRATION_FRAMES)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


# The held-out photos: the nature photographs of MATE's backgrounds (GPL-2+; CALIBRATION.md).
HELD_OUT_PACKAGE = "mate-backgrounds"
HELD_OUT_FOLDER = "usr/share/backgrounds/mate/nature"


def build_held_out(out: Path) -> dict:
    """Fetch the package with apt (no root needed), unpack its photos, copy and frame them."""
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["apt-get", "download", HELD_OUT_PACKAGE], cwd=work, check=True, capture_output=True)
        package = next(Path(work).glob(f"{HELD_OUT_PACKAGE}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(Path(work) / "unpacked")], check=True)
        if (out / "photos").exists():
            shutil.rmtree(out / "photos")
        shutil.copytree(Path(work) / "unpacked" / HELD_OUT_FOLDER, out / "photos")
        source = package.name
    originals = sorted(p for p in (out / "photos").iterdir() if p.is_file())
    clusters = _copies(out, originals, out / "photos", HELD_OUT_TRANSFORMS)
    pictures = {c["original"]: [c["original"], *c["copies"]] for c in clusters}
    framed = _frames(out, pictures, HELD_OUT_FRAMES)
    truth = {"source": source, "clusters": clusters, "same_scene": [], "framed": framed,
             "excluded_pairs": [[f["file"], shown] for f in framed for shown in f["shows"]],
             "transform_kinds": list(HELD_OUT_TRANSFORMS), "frame_kinds": list(HELD_OUT_FRAMES)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--held-out", action="store_true",
                        help=f"build the held-out set from the Debian package {HELD_OUT_PACKAGE} instead")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/.data/calibration, or bench/.data/held-out with --held-out")
    args = parser.parse_args()
    out = args.out or Path("bench/.data/held-out" if args.held_out else "bench/.data/calibration")
    truth = build_held_out(out) if args.held_out else build(args.photos, out)
    files = sum(1 + len(c["copies"]) for c in truth["clusters"])
    print(f"{out}: {len(truth['clusters'])} duplicate clusters, {files} files in clusters, "
          f"{len(truth['same_scene'])} same-scene groups, {len(truth['framed'])} framed files")


if __name__ == "__main__":
    main()
