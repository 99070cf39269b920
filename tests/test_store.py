"""The search context (store/context.py, store/index.py, store/codec.py) on a real LMDB.

Records survive reopening; a context refuses other extraction settings and newer schemas;
replacing and removing images leaves no index entry behind; awkward paths (over LMDB's key
limit, not UTF-8) round-trip; the map grows from a tiny start and a size cap fails whole
batches; a forked child may not touch the environment; a writer SIGKILLed at random moments
leaves only whole records; a status left by a dead process reads as idle; a bucket crowded past
index.CROWDED_BUCKET is not read, and is read again once a removal shrinks it; the writer thread commits a backlog in transactions of at most
writer.BATCH changes.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

import images
from lookalike.errors import NotFoundError, StoreError, StoreFullError
from lookalike.extract import ImageFeatures, Query, extract_file
from lookalike.imaging.features import fingerprint_variants
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext, codec, index, inspection
from lookalike.store import context as context_module

SETTINGS = ExtractionSettings()
DESCRIPTOR_BYTES = 61       # AKAZE descriptors: 488 bits


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, ImageFeatures]:
    """The features of each test photo, extracted once from JPEG files."""
    folder = tmp_path_factory.mktemp("photos")
    return {name: extract_file(str(images.write_jpeg(folder, f"{name}.jpg", images.photo(name))), SETTINGS)
            for name in images.PHOTOS}


def at(features: ImageFeatures, path: str | Path) -> ImageFeatures:
    return dataclasses.replace(features, path=str(path))


def raw_entries(directory: Path) -> dict[str, int]:
    """Entry counts of every sub-database, as they lie on disk (the context must be closed)."""
    return {name: len(entries) for name, entries in inspection.database_entries(directory).items()}


def expected_index_entries(context: SearchContext) -> dict[str, int]:
    """What the index must hold for the images stored, no more: one hash per image, four
    fingerprint chunks, one LSH posting per distinct bucket key."""
    hasher = index.Hasher("akaze", DESCRIPTOR_BYTES, True)
    stored = list(context.images())
    lsh = sum(len(index.lsh_keys(hasher, context.local_features(image.path).descriptors)) for image in stored)
    return {"images": len(stored), "features": len(stored), "paths": len(stored), "hashes": len(stored),
            "chunks": 4 * len(stored), "lsh": lsh}


def assert_consistent(directory: Path, expected: dict[str, int]) -> None:
    entries = raw_entries(directory)
    assert {k: entries[k] for k in expected} == expected


def assert_whole(context: SearchContext) -> int:
    """Every stored image decodes completely; returns how many there are."""
    stored = list(context.images())
    assert len(stored) == context.count()
    for image in stored:
        local = context.local_features(image.path)
        assert local.descriptors.shape == (image.features, DESCRIPTOR_BYTES)
        assert local.keypoints.shape == (image.features, 4)
        again, candidate = context.candidate(image.num)
        assert again == image
        assert candidate.thumbnail.dtype == np.uint8 and max(candidate.thumbnail.shape) == 160
        assert context.find(image.path) == image
    return len(stored)


# --- lifecycle ----------------------------------------------------------------------------

def test_create_open_reopen_keeps_records(tmp_path, photos):
    directory = tmp_path / "ctx"
    with SearchContext.create(directory) as context:
        assert context.count() == 0
        nums = context.upsert_many([at(f, f"/photos/{name}.jpg") for name, f in photos.items()])
        assert len(set(nums)) == len(photos)
    for _ in range(2):
        with SearchContext.open(directory, expect=SETTINGS) as context:
            assert context.settings == SETTINGS
            assert context.count() == len(photos)
            for name, features in photos.items():
                stored = context.image(f"/photos/{name}.jpg")
                assert (stored.content_hash, stored.fingerprint, stored.features) == (
                    features.content_hash, features.fingerprint, features.local.count)
                assert (stored.width, stored.height, stored.format) == (features.width, features.height, features.format)
                local = context.local_features(stored.path)
                np.testing.assert_array_equal(local.descriptors, features.local.descriptors)
                np.testing.assert_array_equal(local.keypoints, features.local.keypoints)
            assert [i.num for i in context.images()] == sorted(nums)
            info = context.info()
            assert info["images"] == len(photos) and info["failed"] == 0 and info["status"] == "idle"
            assert info["settings"] == SETTINGS.to_dict()


def test_create_refuses_an_existing_context_and_open_a_missing_one(tmp_path):
    SearchContext.create(tmp_path / "ctx").close()
    with pytest.raises(StoreError, match="already exists"):
        SearchContext.create(tmp_path / "ctx")
    with pytest.raises(NotFoundError):
        SearchContext.open(tmp_path / "nothing")


def test_delete_leaves_other_files(tmp_path):
    directory = tmp_path / "ctx"
    SearchContext.create(directory).close()
    (directory / "notes.txt").write_text("keep me")
    SearchContext.delete(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    with pytest.raises(NotFoundError):
        SearchContext.delete(directory)


@pytest.mark.parametrize("asked, named", [
    (ExtractionSettings(max_features=300), "max_features"),
    (ExtractionSettings(working_size=800), "working_size"),
    (ExtractionSettings(detector="orb"), "detector"),
])
def test_open_with_other_extraction_settings_names_the_difference(tmp_path, asked, named):
    SearchContext.create(tmp_path / "ctx").close()
    with pytest.raises(StoreError) as caught:
        SearchContext.open(tmp_path / "ctx", expect=asked)
    message = caught.value.message
    assert named in message
    assert repr(getattr(SETTINGS, named)) in message and repr(getattr(asked, named)) in message
    # The refused open closed its environment: opening again in this process works.
    with SearchContext.open(tmp_path / "ctx") as context:
        assert context.settings == SETTINGS


def test_context_keeps_the_settings_it_was_created_with(tmp_path):
    created = ExtractionSettings(max_features=300, working_size=512)
    SearchContext.create(tmp_path / "ctx", created).close()
    with SearchContext.open(tmp_path / "ctx") as context:
        assert context.settings == created
    with SearchContext.open(tmp_path / "ctx", expect=created) as context:
        assert context.settings == created


def test_newer_schema_is_refused_and_nothing_is_written(tmp_path):
    directory = tmp_path / "ctx"
    SearchContext.create(directory).close()
    env = lmdb.open(str(directory), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema", str(context_module.SCHEMA_VERSION + 1).encode(), db=env.open_db(b"meta", txn=txn))
    env.close()
    before = (directory / "data.mdb").read_bytes()
    with pytest.raises(StoreError, match="newer") as caught:
        SearchContext.open(directory)
    assert caught.value.exit_code == 5
    assert (directory / "data.mdb").read_bytes() == before
    with pytest.raises(StoreError, match="newer"):     # refused again, not "already open"
        SearchContext.open(directory)


def test_a_file_that_is_not_a_context_is_a_store_error(tmp_path):
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreError):
        SearchContext.open(directory)



@pytest.mark.parametrize("damage, named", [
    (lambda record: record[:6], "shorter than its header"),
    (lambda record: b"XXXX" + record[4:], "not a lookalike record"),
    (lambda record: record[:4] + (codec.VERSION + 1).to_bytes(2, "little") + record[6:], "newer"),
    (lambda record: record.replace(b'"doc"', b"'doc'"), "not JSON"),
    (lambda record: record.replace(b'"uint8"', b'"int16"'), "unsupported dtype"),
    (lambda record: record.replace(b"[13,5]", b"[-3,5]"), "invalid shape"),
    (lambda record: record.replace(b"[13,5]", b"[13,6]"), "runs past the end"),
])
def test_a_damaged_record_is_a_record_error_naming_the_damage(damage, named):
    record = codec.pack({"path": "/a.jpg"}, {"thumbnail": np.zeros((13, 5), np.uint8)})
    assert codec.unpack(record)[1]["thumbnail"].shape == (13, 5)
    with pytest.raises(codec.RecordError, match=named):
        codec.unpack(damage(record))

# --- writes -------------------------------------------------------------------------------

def test_upsert_replaces_the_older_record_and_leaves_no_index_entries(tmp_path, photos):
    first, second = photos["astronaut"], photos["chelsea"]
    directory = tmp_path / "ctx"
    with SearchContext.create(directory) as context:
        old = context.upsert(at(first, "/photos/a.jpg"))
        assert old in context.candidates_for(first.content_hash, first.fingerprint, first.local)
        new = context.upsert(at(second, "/photos/a.jpg"))
        assert new != old
        assert context.count() == 1
        stored = context.image("/photos/a.jpg")
        assert stored.num == new and stored.content_hash == second.content_hash
        np.testing.assert_array_equal(context.local_features("/photos/a.jpg").descriptors, second.local.descriptors)
        assert old not in context.candidates_for(first.content_hash, first.fingerprint, first.local)
        assert list(context.candidates_for(second.content_hash, second.fingerprint, second.local))[0] == new
        # Both in one batch: the later one wins.
        [_, last] = context.upsert_many([at(first, "/photos/b.jpg"), at(second, "/photos/b.jpg")])
        assert context.image("/photos/b.jpg").num == last and context.count() == 2
        expected = expected_index_entries(context)
    assert_consistent(directory, expected)

    # The same two images stored only once each, in a fresh context, take as many entries.
    with SearchContext.create(tmp_path / "fresh") as fresh:
        fresh.upsert_many([at(second, "/photos/a.jpg"), at(second, "/photos/b.jpg")])
    assert raw_entries(tmp_path / "fresh") == raw_entries(directory)


def test_remove_forgets_the_image_and_its_index_entries(tmp_path, photos):
    directory = tmp_path / "ctx"
    with SearchContext.create(directory) as context:
        nums = {name: context.upsert(at(f, f"/photos/{name}.jpg")) for name, f in photos.items()}
        assert context.remove("/photos/coffee.jpg") is True
        assert context.remove("/photos/coffee.jpg") is False
        assert context.find("/photos/coffee.jpg") is None
        with pytest.raises(NotFoundError):
            context.image("/photos/coffee.jpg")
        with pytest.raises(NotFoundError):
            context.local_features("/photos/coffee.jpg")
        coffee = photos["coffee"]
        assert nums["coffee"] not in context.candidates_for(coffee.content_hash, coffee.fingerprint, coffee.local)
        assert context.count() == len(photos) - 1
        expected = expected_index_entries(context)
    assert_consistent(directory, expected)

    with SearchContext.open(directory) as context:
        for image in list(context.images()):
            assert context.remove(image.path)
        assert context.count() == 0
    entries = raw_entries(directory)
    assert all(entries[name] == 0 for name in entries if name != "meta"), entries


def test_same_picture_at_two_paths_keeps_both_hash_postings(tmp_path, photos):
    rocket = photos["rocket"]
    directory = tmp_path / "ctx"
    with SearchContext.create(directory) as context:
        one, two = context.upsert_many([at(rocket, "/a/rocket.jpg"), at(rocket, "/b/rocket.jpg")])
        assert set(list(context.candidates_for(rocket.content_hash, rocket.fingerprint, rocket.local))[:2]) == {one, two}
        context.remove("/a/rocket.jpg")
        assert list(context.candidates_for(rocket.content_hash, rocket.fingerprint, rocket.local)) == [two]
        expected = expected_index_entries(context)
    assert_consistent(directory, expected)


def test_record_failure_and_failures(tmp_path, photos):
    with SearchContext.create(tmp_path / "ctx") as context:
        identity = photos["coffee"].identity
        context.record_failure("/photos/bad.jpg", identity, "truncated", "ends before the image does")
        context.record_failure("/photos/gone.jpg", None, "missing", "no such file")
        failures = {f.path: f for f in context.failures()}
        assert set(failures) == {"/photos/bad.jpg", "/photos/gone.jpg"}
        assert failures["/photos/bad.jpg"].identity == identity
        assert (failures["/photos/bad.jpg"].reason, failures["/photos/bad.jpg"].detail) == (
            "truncated", "ends before the image does")
        assert failures["/photos/gone.jpg"].identity is None
        assert context.failure("/photos/gone.jpg").reason == "missing"
        assert context.failure("/photos/fine.jpg") is None
        assert context.info()["failed"] == 2

        # A stored image that now fails to read is forgotten; storing it again clears the failure.
        context.upsert(at(photos["chelsea"], "/photos/cat.jpg"))
        context.record_failure("/photos/cat.jpg", None, "corrupt", "bad Huffman code")
        assert context.find("/photos/cat.jpg") is None and context.count() == 0
        context.upsert(at(photos["chelsea"], "/photos/cat.jpg"))
        assert context.failure("/photos/cat.jpg") is None and context.count() == 1
        # remove() forgets a failure too.
        assert context.remove("/photos/bad.jpg") is False
        assert [f.path for f in context.failures()] == ["/photos/gone.jpg"]


def test_long_and_non_utf8_paths_are_stored_found_and_removed(tmp_path):
    long_path = str(images.long_name(tmp_path, images.photo("rocket")))
    latin1_path = str(images.non_utf8_name(tmp_path))
    assert len(os.fsencode(long_path)) > 600 and os.fsencode(latin1_path).endswith(b"caf\xe9.jpg")
    long_features = extract_file(long_path, SETTINGS)
    latin1_features = extract_file(latin1_path, SETTINGS)
    # A second long path that shares its first 600 bytes: keys must not collide.
    sibling = long_path[:-4] + "x.jpg"
    directory = tmp_path / "ctx"
    with SearchContext.create(directory) as context:
        context.upsert_many([long_features, latin1_features, at(long_features, sibling)])
        assert context.count() == 3
    with SearchContext.open(directory) as context:
        for path in (long_path, latin1_path, sibling):
            assert context.image(path).path == path
            assert context.local_features(path).count > 0
        assert sorted(i.path for i in context.images()) == sorted([long_path, latin1_path, sibling])
        assert list(context.candidates_for(latin1_features.content_hash, latin1_features.fingerprint,
                                           latin1_features.local))[0] == context.image(latin1_path).num
        context.record_failure(sibling, None, "changed", "rewritten while read")
        assert [f.path for f in context.failures()] == [sibling]
        assert context.remove(long_path) and context.remove(latin1_path) and not context.remove(sibling)
        assert context.count() == 0 and context.failures() == []
        assert context.find(long_path) is None and context.find(latin1_path) is None
    entries = raw_entries(directory)
    assert all(entries[name] == 0 for name in entries if name != "meta"), entries


def test_paths_under_pages_through_stored_and_failed_paths_below_a_folder_only(tmp_path, photos):
    long_path = str(images.long_name(tmp_path / "photos", images.photo("rocket")))
    latin1_path = str(images.non_utf8_name(tmp_path / "photos"))
    inside = [f"{tmp_path}/photos/{n:03}.jpg" for n in range(7)]
    with SearchContext.create(tmp_path / "ctx") as context:
        context.upsert_many([at(photos["coffee"], path) for path in inside[:5]] +
                            [at(photos["coffee"], long_path), at(photos["coffee"], latin1_path),
                             at(photos["coffee"], f"{tmp_path}/photos2/next-door.jpg"),
                             at(photos["coffee"], f"{tmp_path}/photos")])
        for path in inside[5:]:
            context.record_failure(path, None, "corrupt", "bad Huffman code")
        pages = list(context.paths_under(f"{tmp_path}/photos/", page=2))
        assert sorted(p for page in pages for p in page) == sorted([*inside, long_path, latin1_path])
        assert all(1 <= len(page) <= 2 for page in pages)
        assert context.identities([inside[0], inside[6], f"{tmp_path}/photos2/elsewhere.jpg"]) == {
            inside[0]: photos["coffee"].identity, inside[6]: None}


# --- the map ------------------------------------------------------------------------------

def test_map_grows_from_a_tiny_start(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(context_module, "INITIAL_MAP_SIZE", 256 * 1024)
    directory = tmp_path / "ctx"
    sources = list(photos.values())
    with SearchContext.create(directory) as context:
        start = context.info()["map_size_bytes"]
        assert start == 256 * 1024
        for i in range(30):
            context.upsert(at(sources[i % len(sources)], f"/photos/{i:02}.jpg"))
        assert context.count() == 30
        grown = context.info()["map_size_bytes"]
        assert grown > start
    with SearchContext.open(directory) as context:      # opened with the tiny map size again
        assert assert_whole(context) == 30
        assert context.info()["map_size_bytes"] > start     # LMDB takes the size the data needs


def test_a_cap_below_the_initial_map_size_is_where_the_map_starts(tmp_path):
    """Opened at the initial size, the map would hold far more than the cap before it first filled."""
    cap = 1024 * 1024
    assert cap < context_module.INITIAL_MAP_SIZE
    with SearchContext.create(tmp_path / "ctx", max_map_size=cap) as context:
        assert context.info()["map_size_bytes"] == cap
    with SearchContext.open(tmp_path / "ctx", max_map_size=cap) as context:
        assert context.info()["map_size_bytes"] == cap


def test_store_full_fails_whole_batches_and_the_context_still_opens(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(context_module, "INITIAL_MAP_SIZE", 256 * 1024)
    cap = 1024 * 1024
    directory = tmp_path / "ctx"
    sources = list(photos.values())
    with SearchContext.create(directory, max_map_size=cap) as context:
        stored = 0
        with pytest.raises(StoreFullError) as caught:
            for i in range(100):
                context.upsert(at(sources[i % len(sources)], f"/photos/{i:03}.jpg"))
                stored += 1
        assert 0 < stored < 100
        assert caught.value.exit_code == 5 and str(cap) in caught.value.message
        assert context.find(f"/photos/{stored:03}.jpg") is None
        assert context.info()["map_size_bytes"] == cap
        # A batch that does not fit is not written in part.
        batch = [at(sources[0], "/photos/batch-1.jpg"), at(sources[1], "/photos/batch-2.jpg")]
        with pytest.raises(StoreFullError):
            context.upsert_many(batch)
        assert context.find("/photos/batch-1.jpg") is None and context.find("/photos/batch-2.jpg") is None
        assert context.count() == stored
        # Reads and removals still work; a removal frees room for a new image.
        assert context.remove("/photos/000.jpg")
        assert assert_whole(context) == stored - 1
    with SearchContext.open(directory) as context:        # default cap: room again
        assert assert_whole(context) == stored - 1
        context.upsert_many(batch)
        assert assert_whole(context) == stored + 1
        expected = expected_index_entries(context)
    assert_consistent(directory, expected)


# --- processes ----------------------------------------------------------------------------

def test_context_used_after_fork_raises_store_error(tmp_path, photos):
    with SearchContext.create(tmp_path / "ctx") as context:
        context.upsert(at(photos["coffee"], "/photos/coffee.jpg"))
        pid = os.fork()
        if pid == 0:      # the child: report through the exit code, never return into pytest
            code = 3
            try:
                context.count()
                code = 1
            except StoreError as exc:
                code = 0 if "fork" in exc.message else 2
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child could use the parent's environment"
        assert context.count() == 1          # the parent's context is untouched


def test_busy_status_shows_in_info(tmp_path):
    with SearchContext.create(tmp_path / "ctx") as context:
        assert context.info()["status"] == "idle"
        with context.busy("matching"):
            info = context.info()
            assert info["status"] == "matching" and "status_note" not in info
        assert context.info()["status"] == "idle"
        with pytest.raises(RuntimeError):
            with context.busy("searching"):
                raise RuntimeError("boom")
        assert context.info()["status"] == "idle"


def test_status_left_by_a_dead_process_reads_idle_with_a_note(tmp_path):
    directory = tmp_path / "ctx"
    SearchContext.create(directory).close()
    script = textwrap.dedent("""
        import os, signal, sys
        from lookalike.store import SearchContext
        context = SearchContext.open(sys.argv[1])
        with context.busy("extracting"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(directory)], timeout=60)
    assert result.returncode == -signal.SIGKILL
    with SearchContext.open(directory) as context:
        info = context.info()
    assert info["status"] == "idle"
    assert "extracting" in info["status_note"] and "ended" in info["status_note"]


