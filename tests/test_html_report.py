"""The HTML report (reports/html.py), `duplicates --format html` and `lookalike report show`.

The page is checked twice: as markup (escaping, the Content-Security-Policy, placeholders,
caps), and as a browser shows it: headless Chromium loads a report made by the CLI from real
photos, its DOM is read back and a screenshot taken. A hostile file name, a real file called
`<img src=x onerror=alert(1)>.jpg`, must come out as text, never as an element.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

import images
from lookalike import cli, reports
from lookalike.errors import ExitCode
from lookalike.reports import html as html_report
from lookalike.reports.html import CSP, to_html
from lookalike.reports.text import human_size, local_time

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
CHROMIUM = shutil.which("chromium")
DATA_JPEG = "data:image/jpeg;base64,"


class Page(HTMLParser):
    """The elements and text of some markup, as an HTML parser sees them."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(markup)
        self.close()

    # Elements that do not break a line of text: a path is split by them (<wbr>, a bold name).
    INLINE = {"a", "b", "code", "time", "wbr"}

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
        if tag not in self.INLINE:
            self.texts.append(" ")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag not in self.INLINE:
            self.texts.append(" ")

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.texts).split())

    def find(self, tag: str, css_class: str | None = None) -> list[dict]:
        return [attrs for name, attrs in self.elements
                if name == tag and (css_class is None or css_class in attrs.get("class", "").split())]


def group_sections(markup: str) -> list[Page]:
    """One Page per group section (the markup split at each section opening)."""
    return [Page(chunk) for chunk in re.split(r"(?=<section class=\"group)", markup)[1:]]


def decoded(uri: str) -> np.ndarray:
    assert uri.startswith(DATA_JPEG)
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(uri[len(DATA_JPEG):]), np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    return pixels


# --- documents built by hand, over real files --------------------------------------------------

def entry(path: Path, width: int, height: int, similarity: float = 100.0, keeper: bool = False,
          **extra) -> dict:
    st = os.stat(path) if os.path.exists(path) else None
    return {"path": str(path), "similarity": similarity, "width": width, "height": height,
            "size": st.st_size if st else 12345, "mtime": st.st_mtime_ns / 1e9 if st else 1.7e9,
            "keeper": keeper, **extra}


def document(*groups: list[dict]) -> dict:
    return {"version": 1, "generated": "2026-11-21T20:00:00Z", "context": "/var/lib/lookalike/context",
            "threshold": 50.0,
            "groups": [{"id": number, "reclaimable_bytes": sum(i["size"] for i in members[1:]), "images": members}
                       for number, members in enumerate(groups, 1)]}


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """The astronaut and a smaller, mirrored copy of it under the hostile name."""
    astronaut = images.photo("astronaut")
    keeper = images.write_jpeg(tmp_path, "astronaut.jpg", astronaut)
    copy = images.write_jpeg(tmp_path, HOSTILE, images.resized(np.ascontiguousarray(astronaut[:, ::-1]), 256, 256))
    return keeper, copy


def test_a_hostile_file_name_is_text_not_markup(pair):
    keeper, copy = pair
    assert copy.name == HOSTILE and copy.exists()
    page_html = reports.render(document([entry(keeper, 512, 512, keeper=True), entry(copy, 256, 256, 99.1)]), "html")
    assert html.escape(HOSTILE) in page_html            # &lt;img src=x onerror=alert(1)&gt;.jpg
    assert "<img src=x" not in page_html and "onerror=alert" not in page_html.replace(html.escape(HOSTILE), "")
    page = Page(page_html)
    assert HOSTILE in page.text and str(copy) in page.text
    assert not [attrs for _, attrs in page.elements if "onerror" in attrs]
    pictures = page.find("img")
    assert len(pictures) == 2 and all(p["src"].startswith(DATA_JPEG) for p in pictures)
    assert any(p["alt"] == HOSTILE for p in pictures)      # escaped in the attribute, intact once parsed


