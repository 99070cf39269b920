"""The duplicates report as one HTML page a person can act on.

One self-contained file: it works opened from disk, with no network, no script and nothing
fetched; thumbnails are JPEGs in data: URIs and the styles are inline. Paths are untrusted
text (anyone who can write to a watched folder chooses file names), so every one is
HTML-escaped, and a Content-Security-Policy that allows no script and no fetch backs the
escaping up: even a missed escape could not run anything.

Thumbnails are made from the files as they are when the page is rendered (read with
`read_file`, decoded by `colour_thumbnail`: same size caps, same EXIF orientation as the
features). The decoders are native code, so, as in extraction, they run in spawned worker
processes (`workers.Workers`) with a time limit per file: a decoder that crashes or hangs on a
hostile file costs that file's thumbnail, never the process writing the page. A file that has
gone, no longer decodes, crashed its decoder or ran out of time gets a placeholder saying why;
one that changed since the report is flagged. Only the first groups get thumbnails and only a
bounded number are listed at all, so a report of a large library still opens; the page says so.

Given a `Resolution` (reports.publish makes one from resolve's own plan), the page also says
what `resolve` would do with each file, and the command that does it.
"""

from __future__ import annotations

import base64
import html
import os
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait
from pathlib import PurePosixPath

import cv2

from ..errors import ImageError, display_path
from ..imaging.decode import DecodeLimits, colour_thumbnail, read_file
from ..resolve import Plan
from ..settings import ExtractionSettings
from ..workers import Workers
from .text import generated_seconds, human_size, iso_time, local_time, plural, threshold_text, totals

THUMBNAIL_GROUPS = 500       # groups shown with thumbnails
LISTED_GROUPS = 5000         # groups listed at all (past THUMBNAIL_GROUPS, as text only)
THUMBNAIL_PIXELS = 200       # longest side
THUMBNAIL_QUALITY = 80
THUMBNAIL_SECONDS = 60.0     # per file: far beyond any sound file's decode, short enough to wait for

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True)
class Thumbnail:
    uri: str | None = None        # data:image/jpeg;base64,...
    width: int = 0
    height: int = 0
    problem: str | None = None    # why there is no picture: "missing: no such file"
    missing: bool = False         # the file is not there any more
    changed: bool = False         # size or mtime differ from the report's


def make_thumbnail(image: dict, limits: DecodeLimits, longest: int = THUMBNAIL_PIXELS) -> Thumbnail:
    """A thumbnail of the report entry's file as it is now, or the reason there is none."""
    path = image["path"]
    try:
        loaded = read_file(path, limits)
        pixels = colour_thumbnail(path, loaded.data, limits, longest)
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
        if not ok:
            raise ValueError("the JPEG encoder refused the thumbnail")
    except ImageError as exc:
        return Thumbnail(problem=f"{exc.reason.replace('_', ' ')}: {exc.detail}", missing=exc.reason == "missing")
    except Exception as exc:          # noqa: BLE001 - one odd file must not cost the whole page
        return Thumbnail(problem=f"no thumbnail: {type(exc).__name__}: {exc}")
    changed = (loaded.identity.size != image.get("size")
               or abs(loaded.identity.mtime_ns / 1e9 - float(image.get("mtime", 0))) > 0.001)
    uri = "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
    return Thumbnail(uri, pixels.shape[1], pixels.shape[0], changed=changed)


@dataclass(frozen=True)
class Resolution:
    """What `resolve` would do with the report (the plan of its default action), and the
    command that carries it out."""

    steps: dict[str, tuple[str | None, str]]     # path -> (the action, or None when left alone; why)
    command: str

    @classmethod
    def of(cls, plan: Plan, command: str) -> "Resolution":
        steps: dict[str, tuple[str | None, str]] = {skip.path: (None, skip.reason) for skip in plan.skipped}
        steps.update((action.file.path, (action.action, action.reason)) for action in plan.actions)
        return cls(steps, command)

    @property
    def acted_on(self) -> int:
        return sum(action is not None for action, _ in self.steps.values())


