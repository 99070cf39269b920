"""Fit the similarity model and check the duplicate threshold on real photos.

    python bench/dataset.py                      # once: builds bench/.data/calibration
    python bench/calibrate.py [--workers 2]      # prints the model and the per-kind table

The features of the dataset's files are kept next to it (bench/.data/calibration.features.pkl),
tied to the extraction version, the settings and each file's size and time, so a second fit
extracts nothing.

Pairs measured: every original against each of its transformed copies (positives, by kind);
each cluster's keeper (the file with the most pixels, as star groups choose) against every other
file of it, and 1500 seeded pairs of two copies of one picture (positives); every pair inside a
same-scene group and every two framed files of one frame (hard negatives: similar, or sharing
a frame, never duplicates); and 3000 seeded random pairs of different pictures. The evidence of
each pair (match.Evidence) is fitted with a class-weighted logistic regression: hard negatives
weigh 20 times a random pair because they are the confusion users meet most, keeper pairs 3
times, because they decide whether a copy is in its group. No hard negative may come near the
duplicate threshold: each one scoring HARD_NEGATIVE_CEILING or more has its weight doubled and
the model is fitted again, until none does; one of them is the corner of the evidence where
every measure is at its best but no inlier is on the content (OFF_CONTENT). A measure that comes
out with the wrong sign is dropped and the rest fitted again. The output is pasted into
match.py (MODEL_*) and recorded in CALIBRATION.md. The held-out set (bench/dataset.py --held-out) is never fitted.

Also measured, not fitted: every two captioned copies of different pictures ("caption" pairs:
the captions share a font, not a picture). They check match.MIN_INLIER_SPREAD: every pair is
measured with that gate off, and the report gives each kind's lowest inlier spread and the
caption pairs' scores with and without the gate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pickle
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lookalike import match
from lookalike.extract import extract_file
from lookalike.imaging.features import EXTRACTION_VERSION
from lookalike.match import Candidate
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings

SCENE_WEIGHT = 20.0      # also the weight of a frame pair
# The measures the model may use, and the sign each must have: more of it, more alike.
EXPECTED_SIGNS = {"repeatability": 1, "residual": -1, "photo_low": 1, "content_inliers": 1, "photo_median": 1,
                  "inlier_span": 1, "affinity": 1}
COPY_PAIRS = 1500
KEEPER_WEIGHT = 3.0      # a keeper pair decides whether a copy is in its group at all
L2 = 0.01
# A same-scene or framed pair must stay this far below the duplicate threshold (50), not just
# under it: the margin is what keeps another set's scenes out.
HARD_NEGATIVE_CEILING = 40.0
# Two different pictures in one pixel-identical frame agree perfectly everywhere but on the
# pictures: this corner of the evidence (every measure at its best but none of the inliers on
# the content) is fitted as one more hard negative, so that no mix of the other measures can
# outweigh inliers that are all off the content (a frame the fit set does not hold).
OFF_CONTENT = {"repeatability": 1.0, "residual": 0.0, "photo_low": 1.0, "content_inliers": 0.0, "photo_median": 1.0,
               "inlier_span": 1.0, "affinity": 1.0}
MAX_REWEIGHTS = 30


def _extract(args: tuple[Path, str, ExtractionSettings]) -> tuple[str, Candidate]:
    root, relative, settings = args
    features = extract_file(str(root / relative), settings)
    return relative, Candidate(features.local, features.thumbnail, features.content_hash,
                               features.width, features.height)


def _candidates(data: Path, files: list[str], settings: ExtractionSettings, workers: int) -> dict[str, Candidate]:
    """Each file's features, extracted in `workers` processes, or read back from the cache beside
    `data` when the extraction, the settings and the files are what they were."""
    cache = data.with_name(data.name + ".features.pkl")
    key = (EXTRACTION_VERSION, settings, [(f, (data / f).stat().st_size, (data / f).stat().st_mtime_ns) for f in files])
    if cache.exists():
        cached_key, candidates = pickle.loads(cache.read_bytes())
        if cached_key == key:
            return candidates
    with ProcessPoolExecutor(workers) as pool:
        candidates = dict(pool.map(_extract, [(data, f, settings) for f in files], chunksize=8))
    cache.write_bytes(pickle.dumps((key, candidates)))
    return candidates


def pairs_of(truth: dict, files: list[str], pixels: dict[str, int], seed: int = 1) -> list[tuple[str, str, str, str]]:
    """(first, second, label, kind) with label 'dup', 'scene', 'frame', 'iso' or 'random';
    `pixels` gives each file's pixel count (the keeper of a group is the largest)."""
    pairs = []
    cluster_of = {}
    for index, cluster in enumerate(truth["clusters"]):
        cluster_of[cluster["original"]] = index
        for copy, kind in cluster["copies"].items():
            cluster_of[copy] = index
            pairs.append((cluster["original"], copy, "dup", kind if not cluster.get("labelled") else "labelled"))
    for group in truth["same_scene"]:
        label = "iso" if group["id"].endswith("_iso") else "scene"
        for a, b in itertools.combinations(group["files"], 2):
            pairs.append((a, b, label, group["id"]))
    for framed in truth.get("framed", []):        # a framed picture is its picture's, for random pairs
        cluster_of[framed["file"]] = cluster_of.get(framed["shows"][0], framed["shows"][0])
    # The comparisons star groups make: the keeper (the most pixels) with every other file; the
    # keeper is often a copy (a border adds pixels), so two edits meet.
    for cluster in truth["clusters"]:
        members = [cluster["original"], *cluster["copies"]]
        keeper = max(members, key=lambda f: (pixels[f], f))
        pairs += [(keeper, f, "dup", "keeper_pair") for f in members if f != keeper]
    rng = random.Random(seed)
    # Two copies of one picture must match too, whichever is kept.
    copy_pairs = [(a, b) for cluster in truth["clusters"] if not cluster.get("labelled")
                  for a, b in itertools.combinations(sorted(cluster["copies"]), 2)]
    pairs += [(a, b, "dup", "copy_pair") for a, b in rng.sample(copy_pairs, min(COPY_PAIRS, len(copy_pairs)))]
    # Hard negatives: different pictures in one frame (a viewer window, a meme template...).
    for kind in truth.get("frame_kinds", []):
        framed = sorted(f["file"] for f in truth["framed"] if f["frame"] == kind)
        pairs += [(a, b, "frame", kind) for a, b in itertools.combinations(framed, 2)]
    while sum(p[2] == "random" for p in pairs) < 3000:
        a, b = rng.sample(files, 2)
        if cluster_of.get(a, a) != cluster_of.get(b, b):
            pairs.append((a, b, "random", "random"))
    return pairs


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted L2-regularised logistic regression by Newton's method."""
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ theta))
        gradient = design.T @ (weight * (p - y)) + L2 * np.r_[theta[:-1], 0]
        hessian = (design * (weight * p * (1 - p))[:, None]).T @ design + L2 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def fit_below_ceiling(x: np.ndarray, y: np.ndarray, weight: np.ndarray,
                      hard_negative: np.ndarray) -> tuple[np.ndarray, float, list[tuple[int, float]]]:
    """fit_logistic, with the weight of every hard negative that scores HARD_NEGATIVE_CEILING or
    more doubled and the model fitted again until none does; also (index, final weight) of the
    hard negatives reweighted."""
    original, weight = weight, weight.copy()
    ceiling = math.log(HARD_NEGATIVE_CEILING / (100 - HARD_NEGATIVE_CEILING))
    for _ in range(MAX_REWEIGHTS):
        weights, bias = fit_logistic(x, y, weight)
        over = hard_negative & (x @ weights + bias >= ceiling)
        if not over.any():
            break
        weight[over] *= 2
    else:
        raise SystemExit(f"hard negatives still at {HARD_NEGATIVE_CEILING} or more after {MAX_REWEIGHTS} reweightings")
    return weights, bias, [(int(i), float(weight[i])) for i in np.flatnonzero(weight != original)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/calibration.json"))
    args = parser.parse_args()

    truth = json.loads((args.data / "truth.json").read_text())
    files = sorted(str(p.relative_to(args.data)) for p in args.data.rglob("*")
                   if p.is_file() and p.name != "truth.json")
    candidates = _candidates(args.data, files, ExtractionSettings(), args.workers)

    pairs = pairs_of(truth, files, {f: c.width * c.height for f, c in candidates.items()})
    captioned = [f for f in files if f.startswith("copies/text_overlay/")]
    captions = [(a, b, "caption", "caption") for a, b in itertools.combinations(captioned, 2)]
    gate, match.MIN_INLIER_SPREAD = match.MIN_INLIER_SPREAD, 0.0
    evidence = [match.compare(candidates[a], candidates[b], ExtractionSettings.detector).evidence
                for a, b, _, _ in pairs + captions]
    match.MIN_INLIER_SPREAD = gate
    evidence, caption_evidence = evidence[:len(pairs)], evidence[len(pairs):]
    measured = [(p, e) for p, e in zip(pairs, evidence) if e is not None]
    fitting = [(p, e) for p, e in measured if p[2] != "iso"]
    dropped: list[dict] = []
    y = np.array([1.0 if p[2] == "dup" else 0.0 for p, _ in fitting])
    weight = np.array([SCENE_WEIGHT if p[2] in ("scene", "frame") else KEEPER_WEIGHT if p[3] == "keeper_pair" else 1.0
                       for p, _ in fitting])
    hard_negative = np.array([p[2] in ("scene", "frame") for p, _ in fitting] + [True])
    y, weight = np.r_[y, 0.0], np.r_[weight, SCENE_WEIGHT]
    # A measure that comes out with the wrong sign is collinear with the others and fitted to
    # the quirks of this set (it would reward, say, pixels that disagree): it is dropped and
    # the rest fitted again.
    names = tuple(EXPECTED_SIGNS)
    while True:
        evidence_rows = [e.features(names) for _, e in fitting] + [tuple(OFF_CONTENT[name] for name in names)]
        weights, bias, reweighted = fit_below_ceiling(np.array(evidence_rows), y, weight, hard_negative)
        wrong = [name for name, w in zip(names, weights) if np.sign(w) != EXPECTED_SIGNS[name]]
        if not wrong:
            break
        dropped.append({"feature": wrong[0], "weights": dict(zip(names, np.round(weights, 3).tolist()))})
        names = tuple(name for name in names if name != wrong[0])

    def similarity(e):
        if e is None:
            return 0.0
        z = bias + float(np.dot(weights, e.features(names)))
        return 100 / (1 + math.exp(-z))

    scores: dict[str, list[float]] = {}
    spreads: dict[str, list[float]] = {}
    for (a, b, label, kind), e in zip(pairs, evidence):
        key = kind if label == "dup" else label
        scores.setdefault(key, []).append(similarity(e))
        if e is not None:
            spreads.setdefault(key, []).append(e.spread)
    threshold = DEFAULT_DUPLICATE_THRESHOLD
    report = {
        "model": {"features": list(names), "weights": [round(w, 3) for w in weights],
                  "bias": round(bias, 3), "dropped_for_wrong_sign": dropped,
                  "hard_negative_ceiling": HARD_NEGATIVE_CEILING,
                  "hard_negatives_reweighted": [(*fitting[i][0][:2], w) if i < len(fitting) else ("off_content", w)
                                                for i, w in reweighted]},
        "threshold": threshold,
        "pairs": {k: {"n": len(v), "min": round(min(v), 1), "p5": round(float(np.percentile(v, 5)), 1),
                      "median": round(float(np.median(v)), 1), "max": round(max(v), 1),
                      "at_or_above_threshold": round(float(np.mean(np.array(v) >= threshold)), 3)}
                  for k, v in sorted(scores.items())},
        "inlier_spread": {
            "gate": gate,
            "lowest_by_kind": {k: round(min(v), 4) for k, v in sorted(spreads.items())},
            "caption_pairs": len(captions),
            "caption_pairs_at_or_above_threshold_without_gate": sorted(
                [(round(similarity(e), 1), round(e.spread, 4), a, b) for (a, b, _, _), e in zip(captions, caption_evidence)
                 if e is not None and similarity(e) >= threshold], reverse=True),
            "caption_pairs_at_or_above_threshold_with_gate": sum(
                e is not None and e.spread >= gate and similarity(e) >= threshold for e in caption_evidence),
        },
        "scene_pairs_top": sorted(
            [(round(similarity(e), 1), a, b) for (a, b, label, _), e in zip(pairs, evidence) if label in ("scene", "iso")],
            reverse=True)[:8],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"MODEL_FEATURES = {names}\nMODEL_WEIGHTS = {tuple(round(float(w), 3) for w in weights)}\nMODEL_BIAS = {round(bias, 3)}")
    for step in dropped:
        print(f"dropped {step['feature']}: {step['weights']}")
    print(f"{'pairs':16s} {'n':>5s} {'min':>6s} {'p5':>6s} {'median':>6s} {'max':>6s}  >= {threshold:g}")
    for kind, row in report["pairs"].items():
        print(f"{kind:16s} {row['n']:5d} {row['min']:6.1f} {row['p5']:6.1f} {row['median']:6.1f} {row['max']:6.1f}  {row['at_or_above_threshold']:.3f}")
    print("highest same-scene pairs:")
    for s, a, b in report["scene_pairs_top"]:
        print(f"  {s:5.1f}  {a}  {b}")


if __name__ == "__main__":
    main()