def test_the_page_carries_a_strict_content_security_policy(pair):
    keeper, copy = pair
    page_html = to_html(document([entry(keeper, 512, 512, keeper=True), entry(copy, 256, 256, 99.1)]))
    page = Page(page_html)
    [policy] = [attrs for tag, attrs in page.elements
                if tag == "meta" and attrs.get("http-equiv", "").lower() == "content-security-policy"]
    assert policy["content"] == CSP
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'" and directives["img-src"] == "data:"
    assert directives["style-src"] == "'unsafe-inline'" and "script-src" not in directives
    # It comes before anything it governs, and nothing is fetched or run.
    assert page_html.index("Content-Security-Policy") < page_html.index("<style>") < page_html.index("<img")
    assert not page.find("script") and not page.find("link") and "url(" not in page_html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page_html)


def test_missing_and_unreadable_files_get_a_placeholder_saying_why(tmp_path, pair):
    keeper, _ = pair
    half = images.truncated_jpeg(tmp_path, "half.jpg")
    gone = tmp_path / "moved-away.jpg"
    folder = tmp_path / "a-folder.jpg"
    folder.mkdir()
    page = Page(to_html(document([entry(keeper, 512, 512, keeper=True), entry(gone, 512, 512, 98.0),
                                  entry(half, 600, 400, 97.0), entry(folder, 10, 10, 96.0)])))
    placeholders = page.find("div", "placeholder")
    assert len(placeholders) == 3 and len(page.find("img")) == 1
    assert "File not found (moved or deleted?) missing: no such file" in page.text
    assert "truncated: jpeg data ends before the image does" in page.text
    assert "not a file: not a regular file" in page.text
    assert str(gone) in page.text                 # the entry is still listed, with its path


def test_a_name_that_is_not_utf8_is_shown_with_escapes(tmp_path, pair):
    keeper, _ = pair
    latin1 = images.non_utf8_name(tmp_path, images.photo("astronaut"))       # b"caf\xe9.jpg"
    page_html = to_html(document([entry(keeper, 512, 512, keeper=True), entry(latin1, 512, 512, 100.0)]))
    page_html.encode("utf-8")                                # no lone surrogate reaches the file
    page = Page(page_html)
    assert "caf\\xe9.jpg" in page.text and len(page.find("img")) == 2      # and the file was read


def test_a_file_changed_since_the_report_is_flagged(pair):
    keeper, copy = pair
    listed = document([entry(keeper, 512, 512, keeper=True), entry(copy, 256, 256, 99.1)])
    assert "changed since the report" not in to_html(listed)
    os.utime(copy, ns=(0, 10**18))
    assert Page(to_html(listed)).text.count("changed since the report") == 1


def test_thumbnails_are_small_colour_jpegs_of_the_files(tmp_path):
    coffee = images.photo("coffee")                        # 600 x 400
    rotated = images.exif_rotated_jpeg(tmp_path, coffee, 6, name="rotated.jpg")     # shown 400 x 600
    plain = images.write_jpeg(tmp_path, "plain.jpg", coffee)
    page = Page(to_html(document([entry(plain, 600, 400, keeper=True), entry(rotated, 400, 600, 99.0)])))
    first, second = (decoded(p["src"]) for p in page.find("img"))
    assert first.shape == (133, 200, 3) and second.shape == (200, 133, 3)      # EXIF orientation applied
    expected = cv2.cvtColor(images.resized(coffee, 200, 133), cv2.COLOR_RGB2BGR)
    assert np.abs(first.astype(int) - expected).mean() < 12                    # colour, the right way round
    assert np.abs(np.rot90(second, 1).astype(int) - expected).mean() < 12
    assert [(p["width"], p["height"]) for p in page.find("img")] == [("200", "133"), ("133", "200")]


