"""Choose the AKAZE descriptor bits the LSH tables key on, from real photos.

AKAZE's bits are far from fair coins: many are almost always 0 or 1, and neighbours agree.
Keys made of such bits pile most descriptors into a few buckets, so a query reads a large share
of the index (40 times the postings fair bits would give, measured on the scale benchmark).
This takes the indexed descriptors of every photo in a folder and, table by table, picks bits
nearest to a fair coin that correlate with none already in the table (|r| < MAX_CORRELATION),
preferring bits no other table uses. It prints the tables with the bucket collision probability they reach on the
same descriptors, next to random positions.

    python bench/derive_lsh_bits.py PHOTOS/images > daemon/lookalike/store/akaze_lsh_bits.json

PHOTOS: the development photo set (CALIBRATION.md, "Data").
"""

import json
import sys
from pathlib import Path

import numpy as np

from lookalike.extract import extract_file
from lookalike.settings import ExtractionSettings
from lookalike.store.index import INDEXED_DESCRIPTORS, KEY_BITS, TABLES

MAX_CORRELATION = 0.2


def collision_probability(bits: np.ndarray, positions: list[int]) -> float:
    """How likely two descriptors drawn at random share a bucket (1 / 2**KEY_BITS for fair, independent bits)."""
    keys = (bits[:, positions].astype(np.int64) << np.arange(len(positions))).sum(axis=1)
    _, counts = np.unique(keys, return_counts=True)
    share = counts / counts.sum()
    return float((share * share).sum())


def main() -> None:
    files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file())
    settings = ExtractionSettings()
    descriptors = np.concatenate([extract_file(str(f), settings).local.descriptors[:INDEXED_DESCRIPTORS] for f in files])
    bits = np.unpackbits(descriptors, axis=1)
    balance = bits.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.nan_to_num(np.corrcoef(bits.T.astype(np.float32)))
    fairest = [int(b) for b in np.argsort(np.abs(balance - 0.5))]
    used: set[int] = set()
    tables = []
    for _ in range(TABLES):
        chosen: list[int] = []
        # Bits no table uses yet first; a table that runs out of them shares bits with another.
        for bit in [b for b in fairest if b not in used] + [b for b in fairest if b in used]:
            if bit in chosen or any(abs(correlation[bit, other]) >= MAX_CORRELATION for other in chosen):
                continue
            chosen.append(bit)
            if len(chosen) == KEY_BITS:
                break
        used.update(chosen)
        tables.append(sorted(chosen))
    rng = np.random.default_rng(0)
    random_positions = [rng.choice(bits.shape[1], KEY_BITS, replace=False).tolist() for _ in range(TABLES)]
    json.dump({"derived_from": f"{len(files)} photos of {sys.argv[1]}, {len(descriptors)} descriptors",
               "max_correlation": MAX_CORRELATION,
               "collision_probability": [collision_probability(bits, t) for t in tables],
               "collision_probability_random_positions": [collision_probability(bits, t) for t in random_positions],
               "balance": [[round(float(balance[b]), 3) for b in t] for t in tables],
               "tables": tables}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
