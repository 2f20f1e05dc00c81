"""What runs while the kernel holds a crashing process: the lean half of the core handler.

The kernel starts ``core_pattern``'s handler with the core on its stdin and the dying process
waiting on it: the process is released when the handler has drained the pipe (and, with
``core_pipe_limit`` set, let go of it). Every millisecond before that is the crash's, so this
module imports only ``os``, ``sys``, ``select`` and ``time`` (and ``tomllib``/``json`` when a
config file or a chained pattern is there to read, ``subprocess`` when chaining to a pipe
handler). It:

1. reads ``/proc/<pid>/task/<tid>/stat`` (field 39: the CPU the thread last ran on),
   ``/proc/<pid>/status``, ``limits``, ``cmdline`` and the ``exe`` link -- what vanishes with
   the process;
2. drains stdin into a raw spill file (sparse, cut at ``core_max_bytes``) and into the pattern
   the agent replaced (:func:`open_chain`);
3. lets go of the pipe at EOF or when ``handler_budget_s`` runs out.

Everything else -- compressing the core, the CPU's model and microcode, parsing the head,
spooling -- is :func:`corecensus.agent.handler.finish`, after the release.

``install-handler`` writes a launcher (:func:`launcher_text`) that runs ``python -I -S`` and
imports this file as a top-level module, so the ``corecensus`` package (whose ``__init__`` loads
the record types) is not imported before the release. After it, :func:`main` turns ``site`` on
and imports the rest. ``tests/agent/test_agent_handler.py`` holds this module to those imports.
"""

from __future__ import annotations

import os
import select
import sys
import time

# Not ``from typing import TYPE_CHECKING``: importing typing alone costs the crash milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DISABLE_FILE",
    "DEFAULT_STATE_DIR",
    "DISABLE_ENV",
    "ENV_PREFIX",
    "CrashArgs",
    "FileSink",
    "Held",
    "HoldSettings",
    "PipeSink",
    "ProcessIdentity",
    "capture",
    "disabled_reason",
    "expand",
    "launcher_text",
    "main",
    "open_chain",
    "parse_identity",
    "read_settings",
    "stat_processor",
    "status_fields",
]

DEFAULT_STATE_DIR = "/var/lib/corecensus"
DEFAULT_CONFIG_FILE = "/etc/corecensus/agent.toml"
DEFAULT_DISABLE_FILE = "/etc/corecensus/disabled"
DISABLE_ENV = "CORECENSUS_DISABLED"
ENV_PREFIX = "CORECENSUS_AGENT_"
DEFAULT_CORE_MAX_BYTES = 2 << 30  # per core, uncompressed; the rest is not kept
DEFAULT_HANDLER_BUDGET_S = 60.0  # longest the dying process is held
STATE_FILE = "handler.json"
# Values that do not disable: an operator who writes CORECENSUS_DISABLED=0 means "not disabled".
_OFF_VALUES = frozenset({"", "0", "false", "no", "off"})
# The environment the kernel gives a usermode helper (kernel/umh.c, call_usermodehelper_setup).
HELPER_ENV = {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}
_PAGE = 4096
_ESCAPED = frozenset("eEh")
_CHUNK = 1 << 20
# /proc/<pid>/stat: field 39 is "processor", the CPU the task last ran on (proc(5)). Fields are
# counted from 1; the first two are pid and "(comm)", and comm may hold spaces and parentheses,
# so counting starts after the last ')', where field 3 begins.
_STAT_PROCESSOR_FIELD = 39
_FIRST_FIELD_AFTER_COMM = 3


