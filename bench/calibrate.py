"""Fit the similarity model and check the duplicate threshold on real photos.

    python bench/dataset.py                      # once: builds bench/.data/calibration
    python bench/calibrate.py [--workers 2]      # prints the model and the per-kind table

Pairs measured: every original against each of its transformed copies (positives, by kind),
every pair inside a same-scene group (hard negatives: similar, never duplicates), and 3000
seeded random pairs of different pictures. The evidence of each pair (match.Evidence) is fitted
with a class-weighted logistic regression; same-scene pairs weigh 20 times a random pair because
they are the confusion users meet most. The output is pasted into match.py (MODEL_*) and
recorded in CALIBRATION.md.

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
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lookalike import match
from lookalike.extract import extract_file
from lookalike.match import Candidate
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings

SCENE_WEIGHT = 20.0
L2 = 0.01


def _extract(args: tuple[Path, str, ExtractionSettings]) -> tuple[str, Candidate]:
    root, relative, settings = args
    features = extract_file(str(root / relative), settings)
    return relative, Candidate(features.local, features.thumbnail, features.content_hash,
                               features.width, features.height)


def pairs_of(truth: dict, files: list[str], seed: int = 1) -> list[tuple[str, str, str, str]]:
    """(first, second, label, kind) with label 'dup', 'scene', 'iso' or 'random'."""
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
    rng = random.Random(seed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/calibration.json"))
    args = parser.parse_args()

    truth = json.loads((args.data / "truth.json").read_text())
    files = sorted(str(p.relative_to(args.data)) for p in args.data.rglob("*")
                   if p.is_file() and p.name != "truth.json")
    settings = ExtractionSettings()
    with ProcessPoolExecutor(args.workers) as pool:
        candidates = dict(pool.map(_extract, [(args.data, f, settings) for f in files], chunksize=8))

    pairs = pairs_of(truth, files)
    captioned = [f for f in files if f.startswith("copies/text_overlay/")]
    captions = [(a, b, "caption", "caption") for a, b in itertools.combinations(captioned, 2)]
    gate, match.MIN_INLIER_SPREAD = match.MIN_INLIER_SPREAD, 0.0
    evidence = [match.compare(candidates[a], candidates[b], settings.detector).evidence
                for a, b, _, _ in pairs + captions]
    match.MIN_INLIER_SPREAD = gate
    evidence, caption_evidence = evidence[:len(pairs)], evidence[len(pairs):]
    measured = [(p, e) for p, e in zip(pairs, evidence) if e is not None]
    fitting = [(p, e) for p, e in measured if p[2] != "iso"]
    x = np.array([e.features() for _, e in fitting])
    y = np.array([1.0 if p[2] == "dup" else 0.0 for p, _ in fitting])
    weight = np.array([SCENE_WEIGHT if p[2] == "scene" else 1.0 for p, _ in fitting])
    weights, bias = fit_logistic(x, y, weight)

    def similarity(e):
        if e is None:
            return 0.0
        z = bias + float(np.dot(weights, e.features()))
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
        "model": {"features": list(match.MODEL_FEATURES), "weights": [round(w, 3) for w in weights],
                  "bias": round(bias, 3)},
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
    print(f"MODEL_WEIGHTS = {tuple(round(w, 3) for w in weights)}\nMODEL_BIAS = {round(bias, 3)}")
    print(f"{'pairs':16s} {'n':>5s} {'min':>6s} {'p5':>6s} {'median':>6s} {'max':>6s}  >= {threshold:g}")
    for kind, row in report["pairs"].items():
        print(f"{kind:16s} {row['n']:5d} {row['min']:6.1f} {row['p5']:6.1f} {row['median']:6.1f} {row['max']:6.1f}  {row['at_or_above_threshold']:.3f}")
    print("highest same-scene pairs:")
    for s, a, b in report["scene_pairs_top"]:
        print(f"  {s:5.1f}  {a}  {b}")


if __name__ == "__main__":
    main()