WRITER = textwrap.dedent("""
    import dataclasses, sys
    import numpy as np
    from lookalike.extract import extract_file
    from lookalike.imaging.features import LocalFeatures
    from lookalike.settings import ExtractionSettings
    from lookalike.store import SearchContext

    directory, seed, *files = sys.argv[1:]
    sources = [extract_file(f, ExtractionSettings()) for f in files]
    rng = np.random.default_rng(int(seed))

    def variant():
        # A different record each time: another path (often one already stored, so replaced),
        # another number of features, another content hash and fingerprint.
        source = sources[rng.integers(len(sources))]
        n = int(rng.integers(1, source.local.count + 1))
        local = LocalFeatures(source.local.keypoints[:n], source.local.descriptors[:n],
                              source.local.width, source.local.height)
        return dataclasses.replace(source, path=f"/photos/{int(rng.integers(150)):03}.jpg", local=local,
                                   content_hash=rng.bytes(32), fingerprint=int(rng.integers(0, 2**63)))

    with SearchContext.open(directory) as context, context.busy("extracting"):
        first = True
        while True:
            context.upsert_many([variant() for _ in range(24)])
            for _ in range(3):
                context.remove(f"/photos/{int(rng.integers(150)):03}.jpg")
            if first:
                print("committed", flush=True)
                first = False
""")