def test_keeper_facts_and_summary(pair):
    keeper, copy = pair
    listed = document([entry(keeper, 512, 512, keeper=True),
                       entry(copy, 256, 256, 99.14, kinds=["flipped", "resized"],
                             transform={"flipped": True, "rotation_degrees": 0.0,
                                        "coverage_first": 1.0, "coverage_second": 1.0})])
    page_html = to_html(listed, now=1.8e9)
    page = Page(page_html)
    [keeper_card] = page.find("figure", "keeper")
    assert keeper_card["data-keeper"] == "true" and len(page.find("figure")) == 2
    assert page_html.index('data-keeper="true"') < page_html.index('data-keeper="false"')
    text = page.text
    reclaimable = human_size(copy.stat().st_size)
    for fact in ("Groups 1", "Images in groups 2", f"Reclaimable {reclaimable}", "Threshold 50",
                 f"Report generated {local_time(1795291200)}", "/var/lib/lookalike/context",
                 f"Thumbnails made {local_time(1.8e9)}", "✓ Keep suggested keeper", "similarity 99.1",
                 "Resolution 512 × 512", f"Size {human_size(keeper.stat().st_size)}",
                 f"Modified {local_time(keeper.stat().st_mtime, offset=False)}", "mirrored", "flipped, resized"):
        assert fact in text, fact
    assert "Thumbnails for the first" not in text


def test_large_reports_are_capped_and_say_so(tmp_path):
    small = images.resized(images.photo("chelsea"), 60, 40)
    groups = []
    for number in range(5):
        files = [images.write_jpeg(tmp_path, f"g{number}-{i}.jpg", small) for i in range(2)]
        groups.append([entry(files[0], 60, 40, keeper=True), entry(files[1], 60, 40, 99.0)])
    page_html = to_html(document(*groups), thumbnail_groups=2, listed_groups=4)
    sections = group_sections(page_html)
    assert len(sections) == 4
    assert [len(s.find("img")) for s in sections] == [2, 2, 0, 0]
    assert [len(s.find("table")) for s in sections] == [0, 0, 1, 1]
    assert all(len(s.find("tr", "keeper")) == 1 for s in sections[2:])
    text = Page(page_html).text
    assert ("Thumbnails for the first 2 of 5 groups only, to keep this page usable; the next 2 are listed as "
            "text; 1 more is not listed (the JSON and CSV formats list every group).") in text
    assert "1 more group not listed here" in text


def test_an_empty_report(tmp_path):
    page = Page(to_html(document()))
    assert "Groups 0" in page.text and not page.find("section") and not page.find("img")


@pytest.mark.parametrize("size, shown", [(0, "0 bytes"), (1, "1 byte"), (999, "999 bytes"), (1000, "1.0 kB"),
                                         (168_004, "168.0 kB"), (999_949, "999.9 kB"), (999_999, "1.0 MB"),
                                         (35_000_000, "35.0 MB"), (2 * 10**12, "2.0 TB")])
def test_human_size(size, shown):
    assert human_size(size) == shown


# --- through the CLI, over real photos ----------------------------------------------------------

