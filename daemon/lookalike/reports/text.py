"""A report for people at a terminal (`lookalike report show`), and the small formatters the
HTML page shares with it: sizes in kB/MB, times in local ISO form.

Paths are shown with `display_path`, so a name that is not valid UTF-8 prints as \\x escapes
instead of failing on the way to the terminal.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..errors import display_path


def human_size(size: int) -> str:
    """Bytes in decimal units, as file managers show them: 999 bytes, 1.2 kB, 35.0 MB."""
    if size < 1000:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def local_time(seconds: float, offset: bool = True) -> str:
    """A POSIX time in local time, ISO 8601 with a space: 2026-11-21 21:00:00 +01:00."""
    moment = datetime.fromtimestamp(seconds).astimezone()
    zone = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone[:3]}:{zone[3:5]}" if offset else "")


def iso_time(seconds: float) -> str:
    """A POSIX time in local time, strict ISO 8601: 2026-11-21T21:00:00+01:00."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def generated_seconds(document: dict) -> float | None:
    """The report's `generated` stamp (UTC, to the second) as a POSIX time; None if it is not one."""
    try:
        moment = datetime.strptime(str(document.get("generated", "")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


def generated_time(document: dict) -> str:
    """The report's `generated` stamp in local time; the stamp as it is if it cannot be read."""
    seconds = generated_seconds(document)
    return str(document.get("generated", "")) if seconds is None else local_time(seconds)


def totals(document: dict) -> dict:
    groups = document["groups"]
    return {"groups": len(groups), "images": sum(len(g["images"]) for g in groups),
            "reclaimable": sum(g["reclaimable_bytes"] for g in groups)}


def plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def counted(count: int, word: str) -> str:
    """'1 image', '3 images': a count with its noun, for messages people read."""
    return f"{count} {plural(count, word)}"


def threshold_text(document: dict) -> str:
    return f"{float(document['threshold']):g}"


def summary(document: dict, source: str, top: int = 10, arrow: str = "→") -> str:
    """Where the report is, its totals, then the first `top` groups: keeper, then each copy."""
    counts = totals(document)
    rows = [("Report", source), ("Generated", generated_time(document)),
            ("Context", display_path(document.get("context", ""))), ("Threshold", threshold_text(document)),
            ("Groups", str(counts["groups"])), ("Images in groups", str(counts["images"])),
            ("Reclaimable", f"{human_size(counts['reclaimable'])} ({counts['reclaimable']:,} bytes)")]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in rows]
    groups = document["groups"]
    if not groups:
        lines += ["", "No duplicates found."]
        return "\n".join(lines) + "\n"
    shown = groups[:top]
    heading = f"Top {len(shown)} of {len(groups)} groups" if len(shown) < len(groups) else \
        f"{'The group' if len(groups) == 1 else f'All {len(groups)} groups'}"
    lines += ["", f"{heading}, most reclaimable first (keeper, then {arrow} similarity to it and each copy):"]
    number_width = len(str(shown[-1]["id"])) + 2
    for group in shown:
        keeper, *copies = group["images"]
        why = f"; kept: {group['keeper_reason']}" if group.get("keeper_reason") else ""
        lines.append(f"{str(group['id']) + '.':<{number_width}}{display_path(keeper['path'])}  "
                     f"({_image_facts(keeper)}{why}; {human_size(group['reclaimable_bytes'])} reclaimable)")
        for image in copies:
            why = f"; {', '.join(image['kinds'])}" if image.get("kinds") else ""
            lines.append(f"{'':<{number_width}}{arrow} {image['similarity']:5.1f}  {display_path(image['path'])}  "
                         f"({_image_facts(image)}{why})")
    if len(shown) < len(groups):
        lines.append(f"... and {len(groups) - len(shown)} more (--top N shows more)")
    return "\n".join(lines) + "\n"


def _image_facts(image: dict) -> str:
    return f"{image['width']}x{image['height']}, {human_size(image['size'])}"