def test_writer_killed_at_random_moments_leaves_only_whole_records(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = [str(images.write_jpeg(folder, f"{name}.jpg", images.photo(name))) for name in ("coffee", "rocket")]
    directory = tmp_path / "ctx"
    SearchContext.create(directory).close()
    chance = random.Random(20261121)
    counts = []
    for run in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(run), *files],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "committed", f"run {run}: the writer did not start"
            time.sleep(chance.uniform(0.0, 0.6))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        with SearchContext.open(directory) as context:
            counts.append(assert_whole(context))
            info = context.info()
            assert info["status"] == "idle" and "extracting" in info["status_note"], info
            expected = expected_index_entries(context)
        assert_consistent(directory, expected)
        env = lmdb.open(str(directory), readonly=True, max_dbs=16)     # every record decodes
        try:
            with env.begin() as txn:
                for name in ("images", "features", "failed"):
                    for _, value in txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False)):
                        codec.unpack(value)
        finally:
            env.close()
    assert counts[-1] > 0 and all(0 < c <= 150 for c in counts), counts


# --- the duplicate graph: queue stamps and pairs of images that went ----------------------

def test_a_pass_result_for_an_image_queued_again_meanwhile_leaves_it_queued(photos, tmp_path):
    from lookalike.match import SCORING
    from lookalike.store.changes import Linked, Relink
    names = list(photos)
    with SearchContext.create(tmp_path / "context") as context:
        nums = context.upsert_many([at(photos[n], tmp_path / f"{n}.jpg") for n in names[:3]])
        context.commit([Relink(50.0, SCORING)])
        page = next(context.pending())
        assert [num for num, _ in page] == nums
        context.commit([Linked(50.0, (), ((nums[0], nums[1], b'{"similarity": 90, "transform": null}'),))])
        context.remove(str(tmp_path / f"{names[0]}.jpg"))    # queues nums[1] again: it was paired
        recorded = context.commit([Linked(50.0, tuple(page), ((nums[0], nums[2], b"{}"),))])[0]
        assert recorded == 0                                   # nums[0] is gone: its pair is dropped
        assert [num for num, _ in next(context.pending())] == [nums[1]]
        assert list(context.pairs()) == []
        assert context.commit([Linked(99.0, tuple(next(context.pending())), ())]) == [0]
        assert context.pending_count() == 1                    # made at another threshold: ignored