@dataclass(frozen=True)
class _ThumbnailJob:
    index: int                    # the entry's place in the page
    image: dict

    @property
    def path(self):
        return self.image["path"]


def _thumbnail_job(limits: DecodeLimits, job: _ThumbnailJob) -> Thumbnail:
    return make_thumbnail(job.image, limits)


def _lost_thumbnail(job: _ThumbnailJob, reason: str, detail: str) -> Thumbnail:
    what = "the decoder crashed" if reason == "crashed" else "timed out"
    return Thumbnail(problem=f"no thumbnail: {what}: {detail}")


def make_thumbnails(entries: list[dict], limits: DecodeLimits, workers: int | None = None,
                    timeout: float = THUMBNAIL_SECONDS) -> list[Thumbnail]:
    """`make_thumbnail` of each entry, in spawned worker processes, in order."""
    if not entries:
        return []
    thumbnails: list[Thumbnail | None] = [None] * len(entries)
    waiting = [_ThumbnailJob(index, image) for index, image in reversed(list(enumerate(entries)))]
    pool = Workers(min(workers or os.cpu_count() or 1, len(entries)), partial(_thumbnail_job, limits),
                   _lost_thumbnail, timeout, kind="thumbnail")
    try:
        while waiting or pool.busy:
            while waiting and pool.free:
                pool.submit(waiting.pop())
            # Wakes on a result or a death; the timeout bounds how late an overrun is noticed.
            wait(pool.waitables(), min(1.0, timeout / 4))
            for job, thumbnail in pool.collect():
                thumbnails[job.index] = thumbnail
    finally:
        pool.stop()
    return thumbnails