class CrashArgs:
    """The handler's arguments (``%P %i %I %s %t %h %e``) plus what /proc adds for chaining."""

    __slots__ = (
        "comm",
        "exe",
        "gid",
        "hostname",
        "pid",
        "pid_ns",
        "signal",
        "tid",
        "tid_ns",
        "time_s",
        "uid",
    )

    def __init__(
        self,
        pid: int,
        tid_ns: int,
        tid: int,
        signal: int,
        time_s: int,
        hostname: str,
        comm: str,
        pid_ns: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        exe: str | None = None,
    ) -> None:
        self.pid, self.tid_ns, self.tid, self.signal = pid, tid_ns, tid, signal
        self.time_s, self.hostname, self.comm = time_s, hostname, comm
        self.pid_ns, self.uid, self.gid, self.exe = pid_ns, uid, gid, exe

    def __repr__(self) -> str:
        return f"CrashArgs({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


class ProcessIdentity:
    """Who the crashed process was (from ``/proc/<pid>/status``): filesystem uid and gid (whose
    files a core would belong to) and its soft core-size limit in bytes (None: unlimited)."""

    __slots__ = ("core_limit", "fsgid", "fsuid", "gid", "pid_ns", "uid")

    def __init__(
        self,
        fsuid: int | None = None,
        fsgid: int | None = None,
        core_limit: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        pid_ns: int | None = None,
    ) -> None:
        self.fsuid, self.fsgid, self.core_limit = fsuid, fsgid, core_limit
        self.uid, self.gid, self.pid_ns = uid, gid, pid_ns

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProcessIdentity) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self) -> str:
        return f"ProcessIdentity({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


class HoldSettings:
    """The four settings the hold needs (the rest are read after the release)."""

    __slots__ = ("core_dir", "core_max_bytes", "handler_budget_s", "state_dir")

    def __init__(
        self,
        state_dir: str = DEFAULT_STATE_DIR,
        core_dir: str | None = None,
        core_max_bytes: int = DEFAULT_CORE_MAX_BYTES,
        handler_budget_s: float = DEFAULT_HANDLER_BUDGET_S,
    ) -> None:
        self.state_dir = os.fspath(state_dir)
        self.core_dir = os.fspath(core_dir) if core_dir else os.path.join(self.state_dir, "cores")
        self.core_max_bytes = core_max_bytes
        self.handler_budget_s = handler_budget_s

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> HoldSettings:
        """From settings as read (TOML or environment strings); a bad value keeps its default
        here -- the full check after the release reports it."""
        out = cls(str(values.get("state_dir") or DEFAULT_STATE_DIR), _str(values.get("core_dir")))
        try:
            cap = int(str(values.get("core_max_bytes", DEFAULT_CORE_MAX_BYTES)))
            out.core_max_bytes = cap if cap > 0 else DEFAULT_CORE_MAX_BYTES
        except ValueError:
            pass
        try:
            budget = float(str(values.get("handler_budget_s", DEFAULT_HANDLER_BUDGET_S)))
            out.handler_budget_s = budget if budget > 0 else DEFAULT_HANDLER_BUDGET_S
        except ValueError:
            pass
        return out


def _str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


class Held:
    """What the hold captured: the raw /proc texts, where the core went, how long it took.

    ``spill`` is the raw core file (None when it could not be created); ``kept`` of ``seen``
    bytes are in it. ``notes`` are about the host's own core handling (the chain) and the
    settings, ``problems`` (kind, detail) about this crash."""

    __slots__ = (
        "args",
        "boot_id",
        "cmdline",
        "disabled",
        "exe",
        "held_s",
        "identity",
        "kept",
        "notes",
        "problems",
        "seen",
        "spill",
        "stat",
        "status",
        "timed_out",
    )

    def __init__(self, args: CrashArgs) -> None:
        self.args = args
        self.stat: str | None = None
        self.status: str | None = None
        self.cmdline: str | None = None
        self.exe: str | None = None
        self.boot_id: str | None = None
        self.identity = ProcessIdentity()
        self.disabled: str | None = None
        self.spill: str | None = None
        self.kept = 0
        self.seen = 0
        self.timed_out = False
        self.held_s = 0.0
        self.notes: list[str] = []
        self.problems: list[tuple[str, str]] = []