def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([os.fspath(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Two pictures with copies (one copy under the hostile name) and one picture alone."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut, coffee = images.photo("astronaut"), images.photo("coffee")
    images.camera_jpeg(folder, "astronaut.jpg", astronaut)      # the original: the copies have no EXIF
    images.write_jpeg(folder, "astronaut-small.jpg", images.resized(astronaut, 256, 256), 80)
    images.write_jpeg(folder, HOSTILE, np.ascontiguousarray(astronaut[:, ::-1]), 85)
    images.write_jpeg(folder, "coffee.jpg", coffee)
    images.write_jpeg(folder, "coffee-cropped.jpg", coffee[:, :300].copy())
    images.write_jpeg(folder, "chelsea.jpg", images.photo("chelsea"))
    return folder


@pytest.fixture(scope="module")
def scanned(photo_folder, tmp_path_factory) -> dict:
    """`lookalike scan` over the photos, reporting in JSON and HTML."""
    base = tmp_path_factory.mktemp("scanned")
    config = base / "lookalike.yaml"
    config.write_text(f"watch:\n  - path: {photo_folder}\nstate_dir: {base / 'state'}\n"
                      "reports:\n  formats: [json, html]\n")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(["--config", str(config), "scan"]) == 0
    result = json.loads(out.getvalue())
    assert (result["groups"], result["images_in_groups"]) == (2, 5)
    reports_dir = base / "state" / "reports"
    return {"config": config, "state": base / "state", "json": reports_dir / "duplicates-latest.json",
            "html": reports_dir / "duplicates-latest.html",
            "document": json.loads((reports_dir / "duplicates-latest.json").read_text())}


def test_scan_writes_the_html_report_when_configured(scanned):
    assert not (scanned["json"].parent / "duplicates-latest.csv").exists()
    sections = group_sections(scanned["html"].read_text())
    assert len(sections) == 2 and [len(s.find("img")) for s in sections] == [3, 2]


def test_the_page_says_why_each_keeper_is_kept_and_what_resolve_would_do(scanned, tmp_path, capsys):
    page = scanned["html"].read_text()
    [command] = re.findall(r"<pre><code>(.*?)</code></pre>", page)
    args = shlex.split(html.unescape(command))
    stamped = next(p for p in scanned["json"].parent.glob("duplicates-2*.json"))
    assert args == ["lookalike", "--config", str(scanned["config"]), "resolve", "--report", str(stamped),
                    "--to", "QUARANTINE_DIR", "--apply"]
    # The command, run without --apply, plans what the page shows for each file.
    quarantine = str(tmp_path / "quarantine")
    code, out, _ = run(capsys, *[quarantine if a == "QUARANTINE_DIR" else a for a in args[1:] if a != "--apply"],
                       "--json")
    plan = json.loads(out)
    acted = {a["path"]: a["action"] for a in plan["actions"]}
    assert code == 0 and acted and plan["skipped"]
    assert len(group_sections(page)) == len(scanned["document"]["groups"])
    for section, group in zip(group_sections(page), scanned["document"]["groups"]):
        assert f"kept: {group['keeper_reason']}" in section.text
        shown = [attrs["data-action"] for attrs in section.find("p", "plan")]
        assert shown == [acted.get(image["path"], "none") for image in group["images"]]
        assert shown[0] == "none" and "left alone: the keeper" in section.text


def test_duplicates_format_html(scanned, tmp_path, capsys):
    context = scanned["state"] / "context"
    code, out, err = run(capsys, "--context", context, "duplicates", "--format", "html")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>")
    assert len(group_sections(out)) == 2 and html.escape(HOSTILE) in out
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    code, out, _ = run(capsys, "--context", context, "duplicates", "--output", target)
    assert code == 0 and out == "" and len(group_sections(target.read_text())) == 2
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_report_show(scanned, photo_folder, capsys):
    document = scanned["document"]
    code, out, err = run(capsys, "--config", scanned["config"], "report", "show")
    assert code == 0 and err == ""
    lines = out.splitlines()
    fields = dict(re.match(r"([^:]+):\s+(.*)", line).groups() for line in lines[:7])
    reclaimable = sum(g["reclaimable_bytes"] for g in document["groups"])
    assert fields == {"Report": str(scanned["json"]), "Generated": fields["Generated"],
                      "Context": str(scanned["state"] / "context"), "Threshold": "50", "Groups": "2",
                      "Images in groups": "5", "Reclaimable": f"{human_size(reclaimable)} ({reclaimable:,} bytes)"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d", fields["Generated"])
    assert lines[7] == "" and lines[8].startswith("All 2 groups, most reclaimable first")
    first = document["groups"][0]["images"]
    assert lines[9].startswith(f"1. {first[0]['path']}  ({first[0]['width']}x{first[0]['height']}, ")
    copies = [line for line in lines[10:] if line.lstrip().startswith("→")]
    assert len(copies) == 3
    assert any(line.endswith(")") and f"{photo_folder / HOSTILE}" in line for line in copies)
    assert re.match(r"\s+→ +\d+\.\d  /", copies[0])
    assert all(", ".join(image["kinds"]) + ")" in line for line, image in zip(copies[:len(first) - 1], first[1:]))

    same = run(capsys, "report", "show", "--file", scanned["json"])
    assert same == (0, out, "")
    assert run(capsys, "--context", scanned["state"] / "context", "report", "show") == (0, out, "")
    assert run(capsys, "report", "show", "--config", scanned["config"]) == (0, out, "")
    assert run(capsys, "report", "show", "--context", scanned["state"] / "context") == (0, out, "")
    code, top, _ = run(capsys, "--config", scanned["config"], "report", "show", "--top", "1")
    assert code == 0 and "Top 1 of 2 groups" in top and top.rstrip().endswith("... and 1 more (--top N shows more)")
    assert "2. " not in top


def test_report_show_errors(scanned, tmp_path, capsys):
    code, out, err = run(capsys, "report", "show", "--file", tmp_path / "absent.json")
    assert (code, out) == (ExitCode.NOT_FOUND, "") and "no such report" in err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    code, out, err = run(capsys, "report", "show", "--file", garbage)
    assert (code, out) == (ExitCode.FAILED, "") and "not JSON" in err
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**scanned["document"], "version": 2}))
    code, out, err = run(capsys, "report", "show", "--file", future)
    assert (code, out) == (ExitCode.FAILED, "") and "report version 2" in err
    code, out, err = run(capsys, "report", "show")
    assert (code, out) == (ExitCode.USAGE, "") and "--file" in err
    code, out, err = run(capsys, "report", "show", "--file", scanned["json"], "--top", "0")
    assert code == ExitCode.USAGE and "--top" in err


def test_report_show_of_a_report_without_groups(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(document()))
    code, out, _ = run(capsys, "report", "show", "--file", empty)
    assert code == 0 and "Groups:           0" in out and out.endswith("\nNo duplicates found.\n")


# --- in a real browser ---------------------------------------------------------------------------

def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=180)


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                             "(Debian package chromium); the page is not loaded")


