"""Reliability and security: the daemon against crashes, hostile files and races.

- The daemon SIGKILLed at random moments of a heavy ingest, 22 times in a row, with files added,
  rewritten with other pictures, renamed and deleted around every kill: afterwards the context
  opens and checks clean, holds every file on disk exactly once with its current bytes, nothing
  for a deleted file, no half record or stray index entry, and its duplicate groups are those
  of a clean rebuild (and of the pictures the test put there).
- A crash in the middle of creating the context does not keep the daemon from starting again.
- One daemon, one folder of hostile files (empty, truncated, random bytes, a 50,000 x 50,000 PNG
  bomb, a FIFO, symlink loops, an unreadable file, odd names, thousands of files in one folder)
  among odd but good images: it stays up and answers, indexes every good image, records each
  bad file with its reason (context, counter, one log line) and keeps its memory bounded.
- `extract.examine` on a file rewritten while it is read, and on one deleted before the read.
- A bounded, deterministic fuzz of `extract.examine`.

Real processes, files, kernel and LMDB throughout; the daemon is only dealt with from outside.
"""

from __future__ import annotations

import collections
import faulthandler
import functools
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, event, given, settings as hypothesis_settings, strategies as st

import images
from harness import (Daemon, content_hash, descendants, lookalike, lookalike_json, rss_bytes, running, total,
                     unreadable_prefix)
from lookalike.errors import ExitCode, ImageError, NotFoundError, display_path
from lookalike.extract import Extracted, SameContent, Unreadable, examine
from lookalike.imaging.features import detector_info
from lookalike.service import SETTLED_AGE_SECONDS
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext, codec, index, inspection

SETTLE = "0.3s"


def make_daemon(daemons, watch: list[Path], state: Path, **settings) -> Daemon:
    """A daemon as these tests run it: two workers and a short settle time."""
    return daemons(watch, state, workers=2, settle_seconds=SETTLE, **settings)


# --- a pool of pictures, every pair of them clear-cut ----------------------------------------
#
# Tiles cut side by side (no overlap) from scikit-image's photos. Measured both ways with
# `match.compare` over every pair of the 86 files `variant` makes: the two encodings of one tile
# score >= 99.99, two different tiles <= 0.5, so which image of a pair the context numbers first
# (it differs between the daemon's context and a rebuild) cannot change a group. Three tiles that
# came within reach of the threshold (one direction 40-51 against another tile) are left out;
# photos with little texture (retina, moon, the colour wheel) and star fields (Hubble: matched as
# 1% of another field at 98.5 one way, 0 the other) are not used.

TILE_SOURCES = ("astronaut", "camera", "chelsea", "coffee", "coins", "immunohistochemistry", "rocket",
                "stereo_motorcycle")
TILE_SIDE = 170
TILES_LEFT_OUT = {"astronaut-340-340", "camera-170-170", "coffee-0-170"}


@functools.lru_cache(maxsize=None)
def tiles() -> tuple[np.ndarray, ...]:
    found = []
    for name in TILE_SOURCES:
        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):
            pixels = pixels[0]
        if pixels.ndim == 2:
            pixels = np.dstack([pixels] * 3)
        pixels = np.ascontiguousarray(pixels[..., :3])
        height, width = pixels.shape[:2]
        for y in range(0, height - TILE_SIDE + 1, TILE_SIDE):
            for x in range(0, width - TILE_SIDE + 1, TILE_SIDE):
                tile = np.ascontiguousarray(pixels[y:y + TILE_SIDE, x:x + TILE_SIDE])
                if f"{name}-{y}-{x}" not in TILES_LEFT_OUT and images.grey(tile).std() >= 20:
                    found.append(tile)
    assert len(found) == 43, "the pool is not the one measured"
    return tuple(found)