# -- /proc ------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str], limit: int = 1 << 20) -> str | None:
    """A /proc or /sys file as text (at most ``limit`` bytes), None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < limit:
            data = os.read(fd, min(65536, limit - size))
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_processor(stat: str) -> int | None:
    """Field 39 of a ``/proc/<pid>/stat`` line, or None if the line is malformed."""
    _, paren, rest = stat.rpartition(")")
    if not paren:
        return None
    fields = rest.split()
    index = _STAT_PROCESSOR_FIELD - _FIRST_FIELD_AFTER_COMM
    if len(fields) <= index:
        return None
    try:
        return int(fields[index])
    except ValueError:
        return None


def status_fields(text: str) -> dict[str, str]:
    """``/proc/<pid>/status`` as a mapping of its ``Key:\tvalue`` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_identity(status_text: str | None, limits_text: str | None) -> ProcessIdentity:
    """Filesystem uid/gid, real uid/gid, pid in its namespace and the soft core limit."""
    status = status_fields(status_text or "")

    def ids(key: str, index: int) -> int | None:
        # "Uid:	real	effective	saved	filesystem" (proc(5)); files are created as fsuid,
        # core_pattern's %u is the real uid. NSpid's last entry is the pid in its own namespace.
        parts = status.get(key, "").split()
        if not parts or not -len(parts) <= index < len(parts):
            return None
        return int(parts[index]) if parts[index].isdigit() else None

    core_limit: int | None = None
    for line in (limits_text or "").splitlines():
        if line.startswith("Max core file size"):
            soft = line[len("Max core file size") :].split()[0]
            core_limit = None if soft == "unlimited" else int(soft) if soft.isdigit() else None
    return ProcessIdentity(
        fsuid=ids("Uid", 3),
        fsgid=ids("Gid", 3),
        core_limit=core_limit,
        uid=ids("Uid", 0),
        gid=ids("Gid", 0),
        pid_ns=ids("NSpid", -1),
    )


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


# -- settings and the kill switch -------------------------------------------------------------


