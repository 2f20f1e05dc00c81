"""Frame lists (irrelevant frames, prefix frames, system modules): data files, validated on load.

Knowledge about which frames matter changes more often than code, so it lives in
``corecensus/signature/data/*.txt`` (one regular expression per line), as Mozilla's signature
generator keeps its ``siglists`` (socorro ``signature/siglists_utils.py``). A list is read with
:mod:`importlib.resources`, every line is compiled, and a bad line is a :class:`ConfigError`
naming the file and line, so a broken edit fails loudly at load instead of silently matching
nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from corecensus.errors import ConfigError

__all__ = [
    "IRRELEVANT_FRAMES",
    "PREFIX_FRAMES",
    "SYSTEM_MODULES",
    "FrameList",
    "load_frame_list",
    "parse_frame_list",
]

IRRELEVANT_FRAMES = "irrelevant_frames"
PREFIX_FRAMES = "prefix_frames"
SYSTEM_MODULES = "system_modules"


@dataclass(frozen=True, slots=True)
class FrameList:
    """A validated list of frame patterns; :meth:`matches` is ``re.match`` against any of them."""

    name: str
    origin: str
    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None

    def matches(self, frame: str) -> bool:
        return self._regex is not None and self._regex.match(frame) is not None

    def __len__(self) -> int:
        return len(self.patterns)


def parse_frame_list(name: str, text: str, origin: str) -> FrameList:
    """Parse and validate the text of a frame list; ``origin`` names it in errors."""
    patterns: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            re.compile(line)
        except re.error as exc:
            raise ConfigError(
                f"{origin}:{lineno}: invalid regular expression {line!r}: {exc}"
            ) from exc
        # Each pattern joins an alternation, so it must not be able to swallow the others
        # (a stray ')' would have failed to compile above; an empty alternative would match
        # every frame).
        if re.fullmatch(line, "") is not None:
            raise ConfigError(f"{origin}:{lineno}: pattern {line!r} matches the empty string")
        patterns.append(line)
    regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    return FrameList(name=name, origin=origin, patterns=tuple(patterns), _regex=regex)


def load_frame_list(name: str, directory: Path | None = None) -> FrameList:
    """Load the frame list ``name`` (e.g. :data:`IRRELEVANT_FRAMES`).

    With ``directory`` None the list shipped in the package is read; otherwise
    ``directory/<name>.txt`` (a site's own curated lists).
    """
    source: Traversable | Path
    if directory is None:
        source = resources.files("corecensus.signature").joinpath("data", f"{name}.txt")
    else:
        source = Path(directory) / f"{name}.txt"
    origin = str(source)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read frame list: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{origin}:{line}: not UTF-8 text") from exc
    return parse_frame_list(name, text, origin)
