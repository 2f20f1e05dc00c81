"""Finding the binaries a core refers to: build-ids, ``--binaries`` directories, local files.

A core names its mapped files by path (NT_FILE) and, through the first page of each mapped ELF
that the kernel dumps, by GNU build-id. A file on this machine is used for a mapping only when its
build-id matches (a host's ``/usr/lib/libc.so.6`` is rarely the one that crashed elsewhere).
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from corecensus.coredump.elf import read_image_table
from corecensus.coredump.notes import FileMapping

__all__ = ["BinaryResolver", "build_id_from_image", "build_id_of_file"]

NT_GNU_BUILD_ID = 3
PT_NOTE = 4
# Walk at most this many files per --binaries directory (a mistaken `--binaries /` stays cheap).
MAX_INDEX_FILES = 20000
MAX_BUILD_ID_NOTE = 1 << 16

Reader = Callable[[int, int], bytes | None]


def build_id_from_image(read: Reader, base: int) -> str | None:
    """Build-id of an ELF image whose bytes at file offset ``o`` are ``read(base + o, n)``."""
    found = read_image_table(read, base)
    if found is None:
        return None
    endian, is_64, table = found
    # Only the PT_NOTE entries matter; skip the rest without decoding them.
    size, at = (56, 8) if is_64 else (32, 4)
    for pos in range(0, len(table) - size + 1, size):
        if struct.unpack_from(endian + "I", table, pos)[0] != PT_NOTE:
            continue
        offset, filesz = struct.unpack_from(
            endian + ("Q16xQ" if is_64 else "I8xI"), table, pos + at
        )
        if filesz > MAX_BUILD_ID_NOTE:
            continue
        data = read(base + offset, filesz)
        if data is None:
            continue
        bid = _scan_build_id(data, endian)
        if bid:
            return bid
    return None


def _scan_build_id(data: bytes, e: str) -> str | None:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > len(data):
            return None
        if (
            ntype == NT_GNU_BUILD_ID
            and data[name_start : name_start + namesz].rstrip(b"\0") == b"GNU"
        ):
            return data[desc_start:desc_end].hex()
        pos = (desc_end + 3) & ~3
    return None


def build_id_of_file(path: Path) -> str | None:
    """Build-id of an ELF file, remembered per (path, size, mtime): ingest asks for the same
    libc and ld.so on every core."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _build_id_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _build_id_cached(path: str, _size: int, _mtime_ns: int) -> str | None:
    try:
        with open(path, "rb") as fh:

            def read(off: int, n: int) -> bytes | None:
                fh.seek(off)
                data = fh.read(n)
                return data if len(data) == n else None

            return build_id_from_image(read, 0)
    except OSError:
        return None


@functools.lru_cache(maxsize=4096)
def _path(path: str) -> Path:
    """``Path(path)``, built once per name: every core maps the same libc and ld.so, and a Path
    costs more to make than the rest of resolving it."""
    return Path(path)


class BinaryResolver:
    """Maps (path, build-id) of a mapped file to a readable local copy, kept open per core."""

    def __init__(self, binaries: Iterable[Path] = ()) -> None:
        self._dirs = [Path(d) for d in binaries]
        self._index: dict[str, Path] | None = None
        self._fds: dict[Path, int | None] = {}
        self._by_key: dict[tuple[str, str | None], int | None] = {}
        self._resolved: dict[tuple[str, str | None], Path | None] = {}
        self.build_ids: dict[str, str | None] = {}  # mapping path -> build-id from the core

    def _build_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        seen = 0
        for d in self._dirs:
            for root, _dirs, files in os.walk(d):
                for name in files:
                    seen += 1
                    if seen > MAX_INDEX_FILES:
                        return index
                    p = Path(root) / name
                    bid = build_id_of_file(p)
                    if bid:
                        index.setdefault(bid, p)
                # debuginfod-style trees (.build-id/ab/cdef.debug) are found by the walk too.
        return index

    @property
    def has_dirs(self) -> bool:
        return bool(self._dirs)

    def by_build_id(self, build_id: str) -> Path | None:
        if self._index is None:
            self._index = self._build_index()
        return self._index.get(build_id)

    def local_file(self, path: str, build_id: str | None) -> Path | None:
        """The local copy to read for a mapped file, or None if no trustworthy copy exists.

        Resolved once per (path, build-id): stack scanning reads code of the same few files
        hundreds of times per core.
        """
        key = (path, build_id)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(path, build_id)
        return self._resolved[key]

    def _resolve(self, path: str, build_id: str | None) -> Path | None:
        if build_id:
            found = self.by_build_id(build_id)
            if found is not None:
                return found
        if build_id is None and self._dirs:
            # Prefer a same-named file from --binaries when the core gave no build-id.
            name = Path(path).name
            for d in self._dirs:
                cand = d / name
                if cand.is_file():
                    return cand
        # One stat answers "is it a regular file" and keys the build-id cache (this runs for
        # every mapped file of every core, so no Path objects until a file is accepted).
        if not os.path.isabs(path):
            return None
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if build_id is not None and _build_id_cached(path, st.st_size, st.st_mtime_ns) != build_id:
            return None
        return _path(path)

    def _open(self, p: Path) -> int | None:
        # A descriptor and pread(), not mmap: a core needs a few pages of each of a few files,
        # and mapping a 2 MiB libc (then unmapping it) costs several times the reads.
        if p not in self._fds:
            try:
                self._fds[p] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except (OSError, ValueError):
                self._fds[p] = None
        return self._fds[p]

    def read_mapping(self, mapping: FileMapping, file_offset: int, size: int) -> bytes | None:
        key = (mapping.path, self.build_ids.get(mapping.path))
        try:
            fd = self._by_key[key]
        except KeyError:
            p = self.local_file(*key)
            fd = self._by_key[key] = None if p is None else self._open(p)
        if fd is None or file_offset < 0 or size <= 0:
            return None
        try:
            data = os.pread(fd, size, file_offset)
        except (OSError, OverflowError):
            return None
        return data if len(data) == size else None

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()
        self._by_key.clear()
