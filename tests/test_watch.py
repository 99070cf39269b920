"""The watch stage's pure parts: watch/settle.py (when a dirty path is ready) and
watch/folders.py (which paths are ours). No daemon, no threads, no sleeping: the Settler gets a
clock and a probe that the test moves by hand; Folders needs no files at all.

The daemon-level behaviour built on these (events, moves, overflow) is in test_daemon.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.config import WatchedFolder
from lookalike.watch.folders import Folders
from lookalike.watch.settle import Settler

SETTLE = 2.0
LIMIT = 3


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Files:
    """The probe: path -> (size, mtime_ns), or None for a path that does not exist."""

    def __init__(self):
        self.samples: dict[str, tuple[int, int]] = {}
        self.probes: list[str] = []

    def __call__(self, path: str):
        self.probes.append(path)
        return self.samples.get(path)

    def write(self, path: str, size: int) -> None:
        mtime = self.samples.get(path, (0, 0))[1] + 1
        self.samples[path] = (size, mtime)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files() -> Files:
    return Files()


@pytest.fixture
def settler(clock, files) -> Settler:
    return Settler(SETTLE, LIMIT, clock=clock, probe=files)


# --- Settler --------------------------------------------------------------------------------

def test_a_path_is_ready_once_quiet_for_the_settle_time_and_only_once(settler, clock, files):
    files.write("/p/a.jpg", 100)
    settler.touch("/p/a.jpg")
    clock.advance(SETTLE - 0.01)
    assert settler.take(10) == []
    assert len(settler) == 1
    clock.advance(0.01)
    assert settler.take(10) == ["/p/a.jpg"]
    assert settler.take(10) == [] and len(settler) == 0


def test_every_event_restarts_the_wait(settler, clock, files):
    for _ in range(5):                                     # a copy: an event every 1.5 s
        files.write("/p/a.jpg", 100)
        settler.touch("/p/a.jpg")
        clock.advance(1.5)
        assert settler.take(10) == []
    clock.advance(SETTLE - 1.5)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_burst_of_events_is_one_entry(settler, clock, files):
    for size in range(1, 40):
        files.write("/p/a.jpg", size)
        settler.touch("/p/a.jpg")
    assert len(settler) == 1
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_file_still_growing_without_events_waits_until_it_stops(settler, clock, files):
    """Polling observers and network filesystems give one event for a whole copy."""
    files.write("/p/a.jpg", 100)
    settler.touch("/p/a.jpg")
    clock.advance(SETTLE)
    files.write("/p/a.jpg", 200)                           # grew, no event
    assert settler.take(10) == []
    clock.advance(SETTLE / 2)
    files.write("/p/a.jpg", 300)
    clock.advance(SETTLE / 2)
    assert settler.take(10) == []                          # changed again since the last look
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_rewrite_to_the_same_size_is_seen_by_its_mtime(settler, clock, files):
    files.write("/p/a.jpg", 100)
    settler.touch("/p/a.jpg")
    clock.advance(SETTLE)
    files.write("/p/a.jpg", 100)
    assert settler.take(10) == []
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_missing_path_settles_too_so_its_record_can_go(settler, clock, files):
    settler.touch("/p/gone.jpg")
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/gone.jpg"]


def test_a_path_deleted_while_waiting_waits_again(settler, clock, files):
    files.write("/p/a.jpg", 100)
    settler.touch("/p/a.jpg")
    del files.samples["/p/a.jpg"]
    clock.advance(SETTLE)
    assert settler.take(10) == []
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_paths_come_out_in_the_order_they_went_quiet(settler, clock, files):
    for name in ("a", "b", "c"):
        files.write(f"/p/{name}.jpg", 1)
        settler.touch(f"/p/{name}.jpg")
        clock.advance(0.1)
    settler.touch("/p/a.jpg")                              # a changed again: now last
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/b.jpg", "/p/c.jpg", "/p/a.jpg"]


def test_a_path_quiet_for_long_needs_no_wait_and_goes_first(settler, clock, files):
    files.write("/p/new.jpg", 1)
    files.write("/p/old.jpg", 1)
    settler.touch("/p/new.jpg")
    clock.advance(SETTLE)
    settler.touch("/p/old.jpg", quiet_since=clock() - 3600)    # a reconcile found it
    assert settler.take(10) == ["/p/old.jpg", "/p/new.jpg"]


def test_a_recent_quiet_since_waits_the_full_time(settler, clock, files):
    files.write("/p/a.jpg", 1)
    settler.touch("/p/a.jpg", quiet_since=clock() - SETTLE / 2)
    assert settler.take(10) == []
    clock.advance(SETTLE / 2)
    assert settler.take(10) == []                          # counted from the touch, to be safe
    clock.advance(SETTLE / 2)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_reconcile_hint_does_not_cut_short_a_path_that_is_changing(settler, clock, files):
    files.write("/p/a.jpg", 1)
    settler.touch("/p/a.jpg")                              # an event: being written now
    settler.touch("/p/a.jpg", quiet_since=clock() - 3600)  # a reconcile's stale view of it
    assert settler.take(10) == []
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_touching_a_ready_path_makes_it_wait_again(settler, clock, files):
    files.write("/p/a.jpg", 1)
    settler.touch("/p/a.jpg")
    clock.advance(SETTLE)
    assert settler.take(0) == []                           # moved to ready, none taken
    assert len(settler) == 1
    files.write("/p/a.jpg", 2)
    settler.touch("/p/a.jpg")
    assert settler.take(10) == []
    assert len(settler) == 1
    clock.advance(SETTLE)
    assert settler.take(10) == ["/p/a.jpg"]


def test_take_honours_its_limit_and_leaves_skipped_paths_for_later(settler, clock, files):
    names = [f"/p/{i}.jpg" for i in range(5)]
    for name in names:
        files.write(name, 1)
        settler.touch(name)
    clock.advance(SETTLE)
    assert settler.take(2, skip=lambda path: path == names[0]) == names[1:3]
    assert settler.take(10, skip=lambda path: path == names[0]) == names[3:]
    assert settler.take(10) == [names[0]]                  # no longer busy: handed out now
    assert len(settler) == 0


def test_a_new_settle_time_applies_to_paths_already_waiting(settler, clock, files):
    files.write("/p/a.jpg", 1)
    settler.touch("/p/a.jpg")
    settler.settle_seconds = 0.5                           # a reload
    clock.advance(0.5)
    assert settler.take(10) == ["/p/a.jpg"]


def test_a_ready_path_is_not_probed_again(settler, clock, files):
    files.write("/p/a.jpg", 1)
    settler.touch("/p/a.jpg")
    clock.advance(SETTLE)
    settler.take(0)
    probes = len(files.probes)
    for _ in range(3):
        settler.take(0)
    assert len(files.probes) == probes


def test_offers_beyond_the_limit_are_refused_but_a_waiting_path_is_always_taken(settler, clock, files):
    for name in ("a", "b", "c"):
        assert settler.offer(f"/p/{name}.jpg")
    assert not settler.offer("/p/d.jpg")                      # full: the caller reconciles later
    assert settler.offer("/p/b.jpg")                          # waiting already: no room needed
    settler.touch("/p/e.jpg")                                 # handed back by the pipeline: taken
    assert len(settler) == 4
    clock.advance(SETTLE)
    assert settler.take(2) == ["/p/a.jpg", "/p/c.jpg"]
    assert settler.offer("/p/d.jpg")                          # room again
    assert len(settler) == 3


# --- Folders ----------------------------------------------------------------------------------

def watched(path: str, **options) -> WatchedFolder:
    return WatchedFolder(Path(path), **options)


def test_default_patterns_take_images_in_any_case_and_nothing_else():
    folders = Folders((watched("/photos"),))
    for name in ("a.jpg", "IMG_0001.JPG", "b.Jpeg", "c.png", "d.webp", "e.gif", "f.bmp", "g.tif", "h.TIFF",
                 "2024/trip/i.jpg", "IMG_0001.HEIC", "a.heif", "b.avif", "c.DNG", "d.cr2", "e.CR3", "f.nef",
                 "g.arw", "h.orf", "i.RAF", "j.rw2"):
        assert folders.wants_file(f"/photos/{name}"), name
    # A raw file's sidecar (.xmp) and a phone's live-photo video (.mov) are not images.
    for name in ("x.txt", "a.jpg.txt", "noext", "IMG_0001.xmp", "IMG_0001.MOV", "a.jpg.part", "a.jpg.crdownload", "a.jpg.tmp",
                 ".hidden.jpg", "~lock.jpg", "a.jpg~", ".~a.jpg", "a.partial", "a.download"):
        assert not folders.wants_file(f"/photos/{name}"), name


def test_an_excluded_folder_hides_everything_below_it():
    folders = Folders((watched("/photos"),))
    assert not folders.wants_file("/photos/.thumbnails/a.jpg")
    assert not folders.wants_file("/photos/2024/.git/objects/a.jpg")
    assert not folders.wants_folder("/photos/.thumbnails")
    assert not folders.wants_folder("/photos/.thumbnails/big")
    assert folders.wants_folder("/photos/2024/trip")
    assert folders.wants_folder("/photos")


def test_the_folder_above_the_root_is_not_matched_by_exclude_patterns():
    """Exclusions apply below the watched folder: a root inside a hidden folder still works."""
    folders = Folders((watched("/home/alice/.photos"),))
    assert folders.wants_file("/home/alice/.photos/a.jpg")
    assert folders.wants_folder("/home/alice/.photos")


def test_paths_outside_every_folder_are_not_ours():
    folders = Folders((watched("/photos"),))
    for path in ("/photos2/a.jpg", "/photo/a.jpg", "/a.jpg", "/photos.jpg", "/other/photos/a.jpg"):
        assert not folders.wants_file(path), path
        assert folders.folder_of(path) is None, path
    assert not folders.wants_folder("/photos2")
    assert not folders.wants_file("/photos")               # the root itself is not a file to index


def test_custom_include_and_exclude():
    folders = Folders((watched("/scans", include=("*.png",), exclude=("drafts", "*_old.*")),))
    assert folders.wants_file("/scans/a.png") and folders.wants_file("/scans/2024/A.PNG")
    assert not folders.wants_file("/scans/a.jpg")
    assert not folders.wants_file("/scans/drafts/a.png")
    assert not folders.wants_file("/scans/page_old.png")
    assert folders.wants_file("/scans/.hidden.png")        # the default excludes are replaced


def test_a_nested_watched_folder_takes_its_own_files():
    outer = watched("/photos")
    inner = watched("/photos/scans", include=("*.png",), recursive=False)
    folders = Folders((outer, inner))
    assert folders.folder_of("/photos/scans/a.png") is inner
    assert folders.folder_of("/photos/scans") is inner
    assert folders.folder_of("/photos/a.jpg") is outer
    assert folders.folder_of("/photos/scansion/a.jpg") is outer      # a name prefix is not nesting
    assert not folders.wants_file("/photos/scans/a.jpg")              # the inner folder's rules
    assert folders.wants_file("/photos/scans/a.png")
    # Below the non-recursive inner folder, the outer one takes over again.
    assert folders.folder_of("/photos/scans/2024/a.jpg") is outer
    assert folders.wants_file("/photos/scans/2024/a.jpg")


def test_order_of_folders_in_the_config_does_not_matter():
    outer, inner = watched("/photos"), watched("/photos/scans", include=("*.png",))
    for order in ((outer, inner), (inner, outer)):
        assert Folders(order).folder_of("/photos/scans/a.png") is inner


def test_a_non_recursive_folder_takes_only_its_own_files():
    folders = Folders((watched("/inbox", recursive=False),))
    assert folders.wants_file("/inbox/a.jpg")
    assert not folders.wants_file("/inbox/sub/a.jpg")
    assert folders.folder_of("/inbox/sub/a.jpg") is None
    assert folders.wants_folder("/inbox")


def test_a_root_given_with_a_trailing_slash():
    folders = Folders((watched("/photos/"),))
    assert folders.wants_file("/photos/a.jpg")
    assert not folders.wants_file("/photosx/a.jpg")


def test_non_utf8_names_are_matched_like_any_other():
    folders = Folders((watched("/photos"),))
    assert folders.wants_file("/photos/caf\udce9.jpg")     # b"caf\xe9.jpg" as os.fsdecode gives it
    assert not folders.wants_file("/photos/.caf\udce9.jpg")
