"""Hand the core on to the pattern the agent replaced, as the kernel would have.

A pipe pattern (``|/usr/lib/systemd/systemd-coredump %P %u ...``) gets its program started with
the expanded arguments and the core on its stdin; a file pattern (``core``, ``/var/crash/%e.%p``)
gets the file written where the kernel would have put it: relative to the crashed process's
working directory, owned by its filesystem uid, mode 0600, ``.PID`` appended when
``core_uses_pid`` is set and the pattern has no ``%p``, nothing when ``RLIMIT_CORE`` is below a
page (binfmt_elf's ``min_coredump``), cut at that limit otherwise. Specifier expansion follows
``format_corename()`` in fs/coredump.c: values of ``%e %E %h`` have ``/`` turned into ``!``, an
empty value becomes ``!``, an unknown ``%x`` is dropped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corecensus.agent.facts import ProcessIdentity

__all__ = ["CoreSink", "CrashArgs", "FileSink", "PipeSink", "expand", "open_chain"]

_PAGE = 4096
_ESCAPED = frozenset("eEh")
# The environment the kernel gives a usermode helper (kernel/umh.c, call_usermodehelper_setup).
HELPER_ENV = {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}


@dataclass(frozen=True, slots=True)
class CrashArgs:
    """The handler's arguments (``%P %i %I %s %t %h %e``) plus what /proc adds for chaining."""

    pid: int
    tid_ns: int
    tid: int
    signal: int
    time_s: int
    hostname: str
    comm: str
    pid_ns: int | None = None
    uid: int | None = None
    gid: int | None = None
    exe: str | None = None


class CoreSink(Protocol):
    """Somewhere the core's bytes also go."""

    description: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> str | None:
        """Finish; a problem as a sentence, or None."""
        ...


def _values(args: CrashArgs, identity: ProcessIdentity) -> Mapping[str, str]:
    limit = identity.core_limit
    return {
        "%": "%",
        "p": str(args.pid_ns if args.pid_ns is not None else args.pid),
        "P": str(args.pid),
        "i": str(args.tid_ns),
        "I": str(args.tid),
        "u": "" if args.uid is None else str(args.uid),
        "g": "" if args.gid is None else str(args.gid),
        # Only dumpable processes reach a handler; 1 is SUID_DUMP_USER, what nearly all are.
        "d": "1",
        "s": str(args.signal),
        "t": str(args.time_s),
        "h": args.hostname,
        "e": args.comm,
        "E": args.exe or "",
        "c": str(limit if limit is not None else 2**64 - 1),
    }


def expand(template: str, args: CrashArgs, identity: ProcessIdentity) -> str:
    """One core_pattern word with its ``%`` specifiers expanded."""
    values = _values(args, identity)
    out: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        spec = template[i + 1 : i + 2]
        i += 2
        if spec not in values:
            continue  # a lone trailing % or an unknown specifier is dropped
        value = values[spec]
        if spec in _ESCAPED:
            value = value.replace("/", "!") or "!"
        out.append(value)
    return "".join(out)


class FileSink:
    """A core file as the kernel writes one for a plain pattern (sparse where the core is zero)."""

    def __init__(self, fd: int, limit: int | None, description: str) -> None:
        self._fd = fd
        self._limit = limit
        self._written = 0
        self.description = description

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        if self._limit is not None:
            data = data[: max(0, self._limit - self._written)]
        if not data:
            return
        if data.count(0) == len(data):
            os.lseek(self._fd, len(data), os.SEEK_CUR)  # the kernel's dump_skip leaves holes too
        else:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        self._written += len(data)

    def close(self) -> str | None:
        if self._fd < 0:
            return None
        try:
            os.ftruncate(self._fd, self._written)
        except OSError as exc:
            return f"{self.description}: {exc.strerror}"
        finally:
            os.close(self._fd)
            self._fd = -1
        return None


class PipeSink:
    """The previous pipe handler, started with its expanded arguments, the core on its stdin."""

    def __init__(self, argv: list[str]) -> None:
        self.description = " ".join(argv)
        # cwd "/" and the helper environment, as the kernel starts it; its stdin is its own pipe,
        # so it never holds the kernel's pipe open after this handler lets go.
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, cwd="/", env=HELPER_ENV, close_fds=True
        )
        self._broken = False

    def write(self, data: bytes) -> None:
        if self._broken or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._broken = True

    def close(self) -> str | None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        # Not waited for: the previous handler runs on by itself, as it would under the kernel.
        return f"{self.description}: stopped reading the core" if self._broken else None


def _open_file(
    name: str, args: CrashArgs, identity: ProcessIdentity, proc_root: Path
) -> FileSink | str:
    if identity.core_limit is not None and identity.core_limit < _PAGE:
        return (
            f"chained pattern {name!r}: RLIMIT_CORE {identity.core_limit} is below a page; no file"
        )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Relative names are relative to the crashed process's working directory.
        dfd = os.open(proc_root / str(args.pid) / "cwd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return f"chained pattern {name!r}: no working directory of pid {args.pid} ({exc.strerror})"
    try:
        # The kernel unlinks an existing file first, then creates with O_EXCL (fs/coredump.c).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
    except OSError as exc:
        return f"chained pattern {name!r}: cannot create ({exc.strerror})"
    finally:
        os.close(dfd)
    if identity.fsuid is not None and identity.fsgid is not None:
        with contextlib.suppress(OSError):  # not root (a test): the file stays the handler's
            os.fchown(fd, identity.fsuid, identity.fsgid)
    return FileSink(fd, identity.core_limit, f"core file {name}")


def open_chain(
    previous: str,
    args: CrashArgs,
    identity: ProcessIdentity,
    *,
    core_uses_pid: bool,
    proc_root: Path = Path("/proc"),
) -> tuple[CoreSink | None, str | None]:
    """The sink for the previous pattern (None for an empty pattern) and a problem, if any."""
    if not previous.strip():
        return None, None
    if previous.startswith("|"):
        words = previous[1:].split()
        if not words:
            return None, None
        argv = [expand(w, args, identity) for w in words]
        try:
            return PipeSink(argv), None
        except OSError as exc:
            return None, f"chained handler {argv[0]}: cannot start ({exc.strerror})"
    name = expand(previous, args, identity)
    if core_uses_pid and "%p" not in previous:
        name = f"{name}.{args.pid_ns if args.pid_ns is not None else args.pid}"
    sink = _open_file(name, args, identity, proc_root)
    return (None, sink) if isinstance(sink, str) else (sink, None)