def test_a_context_indexed_by_an_older_lookalike_is_indexed_again_on_open(photos, tmp_path):
    directory = tmp_path / "context"
    with SearchContext.create(directory) as context:
        context.upsert_many([at(photos[n], tmp_path / f"{n}.jpg") for n in photos])
    before = raw_entries(directory)
    env = lmdb.open(str(directory), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:        # what an index of version 1 leaves: other keys
        txn.drop(env.open_db(b"lsh", txn=txn, dupsort=True, dupfixed=True), delete=False)
        txn.put(b"index", b"1", db=env.open_db(b"meta", txn=txn))
    env.close()
    first = photos[next(iter(photos))]
    with SearchContext.open(directory) as context:
        # No content hash and no fingerprint to go by: only the descriptor index can find it.
        assert context.find(str(tmp_path / f"{next(iter(photos))}.jpg")).num in \
            context.candidates_for(bytes(16), ~first.fingerprint & (2**64 - 1), first.local)
    assert raw_entries(directory) == before


def test_fingerprint_chunks_written_by_an_older_lookalike_are_written_again_on_open(photos, tmp_path):
    """Before index.CHUNKS_VERSION 2 a chunk posting held the image number alone, and the
    fingerprints were in a database of their own."""
    directory = tmp_path / "context"
    with SearchContext.create(directory) as context:
        context.upsert_many([at(photos[n], tmp_path / f"{n}.jpg") for n in photos])
        stored = {image.num: image.fingerprint for image in context.images()}
    before = raw_entries(directory)
    env = lmdb.open(str(directory), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        chunks = env.open_db(b"chunks", txn=txn, dupsort=True, dupfixed=True)
        old = [(key, value[:4]) for key, value in txn.cursor(db=chunks)]
        txn.drop(chunks, delete=False)
        txn.cursor(db=chunks).putmulti(old)
        fingerprints = env.open_db(b"fingerprints", txn=txn)
        for num, fingerprint in stored.items():
            txn.put(index.NUM.pack(num), fingerprint.to_bytes(8, "big"), db=fingerprints)
        txn.delete(b"chunks", db=env.open_db(b"meta", txn=txn))
    env.close()
    name = next(iter(photos))
    unrelated = np.random.default_rng(3).integers(0, 256, photos[name].local.descriptors.shape, dtype=np.uint8)
    with SearchContext.open(directory) as context:
        # Its fingerprint alone can find it: another content hash, descriptors of nothing.
        assert list(context.candidates_for(bytes(16), photos[name].fingerprint,
                                           dataclasses.replace(photos[name].local, descriptors=unrelated))) \
            == [context.find(str(tmp_path / f"{name}.jpg")).num]
    assert raw_entries(directory) == before
    env = lmdb.open(str(directory), readonly=True, max_dbs=16, subdir=True)
    with env.begin() as txn, pytest.raises(lmdb.NotFoundError):
        env.open_db(b"fingerprints", txn=txn, create=False)
    env.close()


def test_a_bucket_crowded_past_the_limit_is_not_read(photos, tmp_path):
    # Every record carries the same descriptors, so each of their buckets holds all of them.
    # Their hashes and fingerprint are far from the query's: only the descriptor index could
    # find them.
    first = photos[next(iter(photos))]
    variants = fingerprint_variants(first.fingerprint).values()
    far = next(f for f in np.random.default_rng(0).integers(0, 2**63, 100).tolist()
               if min(bin(f ^ v).count("1") for v in variants) > 2 * index.FINGERPRINT_RADIUS)
    crowd = [dataclasses.replace(first, path=str(tmp_path / f"{i}.jpg"), content_hash=i.to_bytes(16, "big"),
                                 fingerprint=far) for i in range(index.CROWDED_BUCKET + 1)]
    query = (first.content_hash, first.fingerprint, first.local)
    with SearchContext.create(tmp_path / "context") as context:
        context.upsert_many(crowd[:-1])
        assert len(list(context.candidates_for(*query))) == index.MAX_VOTED
        context.upsert_many(crowd[-1:])
        assert list(context.candidates_for(*query)) == []
        # The crowded buckets are remembered now; a removal must make the context forget them.
        context.remove(crowd[0].path)
        assert len(list(context.candidates_for(*query))) == index.MAX_VOTED


def test_a_look_up_that_began_before_a_removal_teaches_no_crowded_bucket():
    buckets = index.CrowdedBuckets()
    keys = np.array([(1 << 32) | 5, (3 << 32) | 0xFFFFFF], np.uint64)
    crowded = np.array([index.CROWDED_BUCKET + 1] * 2)
    began = buckets.view()
    buckets.shrinking()
    buckets.after_commit()
    began.learn(keys, crowded)
    assert not buckets.known(keys).any()
    buckets.view().learn(keys, crowded)
    assert buckets.known(keys).all()
    assert not buckets.known(keys ^ np.uint64(1)).any()


def test_the_buckets_read_outright_are_those_counted_first(photos, tmp_path):
    """index.uncrowded_postings either counts each bucket and reads the uncrowded ones, or
    reads them all and drops the crowded: the same postings, for crowded, rare and missing keys."""
    first = photos[next(iter(photos))]
    crowd = [dataclasses.replace(first, path=str(tmp_path / f"{i}.jpg"), content_hash=i.to_bytes(16, "big"))
             for i in range(index.CROWDED_BUCKET + 1)]
    with SearchContext.create(tmp_path / "context") as context:
        context.upsert_many(crowd + [at(features, tmp_path / f"{name}.png") for name, features in photos.items()])
        hasher = inspection.hasher(context)
        keys = sorted({key for features in photos.values()
                       for key in index.lsh_keys(hasher, features.local.descriptors)} | {b"\x05" * 5})
        with inspection.lsh_postings(context) as cursor:
            counted, read = (index.uncrowded_postings(cursor, keys, index.CROWDED_BUCKET, directly)
                             for directly in (False, True))
    sizes = counted[0]
    assert (sizes > index.CROWDED_BUCKET).any() and (sizes == 0).any() and ((sizes > 0) & (sizes < 5)).any()
    assert (read[0] == sizes).all()
    postings = [sorted(zip(*(column.tolist() for column in result[1:]))) for result in (counted, read)]
    assert postings[0] == postings[1] and postings[0]


def test_the_mirrored_keys_are_the_keys_of_the_mirrored_descriptors(photos):
    from lookalike.imaging.features import mirrored
    hasher = index.Hasher("akaze", DESCRIPTOR_BYTES, True)
    for features in photos.values():
        assert (hasher.keys(features.local.descriptors, mirrored=True)
                == hasher.keys(mirrored(features.local, "akaze").descriptors)).all()


def test_the_fingerprint_tier_finds_every_orientation_within_the_radius_nearest_first(tmp_path, photos):
    """Images whose descriptors share nothing with the query's: only their fingerprints, at
    0 to FINGERPRINT_RADIUS + 3 bits from one of the query's eight orientations, can bring them."""
    query = photos["coffee"]
    variants = sorted(set(fingerprint_variants(query.fingerprint).values()))
    rng = np.random.default_rng(5)
    others = dataclasses.replace(query, local=dataclasses.replace(
        query.local, descriptors=rng.integers(0, 256, query.local.descriptors.shape, dtype=np.uint8)))
    distance_of = {}
    stored = []
    for distance in range(index.FINGERPRINT_RADIUS + 4):
        variant = variants[distance % len(variants)]
        flipped = rng.choice(64, distance, replace=False)
        fingerprint = variant ^ sum(1 << int(bit) for bit in flipped)
        if min(bin(fingerprint ^ v).count("1") for v in variants) != distance:
            continue                   # nearer to another orientation: its distance is not this one
        path = str(tmp_path / f"at-{distance}.jpg")
        distance_of[path] = distance
        stored.append(dataclasses.replace(others, path=path, content_hash=distance.to_bytes(16, "big"),
                                          fingerprint=fingerprint))
    with SearchContext.create(tmp_path / "context") as context:
        context.upsert_many(stored)
        found = [context.image_by_number(num).path
                 for num in context.candidates_for(query.content_hash, query.fingerprint, query.local)]
    expected = sorted((p for p, d in distance_of.items() if d <= index.FINGERPRINT_RADIUS), key=distance_of.get)
    assert len(expected) >= index.FINGERPRINT_RADIUS and len(distance_of) > len(expected)
    assert found == expected



def test_the_copies_the_hash_and_fingerprint_find_come_before_the_descriptors_are_looked_up(tmp_path, photos,
                                                                                             monkeypatch):
    """`similar` verifies them meanwhile: the descriptors are most of a look-up's time."""
    looked_up = []
    shared_buckets = index.shared_buckets
    monkeypatch.setattr(index, "shared_buckets",
                        lambda *args, **kwargs: looked_up.append(kwargs["mirrored"]) or shared_buckets(*args, **kwargs))
    query = photos["coffee"]
    with SearchContext.create(tmp_path / "context") as context:
        context.upsert_many([at(features, tmp_path / f"{name}.jpg") for name, features in photos.items()]
                            + [at(query, tmp_path / "copy.jpg")])
        copies = {context.find(str(tmp_path / name)).num for name in ("coffee.jpg", "copy.jpg")}
        found = context.candidates_for(query.content_hash, query.fingerprint, query.local)
        assert {next(found), next(found)} == copies
        assert looked_up == []
        assert copies.isdisjoint(found)
        assert looked_up == [False, True]          # the descriptors, then their mirror images'



def test_similar_skips_a_candidate_removed_since_the_look_up(tmp_path, photos, monkeypatch):
    from lookalike.search import similar
    query = photos["coffee"]
    with SearchContext.create(tmp_path / "context") as context:
        context.upsert_many([at(query, tmp_path / "copy.jpg"), at(photos["rocket"], tmp_path / "gone.jpg")])
        gone = context.find(str(tmp_path / "gone.jpg")).num
        context.remove(str(tmp_path / "gone.jpg"))
        look_up = context.candidates_for
        monkeypatch.setattr(context, "candidates_for", lambda *args: itertools.chain([gone], look_up(*args)))
        hits = similar(context, Query(at(query, tmp_path / "query.jpg")), 50.0, None)
    assert [(hit.image.path, hit.match.similarity) for hit in hits] == [(str(tmp_path / "copy.jpg"), 100.0)]

# --- the writer thread ---------------------------------------------------------------------

def test_a_backlog_is_committed_in_transactions_of_at_most_a_batch(photos, tmp_path):
    """LMDB keeps the pages of the largest write transaction in the heap for good (writer.py),
    so a backlog must not become one big transaction."""
    from lookalike.store.changes import Put
    from lookalike.store.writer import BATCH, Writer
    backlog = 3 * BATCH + 1
    sizes = []
    with SearchContext.create(tmp_path / "context") as context:
        writer = Writer(context, capacity=backlog, on_commit=lambda changes, results: sizes.append(len(changes)))
        source = photos["coffee"]
        for i in range(backlog):                        # all waiting before the thread starts
            writer.submit(Put(dataclasses.replace(at(source, f"/photos/{i:03}.jpg"), content_hash=bytes([i]) * 32)))
        writer.start()
        assert writer.flush(60) and writer.stop(10)
        assert context.count() == backlog
    assert sizes == [BATCH, BATCH, BATCH, 1]