@functools.lru_cache(maxsize=None)
def variant(tile: int, kind: str) -> bytes:
    """Tile `tile` as a JPEG 200-400 px wide, or (`kind` "png") as a PNG of another size."""
    pixels = tiles()[tile]
    side = 200 + (37 * tile) % 201
    if kind == "jpg":
        return images.jpeg_bytes(images.resized(pixels, side, side))
    other = 600 - side if 600 - side <= 400 else 300
    return images.encode(".png", images.resized(pixels, other, other))


# --- 1. SIGKILL at random moments -------------------------------------------------------------

KILLS = 22
TREE_SIZE = 40


class Tree:
    """The photo folders as the test made them: path -> the tile its picture is."""

    def __init__(self, root: Path, rng: random.Random):
        self.root = root
        self.rng = rng
        self.folders = [root, root / "a", root / "b" / "c"]
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[Path, int] = {}
        self._names = 0

    def _write(self, path: Path, tile: int) -> None:
        path.write_bytes(variant(tile, path.suffix[1:]))
        self.files[path] = tile

    def _picture(self, kind: str, not_tile: int | None = None) -> int:
        used = collections.Counter(self.files.values())
        if self.rng.random() < 0.25 and used:
            # A deliberate duplicate: a picture already there, in either encoding.
            choices = [t for t in used if t != not_tile]
        else:
            choices = [t for t in range(len(tiles())) if t not in used and t != not_tile]
            choices = choices or [t for t in range(len(tiles())) if t != not_tile]
        return self.rng.choice(sorted(choices))

    def add(self) -> None:
        self._names += 1
        kind = self.rng.choice(("jpg", "jpg", "png"))
        self._write(self.rng.choice(self.folders) / f"img{self._names:03d}.{kind}", self._picture(kind))

    def change(self) -> None:
        path = self.rng.choice(sorted(self.files))
        self._write(path, self._picture(path.suffix[1:], not_tile=self.files[path]))

    def rename(self) -> None:
        path = self.rng.choice(sorted(self.files))
        self._names += 1
        target = self.rng.choice(self.folders) / f"img{self._names:03d}{path.suffix}"
        os.rename(path, target)
        self.files[target] = self.files.pop(path)

    def delete(self) -> None:
        path = self.rng.choice(sorted(self.files))
        path.unlink()
        del self.files[path]

    def mutate(self, adds: int, changes: int, renames: int, deletes: int) -> None:
        if len(self.files) > TREE_SIZE:
            deletes += adds           # churn, but keep the tree near its size
        steps = ["add"] * adds + ["change"] * changes + ["rename"] * renames + ["delete"] * deletes
        self.rng.shuffle(steps)
        for step in steps:
            getattr(self, step)()

    def expected_groups(self) -> set[frozenset[str]]:
        by_tile = collections.defaultdict(set)
        for path, tile in self.files.items():
            by_tile[tile].add(str(path))
        return {frozenset(paths) for paths in by_tile.values() if len(paths) > 1}


def differences(context_dir: Path, files) -> list[str]:
    """How the context differs from `files` on disk (empty once it holds exactly them, each with
    its current identity and bytes, and has no failure)."""
    try:
        with SearchContext.open(context_dir) as context:
            stored = list(context.images())
            failed = context.failures()
    except NotFoundError:
        return ["no context yet"]
    problems = [f"failed: {f.path}: {f.reason}" for f in failed]
    paths = [image.path for image in stored]
    problems += [f"stored twice: {p}" for p, n in collections.Counter(paths).items() if n > 1]
    on_disk = {str(p) for p in files}
    problems += [f"not stored: {p}" for p in sorted(on_disk - set(paths))]
    problems += [f"stored but gone: {p}" for p in sorted(set(paths) - on_disk)]
    for image in stored:
        if image.path in on_disk:
            st = os.stat(image.path)
            data = Path(image.path).read_bytes()
            if (image.identity.size, image.identity.mtime_ns) != (st.st_size, st.st_mtime_ns):
                problems.append(f"old identity: {image.path}")
            if image.content_hash != content_hash(data):
                problems.append(f"old content: {image.path}")
    return problems


