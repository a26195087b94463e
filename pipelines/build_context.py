"""The build context of the images: the repository's tracked files that `.dockerignore`
lets in, as a gzipped tar that is the same bytes for the same files."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

from pipelines.images import ImageError

REPO_ROOT = Path(__file__).resolve().parent.parent


def git(root: Path, *args: str) -> str:
    """What `git ARGS` prints in `root`; nothing when git cannot answer there."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def source_files(root: Path = REPO_ROOT) -> list[str]:
    """The repository's tracked files that `.dockerignore` lets into the build context."""
    listed = git(root, "ls-files", "-z", "--cached")
    if not listed:
        raise ImageError(f"{root} is not a git checkout: `build` sends the tracked files")
    ignore = _dockerignore(root)
    return sorted(
        path
        for path in listed.split("\0")
        if path and (root / path).is_file() and not _ignored(path, ignore)
    )


def _dockerignore(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    path = root / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    rules = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((keep, _glob(pattern)))
    return rules


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**` for any number of folders)."""
    pieces = pattern.split("/")
    parts = []
    for i, piece in enumerate(pieces):
        if piece == "**":
            parts.append("(?:.*/)?" if i < len(pieces) - 1 else ".*")
            continue
        # `*` and `?` stay within one path segment.
        regex = re.sub(r"\[(.*?)\]|(\*)|(\?)|([^[*?]+)", _segment, piece)
        parts.append(regex + "/")
    regex = "".join(parts).removesuffix("/")
    # A pattern that names a folder excludes everything in it.
    return re.compile(f"(?s:{regex})(?:/.*)?")


def _segment(match: re.Match[str]) -> str:
    chars, star, question, literal = match.groups()
    if chars is not None:
        return f"[{'^' + chars[1:] if chars.startswith('^') else chars}]"
    if star:
        return "[^/]*"
    if question:
        return "[^/]"
    return re.escape(literal)


def _ignored(path: str, rules: Iterable[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for keep, pattern in rules:  # the last matching rule wins, as in Docker
        if pattern.fullmatch(path):
            ignored = not keep
    return ignored


def source_tarball(root: Path = REPO_ROOT) -> bytes:
    """The build context as a gzipped tar, byte-identical for identical files (no times,
    owners or modes of this machine), so an unchanged checkout uploads the same object."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in source_files(root):
            data = (root / path).read_bytes()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if (root / path).stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
