"""Duplicate reports: JSON (versioned, for programs), CSV (one row per image) and HTML (one
self-contained page for people, reports/html.py).

All are written atomically (files.atomic_write): a temporary file in the target folder, fsync,
rename. A reader never sees half a report. The JSON schema is documented in README.md ("Report formats").
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from ..duplicates import Group
from ..errors import NotFoundError, ReportError
from .html import to_html

REPORT_VERSION = 1


def to_document(groups: list[Group], threshold: float, context: str) -> dict:
    return {
        "version": REPORT_VERSION,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "context": context,
        "threshold": threshold,
        "groups": [{
            "id": number,
            "reclaimable_bytes": group.reclaimable_bytes,
            "images": [{
                "path": m.image.path,
                "similarity": round(m.similarity, 1),
                "width": m.image.width,
                "height": m.image.height,
                "size": m.image.identity.size,
                "mtime": m.image.identity.mtime_ns / 1e9,
                "content_hash": m.image.content_hash.hex(),
                "keeper": m is group.members[0],
                **({"kinds": list(m.kinds)} if m.kinds else {}),
                **({"transform": m.transform} if m.transform else {}),
            } for m in group.members],
        } for number, group in enumerate(groups, 1)],
    }


CSV_COLUMNS = ("group", "path", "similarity", "keeper", "width", "height", "size", "mtime", "kinds")


def _escaped(path: str) -> str:
    """A path as UTF-8 text: an undecodable byte (held as a surrogate) becomes `\\udcXX`, the
    escape the JSON report writes, instead of the raw byte CSV readers choke on."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def to_csv(document: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in document["groups"]:
        for image in group["images"]:
            writer.writerow([group["id"], _escaped(image["path"]), image["similarity"],
                             "yes" if image["keeper"] else "no", image["width"], image["height"], image["size"],
                             f"{image['mtime']:.3f}", " ".join(image.get("kinds", []))])
    return out.getvalue()


def render(document: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(document, indent=1) + "\n"
    if fmt == "csv":
        return to_csv(document)
    if fmt == "html":
        return to_html(document)
    raise ValueError(f"unknown report format {fmt!r}")


def load(path: Path) -> dict:
    """A JSON report written by `to_document`, checked enough to be shown."""
    try:
        document = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such report") from None
    except OSError as exc:
        raise ReportError(path, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReportError(path, f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ReportError(path, "not a lookalike duplicates report")
    if document.get("version") != REPORT_VERSION:
        raise ReportError(path, f"report version {document.get('version')!r}; this lookalike reads "
                                f"version {REPORT_VERSION}")
    return document