def newest_image(context_dir: Path) -> int:
    """The highest image number stored: it grows with every image a run commits."""
    try:
        with SearchContext.open(context_dir) as context:
            return max((image.num for image in context.images()), default=0)
    except NotFoundError:
        return 0


def assert_whole_and_consistent(context_dir: Path) -> None:
    """Every record decodes and every index entry belongs to a stored image, no more and no less."""
    with SearchContext.open(context_dir) as context:
        stored = list(context.images())
        assert len(stored) == context.count()
        detector = context.settings.detector
        hasher = index.Hasher(detector, detector_info(detector).bits_per_descriptor // 8, True)
        lsh_keys = set()
        for image in stored:
            again, candidate = context.candidate(image.num)
            assert again == image and context.find(image.path) == image
            assert candidate.local.descriptors.shape[0] == image.features
            lsh_keys.update((key, index.NUM.pack(image.num))
                            for key in index.lsh_keys(hasher, candidate.local.descriptors))
    nums = {index.NUM.pack(image.num) for image in stored}
    raw = inspection.database_entries(context_dir)
    for name in ("images", "features"):
        assert {key for key, _ in raw[name]} == nums, f"{name} does not match the stored images"
    assert sorted(value for _, value in raw["paths"]) == sorted(nums)
    assert sorted(value for _, value in raw["hashes"]) == sorted(nums)
    # A chunk posting is the image number and the image's fingerprint.
    fingerprints = {index.NUM.pack(image.num) + image.fingerprint.to_bytes(8, "big") for image in stored}
    assert collections.Counter(value for _, value in raw["chunks"]) == {value: 4 for value in fingerprints}
    assert set(raw["lsh"]) == lsh_keys and len(raw["lsh"]) == len(lsh_keys)
    for name in ("images", "features", "failed"):
        for _, value in raw[name]:
            codec.unpack(value)
    # The duplicate graph names only stored images, and every pair is recorded both ways.
    assert {key for key, _ in raw["pending"]} <= nums
    pairs = {key for key, _ in raw["pairs"]}
    assert {key[:4] for key in pairs} | {key[4:] for key in pairs} <= nums
    assert {key[4:] + key[:4] for key in pairs} == pairs


def duplicate_groups(config: Path, output: Path) -> set[frozenset[str]]:
    result = lookalike("--config", config, "duplicates", "--output", output, "--format", "json")
    assert result.returncode == ExitCode.OK, result.stderr
    document = json.loads(output.read_text())
    return {frozenset(image["path"] for image in group["images"]) for group in document["groups"]}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_leaves_no_half_record(daemons, tmp_path):
    rng = random.Random(20261121)
    tree = Tree(tmp_path / "photos", rng)
    for _ in range(TREE_SIZE):
        tree.add()
    daemon = make_daemon(daemons, [tree.root], tmp_path / "state")
    kills, orphans = [], []
    for kill in range(KILLS):
        newest = newest_image(daemon.context_dir)
        started = time.monotonic()
        daemon.start()
        # Half the changes land while it runs (events), half while it is down (the reconcile).
        # Every other kill comes at any moment from start-up on (imports, opening or creating
        # the context, the reconcile), the others within a second of the run's first stored
        # image, while the backlog is being extracted and committed.
        if kill % 2 == 0:
            at = rng.uniform(0.1, 2.0)
            changed_at = rng.uniform(0.0, at)
            time.sleep(changed_at)
            tree.mutate(adds=3, changes=2, renames=1, deletes=1)
            time.sleep(max(0.0, at - changed_at))
        else:
            after = rng.uniform(0.0, 1.0)
            daemon.wait(lambda: newest_image(daemon.context_dir) > newest, f"kill {kill}: a first commit",
                        timeout=30)
            tree.mutate(adds=3, changes=2, renames=1, deletes=1)
            time.sleep(after)
        assert daemon.alive(), f"kill {kill}: the daemon ended on its own\n{daemon.log_tail()}"
        orphans += daemon.kill()
        kills.append(round(time.monotonic() - started, 2))
        tree.mutate(adds=3, changes=2, renames=0, deletes=1)

    daemon.start()
    problems: list[str] = []

    def settled():
        nonlocal problems
        problems = differences(daemon.context_dir, tree.files)
        return not problems

    daemon.wait(settled, f"the context to hold the {len(tree.files)} files after {KILLS} kills at {kills}",
                detail=lambda: "\n".join(problems[:20]))
    assert daemon.stop()[0] == 0, daemon.log_tail()
    # A killed daemon's workers notice (end of file on their pipes) and end, quietly.
    assert [pid for pid in orphans if running(pid)] == []
    assert 'workers.py", line' not in daemon.log_text(), daemon.log_tail(80)

    assert lookalike_json("--context", daemon.context_dir, "context", "check")["ok"] is True
    listed = [image["path"] for image in lookalike_json("--context", daemon.context_dir, "features", "list")["images"]]
    assert len(listed) == len(set(listed)) == len(tree.files)
    assert set(listed) == {str(p) for p in tree.files}
    assert lookalike_json("--context", daemon.context_dir, "features", "failed")["failed"] == []
    assert differences(daemon.context_dir, tree.files) == []
    assert_whole_and_consistent(daemon.context_dir)

    # The same folders indexed from scratch group the same way, and as the pictures say.
    clean = make_daemon(daemons, [tree.root], tmp_path / "clean")
    rebuilt = lookalike_json("--config", clean.config_path, "context", "rebuild")
    assert (rebuilt["added"], rebuilt["failed"], rebuilt["previous"]) == (len(tree.files), 0, None)
    after_crashes = duplicate_groups(daemon.config_path, tmp_path / "crashed.json")
    from_scratch = duplicate_groups(clean.config_path, tmp_path / "clean.json")
    assert after_crashes == from_scratch == tree.expected_groups()
    assert len(after_crashes) >= 3


@pytest.mark.parametrize("cut", ["before the databases", "before the first commit"])
def test_a_crash_while_the_context_is_created_does_not_stop_the_next_start(daemons, tmp_path, cut):
    """The first start creates the context: LMDB makes data.mdb at once, the settings follow in
    a transaction. A crash in between leaves an environment without them, which holds nothing:
    the next start must create the context, not refuse it as damaged (under systemd's
    Restart=on-failure that refusal would repeat forever)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    picture = photos / "one.jpg"
    picture.write_bytes(variant(0, "jpg"))
    daemon = make_daemon(daemons, [photos], tmp_path / "state")
    # A process that dies by SIGKILL exactly there, as a crash would: as the context object is
    # made, or as the first transaction turns the settings into the record it writes.
    target = "SearchContext.__init__" if cut == "before the databases" else "ExtractionSettings.to_dict"
    crash = (
        "import os, signal, sys\n"
        "from lookalike.settings import ExtractionSettings\n"
        "from lookalike.store import SearchContext\n"
        "def die(*args, **kwargs): os.kill(os.getpid(), signal.SIGKILL)\n"
        f"{target} = die\n"
        "SearchContext.create(sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", crash, str(daemon.context_dir)], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert (daemon.context_dir / "data.mdb").exists()
    # Read as no context at all (exit 3), not as a damaged one (exit 5).
    assert lookalike("--context", daemon.context_dir, "context", "info").returncode == ExitCode.NOT_FOUND

    daemon.start()
    daemon.wait(lambda: differences(daemon.context_dir, [picture]) == [], "the photo to be indexed")
    assert daemon.stop()[0] == 0


# --- 2. a hostile folder ----------------------------------------------------------------------

def big_folder_size() -> int:
    return int(os.environ.get("LOOKALIKE_TEST_BIG_FOLDER", "10000"))


class Monitor(threading.Thread):
    """Samples the daemon while it works: alive, metrics answering, memory of it and its workers."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="daemon-monitor", daemon=True)
        self.daemon_under_test = daemon
        self.stopping = threading.Event()
        self.samples = 0
        self.failures: list[str] = []
        self.max_rss: dict[int, int] = {}
        self.max_total_rss = 0
        self.slowest_scrape = 0.0

    def run(self) -> None:
        daemon = self.daemon_under_test
        while not self.stopping.wait(0.25):
            if not daemon.alive():
                self.failures.append(f"the daemon exited ({daemon.process.returncode})")
                return
            pids = [daemon.pid, *descendants(daemon.pid)]
            sizes = {pid: rss_bytes(pid) for pid in pids}
            for pid, size in sizes.items():
                self.max_rss[pid] = max(self.max_rss.get(pid, 0), size)
            self.max_total_rss = max(self.max_total_rss, sum(sizes.values()))
            started = time.monotonic()
            try:
                daemon.scrape(timeout=5)
            except OSError as exc:
                self.failures.append(f"metrics did not answer: {exc}")
            self.slowest_scrape = max(self.slowest_scrape, time.monotonic() - started)
            self.samples += 1


def broken_exif_jpegs(folder: Path, first_tile: int) -> list[Path]:
    """A valid JPEG with each kind of malformed APP1 Exif segment (IFD offsets out of range, an
    IFD overrunning its segment, a bad byte order, nothing after "Exif")."""
    return [images.broken_exif_jpeg(folder, kind, tiles()[first_tile + i])
            for i, kind in enumerate(images.BROKEN_EXIF)]


@pytest.mark.slow
def test_a_hostile_folder_is_survived_and_every_bad_file_accounted_for(daemons, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    prefix, unreadable_skipped = unreadable_prefix()
    daemon = make_daemon(daemons, [root], tmp_path / "state")
    daemon.start(prefix)
    daemon.wait(lambda: _answers(daemon) and daemon.metric("lookalike_reconcile_runs_total") >= 1,
                "the metrics endpoint and the first reconcile")
    monitor = Monitor(daemon)
    monitor.start()

    good: list[Path] = []
    bad: dict[Path, str] = {}
    # The FIFO first: were it to block a worker, everything after it would wait.
    bad[images.fifo(root, "pipe.jpg")] = "not_a_file"
    bad[images.zero_byte(root, "empty.jpg")] = "empty"
    bad[images.truncated_jpeg(root, "half.jpg")] = "truncated"
    bad[images.truncated_png(root, "half.png")] = "truncated"
    # formats.is_complete does not check a WebP's RIFF length, so a cut WebP is only found out by
    # the decoder: reported as corrupt.
    bad[images.truncated_webp(root, "half.webp")] = "truncated"
    bad[images.random_bytes(root, "random.jpg", size=50_000)] = "unsupported"
    bad[images.text_file_named_png(root, "notes.png")] = "unsupported"
    bad[images.png_bomb(root, 50_000, "bomb.png")] = "too_large"
    bad[images.truncated_jpeg(root, b"\xff\xfe-half-\xe9.jpg")] = "truncated"   # not UTF-8
    if unreadable_skipped is None:
        secret = images.write_jpeg(root, "secret.jpg", tiles()[0])
        secret.chmod(0)
        bad[secret] = "unreadable"

    for i in range(4):
        good.append(images.write_jpeg(root, f"good{i}.jpg", tiles()[i]))
    good.append(images.sixteen_bit_png(root, tiles()[4], "deep.png"))
    good.append(images.cmyk_jpeg(root, tiles()[5], "cmyk.jpg"))
    good.append(images.palette_png(root, tiles()[6], "palette.png"))
    good.append(images.alpha_png(root, tiles()[7], "alpha.png"))
    good.append(images.animated_gif(root, [tiles()[8], tiles()[9], tiles()[10]], "animated.gif"))
    good.extend(broken_exif_jpegs(root, 11))
    good.append(images.write_jpeg(root, "n" * 251 + ".jpg", tiles()[15]))          # a 255-byte name
    good.append(images.long_name(root, tiles()[16]))                                # a > 600-byte path
    good.append(images.non_utf8_name(root, tiles()[17]))

    # Links: none is followed, none is stored or failed.
    (outside / "y.jpg").write_bytes(variant(18, "jpg"))
    (root / "x.jpg").symlink_to(outside / "y.jpg")
    (root / "loop").symlink_to(root)
    (root / "sub").mkdir()
    (root / "sub" / "up.jpg").symlink_to("..")

    big = root / "big"
    big.mkdir()
    started = time.monotonic()
    for i in range(big_folder_size()):
        if i % 250 == 0:
            good.append(images.write_jpeg(big, f"photo{i:05d}.jpg", tiles()[19 + (i // 250) % 20]))
        else:
            bad[images.write_bytes(big, f"junk{i:05d}.jpg", b"not a picture %d\n" % i)] = "unsupported"

    good_paths = {str(p) for p in good}
    bad_paths = {str(p): reason for p, reason in bad.items()}
    state: dict = {}

    def accounted():
        with SearchContext.open(daemon.context_dir) as context:
            state["stored"] = [image.path for image in context.images()]
            state["failed"] = {f.path: f.reason for f in context.failures()}
        return set(state["stored"]) >= good_paths and set(state["failed"]) >= set(bad_paths)

    daemon.wait(accounted, "every file to be indexed or failed", timeout=120,
                detail=lambda: f"missing: {sorted(good_paths - set(state['stored']))[:5]} "
                               f"{sorted(set(bad_paths) - set(state['failed']))[:5]}")
    seconds = time.monotonic() - started
    daemon.wait(lambda: all(daemon.metric(name) == 0 for name in
                            ("lookalike_files_queued", "lookalike_files_in_flight", "lookalike_store_queue_changes")),
                "the pipeline to drain")
    monitor.stopping.set()
    monitor.join(10)

    # Stayed up and answering throughout; nothing crashed, timed out or escaped as an error.
    assert daemon.alive(), daemon.log_tail()
    assert monitor.failures == [] and monitor.samples > 0, monitor.failures
    log = daemon.log_text()
    assert "extract worker" not in log, daemon.log_tail()
    assert "Traceback" not in log, daemon.log_tail()
    scrape = daemon.scrape()
    assert total(scrape, "lookalike_internal_errors_total") == 0

    # Every good image stored once, every bad file failed for its reason; nothing else (no link).
    listed = [image["path"] for image in lookalike_json("--context", daemon.context_dir, "features", "list")["images"]]
    assert sorted(listed) == sorted(good_paths)
    failed = lookalike_json("--context", daemon.context_dir, "features", "failed")["failed"]
    assert {f["path"]: f["reason"] for f in failed} == bad_paths and len(failed) == len(bad_paths)
    # The counter agrees with the context, reason by reason.
    counted = {dict(labels)["reason"]: value for (name, labels), value in scrape.items()
               if name == "lookalike_files_failed_total" and value}
    assert counted == dict(collections.Counter(bad_paths.values()))
    # One log line names each failed file and its reason.
    for path, reason in bad_paths.items():
        assert log.count(f"{display_path(path)}: {reason}: ") == 1, (path, reason)

    # Memory: the 2.5-gigapixel bomb was refused from its header, nothing was decoded at full
    # size (that alone would take 2.5 GB). The daemon and each worker take ~100-120 MB here.
    assert max(monitor.max_rss.values()) < 500 * 2 ** 20, monitor.max_rss
    assert monitor.max_total_rss < 1024 * 2 ** 20, monitor.max_total_rss
    assert daemon.stop()[0] == 0, daemon.log_tail()

    # Started again, its reconcile walks the same folder (through the loops, past the FIFO) and
    # reads nothing again: a failed file is retried only when it changes.
    daemon.start(prefix)

    def looked_at_everything_it_found() -> bool:
        if not _answers(daemon):
            return False
        samples = daemon.scrape()
        return (total(samples, "lookalike_reconcile_runs_total") >= 1
                and total(samples, "lookalike_files_seen_total")
                >= total(samples, "lookalike_reconcile_discrepancies_total"))

    daemon.wait(looked_at_everything_it_found, "the reconcile after a restart and its checks")
    time.sleep(1.0)         # past the time a re-read would take, then nothing may have been read
    again = daemon.scrape()
    for name in ("lookalike_files_indexed_total", "lookalike_files_failed_total", "lookalike_files_removed_total"):
        assert total(again, name) == 0, name
    with SearchContext.open(daemon.context_dir) as context:
        assert sorted(image.path for image in context.images()) == sorted(good_paths)
        assert {f.path: f.reason for f in context.failures()} == bad_paths
    assert daemon.stop()[0] == 0, daemon.log_tail()
    if unreadable_skipped:
        pytest.skip(f"everything else passed ({len(bad)} bad files in {seconds:.1f} s); "
                    f"the unreadable file was left out: {unreadable_skipped}")



def _answers(daemon: Daemon) -> bool:
    try:
        daemon.scrape(timeout=2)
        return True
    except OSError:
        return False


# --- 3. races around one read ---------------------------------------------------------------

def padded_jpeg_bytes(fill: int, megabytes: int = 24) -> bytes:
    """A valid JPEG made `megabytes` long by APP2 segments of `fill` bytes: two fills give two
    files of the same size that differ only inside the padding."""
    piece = b"\xff\xe2" + struct.pack(">H", 60_002) + bytes([fill]) * 60_000
    pieces = piece * (megabytes * 2 ** 20 // len(piece))
    return images.with_segments(variant(0, "jpg"), pieces)


REWRITE_CHUNK = 256 * 1024      # what cp and most programs write per call


def test_a_file_rewritten_while_it_is_read_is_reported_changed_never_torn(tmp_path):
    """Rewritten in place, at the same size, while it is read: `examine` reports `changed`, or
    returns a whole version, or (because stat cannot always tell: the mtime moves when a write
    begins, in ticks of the kernel's coarse clock, so a read inside one write or one tick sees
    the same mtime before and after) returns bytes whose mtime is within SETTLED_AGE_SECONDS of
    the read, which the daemon never stores: it settles the file and reads it again."""
    settings = ExtractionSettings()
    versions = [padded_jpeg_bytes(0x00), padded_jpeg_bytes(0x01)]
    assert len(versions[0]) == len(versions[1])
    whole = {content_hash(v) for v in versions}
    path = tmp_path / "busy.jpg"
    path.write_bytes(versions[0])
    stop = threading.Event()

    def rewrite():
        # In place, the same size each time: only the file's mtime tells a reader it changed.
        fd = os.open(path, os.O_WRONLY)
        try:
            turn = 0
            while not stop.is_set():
                turn ^= 1
                data = memoryview(versions[turn])
                for offset in range(0, len(data), REWRITE_CHUNK):
                    os.pwrite(fd, data[offset:offset + REWRITE_CHUNK], offset)
        finally:
            os.close(fd)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    outcomes = collections.Counter()
    try:
        for attempt in range(200):
            read_at = time.time()
            outcome = examine(str(path), settings, None)
            if isinstance(outcome, Unreadable):
                assert outcome.reason == "changed", outcome
                outcomes["changed"] += 1
            else:
                assert isinstance(outcome, Extracted), outcome
                if outcome.features.content_hash in whole:
                    outcomes["whole"] += 1
                else:
                    modified = outcome.identity.mtime_ns / 1e9
                    assert modified > read_at - SETTLED_AGE_SECONDS, "a torn read the daemon would trust"
                    outcomes["torn, not trusted"] += 1
            if outcomes["changed"] >= 3 and attempt >= 20:
                break
    finally:
        stop.set()
        writer.join(10)
    assert outcomes["changed"] >= 1, outcomes
    # Once still, the same file reads whole again.
    outcome = examine(str(path), settings, None)
    assert isinstance(outcome, Extracted) and outcome.features.content_hash in whole
    assert isinstance(examine(str(path), settings, outcome.features.content_hash), SameContent)


def test_a_file_deleted_before_it_is_read_is_reported_missing(tmp_path):
    path = tmp_path / "gone.jpg"
    path.write_bytes(variant(1, "jpg"))
    path.unlink()
    outcome = examine(str(path), ExtractionSettings(), None)
    assert outcome == Unreadable(str(path), "missing", "no such file")
    # Deleted and its name taken by a folder, or by a link to nowhere.
    path.mkdir()
    assert examine(str(path), ExtractionSettings(), None).reason == "not_a_file"
    path.rmdir()
    path.symlink_to(tmp_path / "nowhere.jpg")
    assert examine(str(path), ExtractionSettings(), None).reason == "missing"


# --- 4. fuzzing the extract stage -----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def fuzz_seeds() -> tuple[bytes, ...]:
    small = images.resized(tiles()[2], 64, 48)
    return (
        images.jpeg_bytes(small),
        images.jpeg_bytes(small, progressive=True),
        images.encode(".png", small),
        images.encode(".png", np.dstack([small, np.full(small.shape[:2], 200, np.uint8)])),
        images.webp_bytes(small),
        images.encode(".gif", small),
        images.encode(".bmp", small),
        images.encode(".tiff", small),
        images.with_segments(images.jpeg_bytes(small), images.exif_segment(6)),
    )


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(fuzz_seeds())))
    for _ in range(draw(st.integers(1, 4))):
        # Half the edits in the first 64 bytes, where the headers and their sizes are.
        end = len(data) if draw(st.booleans()) else min(len(data), 64)
        position = draw(st.integers(0, max(0, end - 1)))
        edit = draw(st.sampled_from(("flip", "byte", "truncate", "insert", "delete")))
        if edit == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte" and data:
            data[position] = draw(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255)))))
        elif edit == "truncate":
            del data[position:]
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del data[position:position + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.parametrize("detector", ["akaze", "orb", "brisk", "sift"])
@pytest.mark.parametrize("width, height", [(2000, 2), (2, 2000), (8000, 6)])
def test_a_picture_too_thin_for_keypoints_is_extracted_without_them(tmp_path, detector, width, height):
    """Found by the fuzz below: a strip scales to a working image 1-5 pixels thin, on which the
    detectors raised (AKAZE asked for 2^64 bytes) instead of finding nothing."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width), np.uint8)
    path = images.write_png(tmp_path, "strip.png", pixels)
    outcome = examine(str(path), ExtractionSettings(detector=detector), None)
    assert isinstance(outcome, Extracted), outcome
    assert outcome.features.local.count == 0 and (outcome.features.width, outcome.features.height) == (width, height)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzzed.jpg"


@hypothesis_settings(max_examples=2000, deadline=timedelta(seconds=10), derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.one_of(st.binary(max_size=4096), mutated_images(), mutated_images()))
def test_fuzzed_files_give_an_outcome_never_an_exception(fuzz_file, data):
    fuzz_file.write_bytes(data)
    # A hang is a failure too: dump every thread's stack and end the run rather than wait forever.
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        outcome = examine(str(fuzz_file), ExtractionSettings(), None)
    finally:
        faulthandler.cancel_dump_traceback_later()
    event(outcome.reason if isinstance(outcome, Unreadable) else "extracted")
    if isinstance(outcome, Unreadable):
        assert outcome.reason in ImageError.REASONS and outcome.reason not in ("crashed", "timeout", "changed")
        assert outcome.path == str(fuzz_file) and outcome.detail
    else:
        assert isinstance(outcome, Extracted), outcome
        features = outcome.features
        assert features.content_hash == content_hash(data)
        assert features.width > 0 and features.height > 0
        assert features.thumbnail.dtype == np.uint8 and features.thumbnail.size > 0
