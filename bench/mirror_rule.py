"""When may a comparison skip the mirrored fit (match.compare, MIRROR_NEEDLESS_ABOVE)?

    .venv/bin/python bench/mirror_rule.py

A comparison fits the two images as they are and again with the first mirrored, and keeps the
fit with more tight inliers. On the peers benchmark's context (bench/peers.py builds it), every
pair of images of one cluster (an original and its transformed copies) is fitted both ways;
for each repeatability of the unmirrored fit, how many pairs reach it and in how many the
mirrored fit would still have won; and each win above the lowest level, with the similarity
the pair scores with the mirrored fit and without it. Writes bench/results/mirror_rule.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import scale
from lookalike import match
from lookalike.match import _verify
from lookalike.store import SearchContext
from runinfo import machine, revision

RESULTS = Path("bench/results/mirror_rule.json")
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def main() -> None:
    cluster = scale.cluster_of(scale.real_records(scale.SOURCE))
    context = SearchContext.open(scale.SOURCE)
    images = sorted(context.images(), key=lambda image: image.num)
    members: dict[str, list] = {}
    for image in images:
        members.setdefault(cluster[image.path], []).append(image)
    fits = []                   # (unmirrored repeatability, unmirrored tight inliers, mirrored tight inliers)
    high_wins = []
    detector = context.settings.detector
    for group in members.values():
        loaded = [(image.path, context.candidate(image.num)[1]) for image in group]
        for i, (first_path, first) in enumerate(loaded):
            for second_path, second in loaded[i + 1:]:
                unit = second.pixel_unit
                plain = _verify(first.local, second.local, unit, flipped=False)
                mirror = _verify(first.mirror(detector), second.local, unit, flipped=True)
                fits.append((plain[2]["repeatability"] if plain else 0.0, plain[1] if plain else 0,
                             mirror[1] if mirror else 0))
                if fits[-1][0] >= LEVELS[0] and fits[-1][2] > fits[-1][1]:
                    high_wins.append({"first": first_path, "second": second_path, "repeatability": fits[-1][0],
                                      **similarities_with_and_without_the_mirror(first, second, detector)})
    context.close()
    fits = np.array(fits)
    mirror_won = fits[:, 2] > fits[:, 1]
    result = {"pairs": len(fits), "mirrored_fit_won": int(mirror_won.sum()),
              "largest_unmirrored_repeatability_where_the_mirrored_won": float(fits[mirror_won, 0].max()),
              "at_or_above": {level: {"pairs": int((fits[:, 0] >= level).sum()),
                                      "mirrored_fit_won": int((mirror_won & (fits[:, 0] >= level)).sum())}
                              for level in LEVELS},
              "wins_at_or_above_the_lowest_level": high_wins,
              "machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv)}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def similarities_with_and_without_the_mirror(first, second, detector: str) -> dict:
    gate = match.MIRROR_NEEDLESS_ABOVE
    try:
        match.MIRROR_NEEDLESS_ABOVE = float("inf")
        mirrored = match.compare(first, second, detector).similarity
        match.MIRROR_NEEDLESS_ABOVE = 0.0
        unmirrored = match.compare(first, second, detector).similarity
    finally:
        match.MIRROR_NEEDLESS_ABOVE = gate
    return {"similarity_with_mirrored_fit": round(mirrored, 1), "similarity_unmirrored_only": round(unmirrored, 1)}


if __name__ == "__main__":
    main()
