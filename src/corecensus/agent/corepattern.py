"""Installing the agent as the kernel's core handler, and giving the host back what it had.

``install`` writes ``|<state>/handle-core %P %i %I %s %t %h %e`` into
``/proc/sys/kernel/core_pattern`` after remembering the pattern it replaces (and
``core_pipe_limit``) in a state file; ``uninstall`` writes both back exactly. The handler chains
to the remembered pattern, so a host that used systemd-coredump keeps ``coredumpctl`` and a host
that wrote ``core`` files keeps getting them (:mod:`corecensus.agent.chain`).

``core_pipe_limit``: with 0 the kernel does not wait for a pipe handler before it reaps the
dying process, so ``/proc/<pid>`` can vanish while the handler still reads it (core(5), "Piping
core dumps to a program"; fs/coredump.c calls wait_for_dump_helpers only when the limit is
non-zero). systemd sets 16 for the same reason (sysctl.d/50-coredump.conf); so does ``install``,
when it finds 0.

``<state>/handle-core`` is a launcher (:func:`write_launcher`): ``python -I -S`` running
:mod:`corecensus.agent.corehold`, which imports only what holding the crash needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corecensus.durable import fsync_dir
from corecensus.errors import CorecensusError

__all__ = [
    "HANDLER_ARGS",
    "LAUNCHER",
    "MAX_PATTERN_BYTES",
    "PIPE_LIMIT",
    "HandlerState",
    "InstallError",
    "KernelFiles",
    "handler_pattern",
    "install",
    "load_state",
    "require_root",
    "uninstall",
    "write_launcher",
]

# What the handler needs from the kernel: global pid, thread id (namespace and global), signal,
# time, hostname, comm (core(5)). Order is the handler's positional arguments.
HANDLER_ARGS = ("%P", "%i", "%I", "%s", "%t", "%h", "%e")
# CORENAME_MAX_SIZE in fs/coredump.c: the sysctl keeps at most 127 bytes and silently cuts the
# rest, which would leave a handler command with missing arguments.
MAX_PATTERN_BYTES = 127
PIPE_LIMIT = 16
STATE_FILE = "handler.json"
LAUNCHER = "handle-core"


class InstallError(CorecensusError):
    """The handler could not be installed or uninstalled (not root, pattern too long, ...)."""


@dataclass(frozen=True, slots=True)
class KernelFiles:
    """The sysctl files, under an injectable ``/proc`` root."""

    proc_root: Path = Path("/proc")

    @property
    def core_pattern(self) -> Path:
        return self.proc_root / "sys" / "kernel" / "core_pattern"

    @property
    def core_pipe_limit(self) -> Path:
        return self.proc_root / "sys" / "kernel" / "core_pipe_limit"

    @property
    def core_uses_pid(self) -> Path:
        return self.proc_root / "sys" / "kernel" / "core_uses_pid"

    def read(self, path: Path) -> str:
        # The kernel appends one newline to the pattern when read; the pattern itself has none.
        return path.read_text(encoding="utf-8", errors="surrogateescape").removesuffix("\n")

    def write(self, path: Path, value: str) -> None:
        with path.open("w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(value)


@dataclass(frozen=True, slots=True)
class HandlerState:
    """What ``install`` replaced: restored exactly by ``uninstall``, chained to by the handler."""

    pattern: str
    previous_pattern: str
    previous_pipe_limit: str | None

    def to_json(self) -> dict[str, str | None]:
        return {
            "pattern": self.pattern,
            "previous_pattern": self.previous_pattern,
            "previous_pipe_limit": self.previous_pipe_limit,
        }


def handler_pattern(command: Sequence[str]) -> str:
    """The core_pattern line for a handler started as ``command`` (absolute executable first)."""
    if not command or not command[0].startswith("/"):
        raise InstallError("the handler command must start with an absolute path")
    for word in command:
        if not word or any(c.isspace() for c in word) or "%" in word:
            # The kernel splits the pattern at spaces and expands every %: a path with either
            # would reach the handler mangled.
            raise InstallError(f"cannot put {word!r} in core_pattern (whitespace or %)")
    pattern = "|" + " ".join([*command, *HANDLER_ARGS])
    if len(pattern.encode()) > MAX_PATTERN_BYTES:
        raise InstallError(
            f"handler command too long for core_pattern ({len(pattern.encode())} bytes, "
            f"the kernel keeps {MAX_PATTERN_BYTES}): use a shorter path"
        )
    return pattern


def load_state(state_dir: Path) -> HandlerState | None:
    """The remembered install, or None if the handler was never installed from ``state_dir``."""
    try:
        obj = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
        return HandlerState(
            str(obj["pattern"]),
            str(obj["previous_pattern"]),
            None if obj.get("previous_pipe_limit") is None else str(obj["previous_pipe_limit"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"{state_dir / STATE_FILE}: unreadable handler state ({exc})") from exc


def _write_state(state_dir: Path, state: HandlerState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(state.to_json(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(state_dir)


def require_root(geteuid: Callable[[], int], what: str) -> None:
    if geteuid() != 0:
        raise InstallError(
            f"{what} must run as root: it writes /proc/sys/kernel/core_pattern "
            f"(running as uid {geteuid()})"
        )


def install(
    command: Sequence[str],
    state_dir: Path,
    *,
    kernel: KernelFiles = KernelFiles(),
    geteuid: Callable[[], int] = os.geteuid,
) -> HandlerState:
    """Install the handler; idempotent (a second install keeps the first one's memory)."""
    require_root(geteuid, "install-handler")
    pattern = handler_pattern(command)
    current = kernel.read(kernel.core_pattern)
    known = load_state(state_dir)
    if known is not None and current == known.pattern:
        if pattern == known.pattern:
            return known
        previous = known  # re-installing a moved agent: still chain to the host's own pattern
    else:
        if current.startswith("|") and "handle-core" in current:
            raise InstallError(
                f"core_pattern already runs a corecensus handler not installed from {state_dir} "
                f"({current!r}); uninstall that one first"
            )
        limit = (
            kernel.read(kernel.core_pipe_limit).strip() if kernel.core_pipe_limit.exists() else None
        )
        previous = HandlerState(pattern, current, limit)
    state = HandlerState(pattern, previous.previous_pattern, previous.previous_pipe_limit)
    # Remember first: if writing the pattern fails half-way, uninstall still knows what to restore.
    _write_state(state_dir, state)
    if state.previous_pipe_limit == "0":
        kernel.write(kernel.core_pipe_limit, str(PIPE_LIMIT))
    kernel.write(kernel.core_pattern, pattern)
    written = kernel.read(kernel.core_pattern)
    if written != pattern:
        kernel.write(kernel.core_pattern, state.previous_pattern)
        raise InstallError(f"the kernel kept {written!r} instead of {pattern!r}; restored")
    return state


def uninstall(
    state_dir: Path,
    *,
    kernel: KernelFiles = KernelFiles(),
    geteuid: Callable[[], int] = os.geteuid,
) -> HandlerState | None:
    """Restore the remembered pattern and pipe limit; None if nothing was installed.

    If someone replaced the handler's pattern since, theirs is left alone (restoring ours would
    undo their change) and the memory is dropped.
    """
    require_root(geteuid, "uninstall-handler")
    state = load_state(state_dir)
    if state is None:
        return None
    current = kernel.read(kernel.core_pattern)
    if current == state.pattern:
        kernel.write(kernel.core_pattern, state.previous_pattern)
        if state.previous_pipe_limit is not None and kernel.core_pipe_limit.exists():
            kernel.write(kernel.core_pipe_limit, state.previous_pipe_limit)
    else:
        (state_dir / STATE_FILE).unlink()
        raise InstallError(
            f"core_pattern is now {current!r}, not the handler's; left as it is "
            f"(it was {state.previous_pattern!r} before the install)"
        )
    (state_dir / STATE_FILE).unlink()
    (state_dir / LAUNCHER).unlink(missing_ok=True)
    return state


def write_launcher(state_dir: Path, python: str, module_dir: str) -> Path:
    """Write ``<state_dir>/handle-core`` (mode 0755, atomically): the program core_pattern
    runs (:func:`corecensus.agent.corehold.launcher_text`)."""
    from corecensus.agent.corehold import launcher_text

    for word in (python, module_dir, str(state_dir)):
        if "\n" in word or "'" in word:
            raise InstallError(f"cannot write the handler launcher for the path {word!r}")
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LAUNCHER
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(launcher_text(python, module_dir, str(state_dir)), encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path