def read_settings(
    config_file: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[dict[str, object], str, str | None]:
    """The agent's settings as given: the TOML file (``config_file``, else the default file
    when it exists; keys at top level or under ``[agent]``), then ``CORECENSUS_AGENT_<NAME>``
    variables. Returns (values, where they came from, why the file could not be read or None).
    Values are not checked here (``AgentConfig.from_mapping`` does)."""
    values: dict[str, object] = {}
    path = os.fspath(config_file) if config_file is not None else DEFAULT_CONFIG_FILE
    problem: str | None = None
    if config_file is not None or os.path.exists(path):
        import tomllib  # only when there is a file to read

        try:
            with open(path, "rb") as fh:
                table = tomllib.load(fh)
            agent = table.get("agent", table)
            values.update(agent if isinstance(agent, dict) else {})
        except OSError as exc:
            problem = f"{path}: cannot read ({exc.strerror})"
        except tomllib.TOMLDecodeError as exc:
            problem = f"{path}: not TOML ({exc})"
    origin = path
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            values[key[len(ENV_PREFIX) :].lower()] = value
            origin = f"{path} + environment"
    return values, origin, problem


def disabled_reason(
    env: Mapping[str, str], disable_file: str | os.PathLike[str] = DEFAULT_DISABLE_FILE
) -> str | None:
    """Why the agent is disabled (the kill switch of :mod:`corecensus.agent.killswitch`), or
    None when it may work."""
    value = env.get(DISABLE_ENV)
    if value is not None and value.strip().lower() not in _OFF_VALUES:
        return f"{DISABLE_ENV}={value}"
    try:
        os.stat(disable_file)
        return f"{os.fspath(disable_file)} exists"
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:  # an unreadable /etc/corecensus: fail safe, do nothing
        return f"{os.fspath(disable_file)} cannot be checked ({exc.strerror})"


def previous_pattern(state_dir: str) -> tuple[str | None, str | None]:
    """The pattern ``install`` replaced (None: not installed from ``state_dir``), and a problem
    reading it."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path}: unreadable handler state ({exc.strerror})"
    import json  # only on a host where the handler was installed

    try:
        obj = json.loads(raw)
        return str(obj["previous_pattern"]), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{path}: unreadable handler state ({exc})"


# -- the chain: the pattern the agent replaced ------------------------------------------------


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
    """One core_pattern word with its ``%`` specifiers expanded, as ``format_corename()`` in
    fs/coredump.c: values of ``%e %E %h`` have ``/`` turned into ``!``, an empty value becomes
    ``!``, an unknown ``%x`` is dropped."""
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


def _write_sparse(fd: int, data: bytes) -> None:
    if data.count(0) == len(data):
        os.lseek(fd, len(data), os.SEEK_CUR)  # the kernel's dump_skip leaves holes too
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
        _write_sparse(self._fd, data)
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
        import subprocess  # only when chaining to a pipe handler (systemd-coredump)

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
        except OSError:
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
    name: str, args: CrashArgs, identity: ProcessIdentity, proc_root: str
) -> FileSink | str:
    if identity.core_limit is not None and identity.core_limit < _PAGE:
        return (
            f"chained pattern {name!r}: RLIMIT_CORE {identity.core_limit} is below a page; no file"
        )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Relative names are relative to the crashed process's working directory.
        dfd = os.open(os.path.join(proc_root, str(args.pid), "cwd"), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return f"chained pattern {name!r}: no working directory of pid {args.pid} ({exc.strerror})"
    try:
        # The kernel unlinks an existing file first, then creates with O_EXCL (fs/coredump.c).
        try:  # noqa: SIM105 (contextlib's import costs the crash more than these lines)
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
    except OSError as exc:
        return f"chained pattern {name!r}: cannot create ({exc.strerror})"
    finally:
        os.close(dfd)
    if identity.fsuid is not None and identity.fsgid is not None:
        try:  # noqa: SIM105 (no contextlib: see above)
            os.fchown(fd, identity.fsuid, identity.fsgid)
        except OSError:  # not root (a test): the file stays the handler's
            pass
    return FileSink(fd, identity.core_limit, f"core file {name}")


def open_chain(
    previous: str,
    args: CrashArgs,
    identity: ProcessIdentity,
    *,
    core_uses_pid: bool,
    proc_root: str | os.PathLike[str] = "/proc",
) -> tuple[FileSink | PipeSink | None, str | None]:
    """The sink for the previous pattern (None for an empty pattern) and a problem, if any.

    A pipe pattern gets its program started with the expanded arguments and the core on its
    stdin; a file pattern gets the file written where the kernel would have put it: relative to
    the crashed process's working directory, owned by its filesystem uid, mode 0600, ``.PID``
    appended when ``core_uses_pid`` is set and the pattern has no ``%p``, nothing when
    ``RLIMIT_CORE`` is below a page (binfmt_elf's ``min_coredump``), cut at that limit otherwise.
    """
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
    sink = _open_file(name, args, identity, os.fspath(proc_root))
    return (None, sink) if isinstance(sink, str) else (sink, None)


# -- the hold ---------------------------------------------------------------------------------


class _Spill:
    """The raw core, sparse, keeping at most ``max_bytes`` (the rest is counted, not kept).
    Owner-only: a core holds the process's memory (DESIGN.md, "Privacy")."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.max = max_bytes
        self.kept = 0
        self.seen = 0

    @property
    def full(self) -> bool:
        return self.kept >= self.max

    def write(self, data: bytes) -> None:
        self.seen += len(data)
        room = self.max - self.kept
        if room <= 0:
            return
        part = data[:room]
        _write_sparse(self.fd, part)
        self.kept += len(part)

    def close(self) -> None:
        try:
            os.ftruncate(self.fd, self.kept)
        finally:
            os.close(self.fd)


def _stream(
    fd: int,
    sinks: Sequence[FileSink | PipeSink],
    spill: _Spill | None,
    deadline: float,
    clock: Callable[[], float],
) -> tuple[int, bool]:
    """Copy ``fd`` to the sinks until EOF or the deadline; (bytes read, timed out)."""
    total = 0
    while True:
        if spill is not None and spill.full and not sinks:
            return total, False  # nothing more to keep: let the process go now
        remaining = deadline - clock()
        if remaining <= 0:
            return total, True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return total, True
        data = os.read(fd, _CHUNK)
        if not data:
            return total, False
        total += len(data)
        if spill is not None:
            spill.write(data)
        for sink in sinks:
            sink.write(data)


def _release(fd: int) -> None:
    """Let go of the kernel's pipe (the dying process is then reaped), keeping ``fd`` valid."""
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def capture(
    args: CrashArgs,
    stdin_fd: int,
    settings: HoldSettings,
    *,
    env: Mapping[str, str],
    proc_root: str | os.PathLike[str] = "/proc",
    disable_file: str | os.PathLike[str] = DEFAULT_DISABLE_FILE,
    clock: Callable[[], float] = time.monotonic,
) -> Held:
    """Read what vanishes with the process, drain the core, release the process; never raises
    an OSError (a failure is a problem in the result)."""
    start = clock()
    deadline = start + settings.handler_budget_s
    proc = os.fspath(proc_root)
    base = os.path.join(proc, str(args.pid))
    out = Held(args)
    # 1. What only exists while the process does, first.
    if args.tid != args.pid:
        out.stat = read_text(os.path.join(base, "task", str(args.tid), "stat"))
    if out.stat is None:
        out.stat = read_text(os.path.join(base, "stat"))
    out.status = read_text(os.path.join(base, "status"))
    out.identity = identity = parse_identity(out.status, read_text(os.path.join(base, "limits")))
    out.exe = _readlink(os.path.join(base, "exe"))
    out.cmdline = read_text(os.path.join(base, "cmdline"), limit=64 << 10)
    boot = read_text(os.path.join(proc, "sys", "kernel", "random", "boot_id"))
    out.boot_id = boot.strip().replace("-", "") if boot and boot.strip() else None
    chain_args = CrashArgs(
        args.pid, args.tid_ns, args.tid, args.signal, args.time_s, args.hostname, args.comm,
        pid_ns=identity.pid_ns, uid=identity.uid, gid=identity.gid, exe=out.exe,
    )  # fmt: skip
    # 2. The host's own core handling goes on whatever the agent does.
    sinks: list[FileSink | PipeSink] = []
    previous, problem = previous_pattern(settings.state_dir)
    if problem:
        out.notes.append(problem)
    if previous is not None:
        uses_pid = read_text(os.path.join(proc, "sys", "kernel", "core_uses_pid"))
        sink, problem = open_chain(
            previous,
            chain_args,
            identity,
            core_uses_pid=(uses_pid or "").strip() not in ("", "0"),
            proc_root=proc,
        )
        if sink is not None:
            sinks.append(sink)
        if problem:
            out.notes.append(problem)
    out.disabled = disabled_reason(env, disable_file)
    spill: _Spill | None = None
    if out.disabled is None:
        try:
            os.makedirs(settings.core_dir, mode=0o700, exist_ok=True)
            spill = _Spill(
                os.path.join(settings.core_dir, f".incoming.{args.pid}.{args.time_s}.raw"),
                settings.core_max_bytes,
            )
        except OSError as exc:
            out.problems.append(
                ("unreadable", f"cannot store the core under {settings.core_dir}: {exc.strerror}")
            )
    # 3. Drain, then let go.
    try:
        out.seen, out.timed_out = _stream(stdin_fd, sinks, spill, deadline, clock)
    except OSError as exc:
        out.problems.append(
            ("truncated", f"reading the core from the kernel failed: {exc.strerror}")
        )
    finally:
        for s in sinks:
            problem = s.close()
            if problem:
                out.notes.append(problem)
        _release(stdin_fd)
        out.held_s = clock() - start
    if spill is not None:
        out.kept = spill.kept
        try:
            spill.close()
            out.spill = spill.path
        except OSError as exc:
            out.problems.append(("unreadable", f"cannot store the core: {exc.strerror}"))
    return out


# -- the kernel's entry -----------------------------------------------------------------------


def launcher_text(python: str, module_dir: str, state_dir: str) -> str:
    """The handler program ``install-handler`` writes: ``python -I -S`` (no site, no
    environment, no user paths), this file imported by its directory (so the ``corecensus``
    package is not imported before the release), the state directory given."""
    return (
        f"#!{python} -IS\n"
        "# Written by `corecensus agent install-handler`: the kernel's core_pattern runs this for\n"
        "# every crash. It imports only what holding the crash needs (corehold.py, docs/agent.md).\n"
        "import sys\n"
        f"sys.path.insert(0, {module_dir!r})\n"
        "import corehold\n"
        f"raise SystemExit(corehold.main(['--state-dir', {state_dir!r}, *sys.argv[1:]]))\n"
    )


def _ensure_std_fds() -> None:
    """A usermode helper starts with only stdin open: a file opened now would become fd 1 or 2
    and receive whatever is printed. Park /dev/null there first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


# --proc-root and --sys-root are for tests (fake trees); the kernel passes neither.
_OPTIONS = {
    "--config": "config",
    "--state-dir": "state-dir",
    "-s": "state-dir",
    "--proc-root": "proc-root",
    "--sys-root": "sys-root",
}
_USAGE = (
    "usage: handle-core [--config FILE] [--state-dir DIR] PID TID_NS TID SIGNAL TIME HOST COMM"
    " [--json]"
)


def main(argv: Sequence[str] | None = None) -> int:
    """The kernel's entry (``%P %i %I %s %t %h %e``, the core on stdin). Always exits 0 once the
    arguments are read: the crash is never the handler's to fail."""
    _ensure_std_fds()
    words = list(sys.argv[1:] if argv is None else argv)
    options: dict[str, str] = {}
    positional: list[str] = []
    as_json = False
    i = 0
    while i < len(words):
        word = words[i]
        if word in _OPTIONS:
            if i + 1 >= len(words):
                print(_USAGE, file=sys.stderr)
                return 2
            options[_OPTIONS[word]] = words[i + 1]
            i += 2
            continue
        if word == "--json":
            as_json = True
        else:
            positional.append(word)
        i += 1
    try:
        pid, tid_ns, tid, signal, time_s = (int(w) for w in positional[:5])
        # Older kernels split the pattern at spaces after expanding it (the split before
        # expansion came with "coredump: split pipe command whitespace before expanding
        # template"), so a comm with spaces arrives as several words: %e is last, join them.
        hostname, comm = positional[5], " ".join(positional[6:])
    except (ValueError, IndexError):
        print(_USAGE, file=sys.stderr)
        return 2
    env = dict(os.environ)
    values, origin, problem = read_settings(options.get("config"), env)
    if "state-dir" in options:
        values["state_dir"] = options["state-dir"]
    settings = HoldSettings.from_values(values)
    proc_root = options.get("proc-root", "/proc")
    held = capture(
        CrashArgs(pid, tid_ns, tid, signal, time_s, hostname, comm),
        0,
        settings,
        env=env,
        proc_root=proc_root,
    )
    if problem:
        held.notes.append(problem)
    # The process is released. Now the rest of the agent may load.
    if sys.flags.no_site:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p) != here]
        import site

        site.main()
    from corecensus.agent.handler import finish_main

    return finish_main(
        held,
        values,
        origin,
        env=env,
        proc_root=proc_root,
        sys_root=options.get("sys-root", "/sys"),
        as_json=as_json,
    )


if __name__ == "__main__":
    raise SystemExit(main())