@needs_chromium
def test_chromium_shows_the_report(scanned, photo_folder, tmp_path):
    page_file = scanned["html"]
    dumped = chromium(tmp_path, page_file.as_uri(), "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert "Content Security Policy" not in dumped.stderr, "the page breaks its own policy"

    sections = group_sections(dom)
    assert len(sections) == 2
    for section, group in zip(sections, scanned["document"]["groups"]):
        cards = section.find("figure")
        assert len(cards) == len(group["images"])
        assert [c["data-keeper"] for c in cards] == ["true"] + ["false"] * (len(cards) - 1)
        assert "keeper" in cards[0]["class"].split() and section.text.count("✓ Keep") == 1
        assert group["images"][0]["path"] in section.text
        assert f"kept: {group['keeper_reason']}" in section.text and len(section.find("p", "plan")) == len(cards)
        assert all(p["src"].startswith(DATA_JPEG) for p in section.find("img"))
        assert len(section.find("img")) == len(cards)
        for picture in section.find("img"):
            assert max(decoded(picture["src"]).shape[:2]) == 200
    whole = Page(dom)
    assert HOSTILE in whole.text and str(photo_folder / HOSTILE) in whole.text
    assert not [attrs for _, attrs in whole.elements if "onerror" in attrs]
    assert not [p for p in whole.find("img") if not p["src"].startswith(DATA_JPEG)]

    screenshot = tmp_path / "report.png"
    shot = chromium(tmp_path, page_file.as_uri(), f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (2000, 1280, 3)
    top = pixels[:1000]                                     # the groups are there: photos, not a blank page
    assert top.std() > 30 and len(np.unique(top.reshape(-1, 3) // 8, axis=0)) > 2000


@needs_chromium
def test_the_policy_stops_script_even_if_an_escape_is_missed(tmp_path, monkeypatch):
    """Fault injection: escaping switched off, a file name that would retitle the page."""
    keeper = images.write_jpeg(tmp_path, "keeper.jpg", images.photo("rocket"))
    evil = images.write_jpeg(tmp_path, "<img src=x onerror=document.title='pwned'>.jpg", images.photo("rocket"))
    monkeypatch.setattr(html_report, "_e", lambda value: str(value))
    page_file = tmp_path / "unescaped.html"
    page_file.write_text(to_html(document([entry(keeper, 640, 427, keeper=True), entry(evil, 640, 427, 100.0)])))
    assert "<img src=x onerror=document.title='pwned'>" in page_file.read_text()      # the escape is missed
    dumped = chromium(tmp_path, page_file.as_uri(), "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    [title] = re.findall(r"<title>(.*?)</title>", dumped.stdout)
    assert title.startswith("lookalike:") and "pwned" not in title
    assert "violates the following Content Security Policy directive" in dumped.stderr


# --- a decoder that crashes or hangs costs one thumbnail, never the page ---------------------

# Loaded at start-up by every Python process given its folder on PYTHONPATH: the decoder dies by
# SIGSEGV (as a native decoder does on a hostile file) or never returns, for files so named.
FAULTY_DECODER = """
import os, signal, time
from lookalike.imaging import decode

_colour_thumbnail = decode.colour_thumbnail

def colour_thumbnail(path, *args, **kwargs):
    name = os.path.basename(os.fsdecode(path))
    if name.startswith("decoder-crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("decoder-hang"):
        time.sleep(600)
    return _colour_thumbnail(path, *args, **kwargs)

decode.colour_thumbnail = colour_thumbnail
"""

# The process writing the page, with the faulty decoder loaded too: it must outlive it and
# leave no worker behind.
WRITER = """
import json, multiprocessing, sys
from lookalike.reports.html import to_html
document = json.load(open(sys.argv[1]))
page = to_html(document, thumbnail_timeout=float(sys.argv[3]))
open(sys.argv[2], "w").write(page)
print(len(multiprocessing.active_children()))
"""


def write_page_with_faulty_decoder(tmp_path: Path, document: dict, timeout: float) -> str:
    injected = tmp_path / "faulty-decoder"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(FAULTY_DECODER)
    source, page_path = tmp_path / "report.json", tmp_path / "report.html"
    source.write_text(json.dumps(document))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(injected), os.environ.get("PYTHONPATH")]))}
    written = subprocess.run([sys.executable, "-c", WRITER, str(source), str(page_path), str(timeout)],
                             env=env, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == "0"                 # no worker left behind
    return page_path.read_text()


@pytest.mark.parametrize("fault, timeout, shown", [
    ("crash", 60.0, "No thumbnail no thumbnail: the decoder crashed: the decoder process died (signal 11)"),
    ("hang", 2.0, "No thumbnail no thumbnail: timed out: no result after 2 s; the decoder was stopped"),
])
def test_a_decoder_that_crashes_or_hangs_costs_only_that_thumbnail(tmp_path, pair, fault, timeout, shown):
    keeper, copy = pair
    faulty = images.write_jpeg(tmp_path, f"decoder-{fault}.jpg", images.photo("coffee"))
    other = images.write_jpeg(tmp_path, "coffee.jpg", images.photo("coffee"))
    markup = write_page_with_faulty_decoder(tmp_path, document(
        [entry(keeper, 512, 512, keeper=True), entry(copy, 256, 256, 99.1)],
        [entry(other, 600, 400, keeper=True), entry(faulty, 600, 400, 98.0)]), timeout)
    intact, struck = group_sections(markup)
    assert len(intact.find("img")) == 2 and not intact.find("div", "placeholder")
    # In the struck group the other file still has its picture; the faulty one's card says why.
    [picture] = struck.find("img")
    assert picture["alt"] == other.name and decoded(picture["src"]).shape[2] == 3
    assert len(struck.find("div", "placeholder")) == 1
    assert shown in struck.text and str(faulty) in struck.text
