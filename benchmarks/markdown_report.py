"""Write one benchmark's section into docs/benchmarks.md, keeping the other benchmarks' sections."""

from __future__ import annotations

import os
from pathlib import Path

HEADER = "# Benchmarks\n\nMeasured numbers; each section names its machine, date and command. Regenerate a section by\nrerunning its command.\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section whose `## ` title matches `section`'s first line, or append it; atomic write."""
    title = section.splitlines()[0]
    assert title.startswith("## "), "a section starts with a '## ' title"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start = text.find(title + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