def to_html(document: dict, limits: DecodeLimits | None = None, thumbnail_groups: int = THUMBNAIL_GROUPS,
            listed_groups: int = LISTED_GROUPS, workers: int | None = None, now: float | None = None,
            thumbnail_timeout: float = THUMBNAIL_SECONDS, resolution: Resolution | None = None) -> str:
    """The page for a report document (reports.to_document's shape, version 1), with what
    `resolve` would do if `resolution` is given."""
    limits = limits or ExtractionSettings().limits
    groups = document["groups"]
    with_pictures = groups[:thumbnail_groups]
    as_text = groups[len(with_pictures):max(listed_groups, len(with_pictures))]
    entries = [image for group in with_pictures for image in group["images"]]
    pictures = iter(make_thumbnails(entries, limits, workers, thumbnail_timeout))

    parts = [_head(document), _summary(document, len(with_pictures), len(as_text), now, resolution)]
    parts.append("<main>")
    for group in with_pictures:
        parts.append(_group(group, [next(pictures) for _ in group["images"]], resolution))
    for group in as_text:
        parts.append(_text_group(group, resolution))
    parts.append("</main>")
    hidden = len(groups) - len(with_pictures) - len(as_text)
    if hidden:
        parts.append(f'<p class="note end">{hidden:,} more {plural(hidden, "group")} not listed here; '
                     f"the JSON and CSV formats list every group.</p>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def _e(value) -> str:
    """Escaped text for element content and quoted attributes; undecodable path bytes as \\x escapes."""
    text = display_path(value) if isinstance(value, (str, bytes)) else str(value)
    return html.escape(text, quote=True)


def _head(document: dict) -> str:
    title = f"lookalike: {len(document['groups'])} duplicate {plural(len(document['groups']), 'group')}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>"""


def _summary(document: dict, pictured: int, texted: int, now: float | None, resolution: Resolution | None) -> str:
    counts = totals(document)
    facts = [("Groups", f"{counts['groups']:,}"), ("Images in groups", f"{counts['images']:,}"),
             ("Reclaimable", human_size(counts["reclaimable"])), ("Threshold", threshold_text(document))]
    tiles = "".join(f'<div class="fact"><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>' for label, value in facts)
    notes = ""
    if counts["groups"] > pictured:
        hidden = counts["groups"] - pictured - texted
        note = f"Thumbnails for the first {pictured:,} of {counts['groups']:,} groups only, to keep this page usable"
        if texted:
            note += f"; the next {texted:,} {'is' if texted == 1 else 'are'} listed as text"
        if hidden:
            note += (f"; {hidden:,} more {'is' if hidden == 1 else 'are'} not listed"
                     " (the JSON and CSV formats list every group)")
        notes = f'<p class="note cap">{_e(note)}.</p>'
    rendered = time.time() if now is None else now
    generated = generated_seconds(document)
    generated_html = (f'<time datetime="{_e(iso_time(generated))}">{_e(local_time(generated))}</time>'
                      if generated is not None else _e(document.get("generated", "")))
    return f"""<header>
<h1>Duplicate images</h1>
<dl class="facts">{tiles}</dl>
<p class="meta">Report generated {generated_html} from the search context
<code>{_e(document.get("context", ""))}</code>.
Thumbnails made <time datetime="{_e(iso_time(rendered))}">{_e(local_time(rendered))}</time> from the files as they
were then; times are local. Similarity is to the suggested keeper, from 0 to 100; groups are sorted by the bytes
their copies take.</p>
{notes}
{_command(resolution)}
</header>"""


def _command(resolution: Resolution | None) -> str:
    if resolution is None:
        return ""
    moved = resolution.acted_on
    return f"""<section class="resolve">
<h2>From this report to a clean folder</h2>
<p>{moved:,} {"copy" if moved == 1 else "copies"} would be moved to a quarantine folder (each marked below), every other file
left where it is. Nothing is changed until you run:</p>
<pre><code>{_e(resolution.command)}</code></pre>
<p>with <code>QUARANTINE_DIR</code> a folder outside the watched folders. Without <code>--apply</code> it only
prints the plan; <code>lookalike undo QUARANTINE_DIR/lookalike-manifest-*.jsonl</code> puts the files back.</p>
</section>"""


def _planned(image: dict, resolution: Resolution | None) -> tuple[str, str]:
    """(the data-action value, the words) for what `resolve` would do with the file."""
    if resolution is None:
        return "", ""
    action, reason = resolution.steps.get(image["path"], (None, "not in the plan"))
    return action or "none", f"{action}: {reason}" if action else f"left alone: {reason}"


def _heading(group: dict) -> str:
    count = len(group["images"])
    reason = (f' · <span class="reason">kept: {_e(group["keeper_reason"])}</span>'
              if group.get("keeper_reason") else "")
    return f"""<h2><a href="#group-{_e(group['id'])}">Group {_e(group['id'])}</a>
<span>{count} {plural(count, "image")} · {_e(human_size(group['reclaimable_bytes']))} reclaimable{reason}</span></h2>"""


def _group(group: dict, thumbnails: list[Thumbnail], resolution: Resolution | None) -> str:
    cards = "\n".join(_card(image, thumb, resolution) for image, thumb in zip(group["images"], thumbnails))
    return f"""<section class="group" id="group-{_e(group['id'])}">
{_heading(group)}
<div class="images">
{cards}
</div>
</section>"""


def _card(image: dict, thumb: Thumbnail, resolution: Resolution | None) -> str:
    keeper = bool(image.get("keeper"))
    name = PurePosixPath(display_path(image["path"])).name
    if thumb.uri:
        picture = (f'<img src="{thumb.uri}" width="{thumb.width}" height="{thumb.height}" '
                   f'alt="{_e(name)}" loading="lazy">')
    else:
        headline = "File not found (moved or deleted?)" if thumb.missing else "No thumbnail"
        picture = (f'<div class="placeholder" role="img" aria-label="{_e(headline)}">'
                   f"<strong>{_e(headline)}</strong><span>{_e(thumb.problem)}</span></div>")
    role = ('<span class="badge keep">✓ Keep</span><span class="role">suggested keeper</span>' if keeper else
            f'<span class="badge copy">Copy</span><span class="similarity">similarity '
            f'<b>{float(image["similarity"]):.1f}</b></span>')
    notes = [*_kind_notes(image.get("kinds")), *_transform_notes(image.get("transform"))] if not keeper else []
    if thumb.changed:
        notes.append("changed since the report")
    notes_html = "".join(f'<li class="{"warn" if n.startswith("changed") else ""}">{_e(n)}</li>' for n in notes)
    action, planned = _planned(image, resolution)
    plan_html = f'<p class="plan" data-action="{_e(action)}">resolve: {_e(planned)}</p>' if planned else ""
    return f"""<figure class="image{' keeper' if keeper else ''}" data-keeper="{'true' if keeper else 'false'}">
<div class="thumb">{picture}</div>
<figcaption>
<div class="roleline">{role}</div>
<dl class="props"><dt>Resolution</dt><dd>{_e(image['width'])} × {_e(image['height'])}</dd>
<dt>Size</dt><dd title="{_e(image['size'])} bytes">{_e(human_size(image['size']))}</dd>
<dt>Modified</dt><dd>{_mtime(image)}</dd></dl>
{f'<ul class="notes">{notes_html}</ul>' if notes_html else ''}
{plan_html}
<p class="path" title="{_e(image['path'])}">{_e(_directory(image['path'])).replace("/", "/<wbr>")}<b>{_e(name)}</b></p>
</figcaption>
</figure>"""


def _text_group(group: dict, resolution: Resolution | None) -> str:
    rows = []
    for image in group["images"]:
        keeper = bool(image.get("keeper"))
        similarity = "✓ Keep" if keeper else f"{float(image['similarity']):.1f}"
        action, planned = _planned(image, resolution)
        plan_cell = f'<td class="plan" data-action="{_e(action)}">{_e(planned)}</td>' if resolution else ""
        rows.append(f'<tr class="{"keeper" if keeper else "copy"}" data-keeper="{"true" if keeper else "false"}">'
                    f"<td>{_e(similarity)}</td><td>{_e(image['width'])} × {_e(image['height'])}</td>"
                    f"<td>{_e(human_size(image['size']))}</td><td>{_mtime(image)}</td>{plan_cell}"
                    f'<td class="path">{_e(image["path"])}</td></tr>')
    plan_heading = "<th>resolve</th>" if resolution else ""
    return f"""<section class="group compact" id="group-{_e(group['id'])}">
{_heading(group)}
<table><thead><tr><th>Similarity</th><th>Resolution</th><th>Size</th><th>Modified</th>{plan_heading}<th>Path</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</section>"""


def _mtime(image: dict) -> str:
    try:
        seconds = float(image["mtime"])
        return (f'<time datetime="{_e(iso_time(seconds))}" title="{_e(local_time(seconds))}">'
                f"{_e(local_time(seconds, offset=False))}</time>")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def _directory(path: str) -> str:
    shown = display_path(path)
    return shown[:len(shown) - len(PurePosixPath(shown).name)]


KIND_NOTES = {"identical": "identical file", "same_pixels": "same pixels, other file"}


def _kind_notes(kinds: list[str] | None) -> list[str]:
    """Why the copy is in the group (README, "Report formats"): one note for all its kinds."""
    if not kinds:
        return []
    return [", ".join(KIND_NOTES.get(kind, kind) for kind in kinds)]


def _transform_notes(transform: dict | None) -> list[str]:
    """What the copy is, in words, from the match's transform (see README, "The evidence of a match")."""
    if not transform:
        return []
    notes = []
    if transform.get("flipped"):
        notes.append("mirrored")
    rotation = float(transform.get("rotation_degrees", 0.0))
    if abs(rotation) >= 2:
        notes.append(f"rotated {rotation:+.0f}°")
    shown_of_keeper = float(transform.get("coverage_first", 1.0))
    in_keeper = float(transform.get("coverage_second", 1.0))
    if shown_of_keeper < 0.9:
        notes.append(f"cropped: shows {shown_of_keeper:.0%} of the keeper")
    if in_keeper < 0.9:
        notes.append(f"wider: {in_keeper:.0%} of it is in the keeper")
    return notes


STYLE = """
:root { color-scheme: light dark; --bg: #f5f6f8; --card: #ffffff; --text: #1d2127; --muted: #5d6673;
  --line: #d9dde3; --keep: #1a7f37; --keep-ink: #ffffff; --copy: #57606a; --warn: #9a6700; --thumb: #eceef1; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15181c; --card: #1f2328; --text: #e6e8eb; --muted: #9aa3ad; --line: #353b42;
    --keep: #4ac26b; --keep-ink: #0d1a10; --copy: #9aa3ad; --warn: #d4a72c; --thumb: #2a2f35; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 28px 48px; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 14px; }
header { max-width: 1400px; margin: 0 auto 20px; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin: 0 0 12px; }
.fact { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.fact dt { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.fact dd { margin: 2px 0 0; font-size: 24px; font-weight: 600; }
.meta { color: var(--muted); margin: 0; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.note { background: var(--card); border-left: 4px solid var(--warn); padding: 8px 12px; margin: 10px 0 0; border-radius: 4px; }
main { max-width: 1400px; margin: 0 auto; display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.group { flex: 0 1 auto; max-width: 100%; background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 16px 16px; }
.group h2 { font-size: 16px; margin: 0 0 12px; display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
.group h2 a { color: inherit; text-decoration: none; }
.group h2 span { color: var(--muted); font-weight: normal; font-size: 13px; }
.images { display: flex; flex-wrap: wrap; gap: 14px; }
.image { width: 252px; margin: 0; border: 1px solid var(--line); border-radius: 10px; overflow: hidden; display: flex; flex-direction: column; }
.image.keeper { border: 3px solid var(--keep); }
.thumb { height: 210px; display: flex; align-items: center; justify-content: center; background: var(--thumb); padding: 5px; }
.thumb img { max-width: 100%; max-height: 200px; width: auto; height: auto; display: block; border-radius: 3px; }
.placeholder { width: 100%; height: 100%; display: flex; flex-direction: column; gap: 6px; align-items: center;
  justify-content: center; text-align: center; font-size: 13px;
  padding: 12px; border: 2px dashed var(--warn); border-radius: 6px; color: var(--warn); overflow-wrap: anywhere; }
figcaption { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 6px; }
.roleline { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.badge { font-weight: 700; font-size: 12px; padding: 2px 8px; border-radius: 999px; letter-spacing: .03em; }
.badge.keep { background: var(--keep); color: var(--keep-ink); }
.badge.copy { border: 1px solid var(--copy); color: var(--copy); }
.keeper .role { color: var(--keep); font-weight: 600; }
.similarity b { font-size: 16px; }
.props { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; margin: 0; font-size: 13px; }
.props dt { color: var(--muted); }
.props dd { margin: 0; }
.notes { margin: 0; padding: 0 0 0 16px; font-size: 12.5px; color: var(--muted); }
.notes .warn { color: var(--warn); font-weight: 600; }
.path { margin: 0; font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: var(--muted);
  overflow-wrap: anywhere; }
.path b { display: block; color: var(--text); font-weight: 600; }
.group.compact { flex-basis: 100%; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-top: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; border-top: none; }
td.path { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; overflow-wrap: anywhere; }
tr.keeper td:first-child { color: var(--keep); font-weight: 700; }
.end { max-width: 1400px; margin: 18px auto 0; }
.resolve { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 4px 14px; margin: 12px 0 0; }
.resolve h2 { font-size: 15px; margin: 8px 0 4px; }
.resolve pre { margin: 6px 0; padding: 8px 10px; background: var(--thumb); border-radius: 6px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.plan { margin: 0; font-size: 12.5px; color: var(--muted); }
.plan[data-action="quarantine"] { color: var(--warn); font-weight: 600; }
.reason { color: var(--keep); }
"""
