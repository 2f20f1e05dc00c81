"""One core in, one :class:`~corecensus.model.CrashRecord` out: the forensics pipeline.

``inspect_core`` never raises for a bad core: what could not be read becomes a
:class:`~corecensus.model.Problem` of a kind, and the kinds decide the ``partial`` or
``unparsed`` status, so a batch never loses its other records.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from corecensus.coredump.anomalies import detect_anomalies
from corecensus.coredump.binaries import BinaryResolver
from corecensus.coredump.notes import AT_ENTRY, AT_EXECFN, PrStatus
from corecensus.coredump.parse import ParsedCore, parse_core
from corecensus.coredump.recover import recover_callers
from corecensus.coredump.source import DEFAULT_MAX_STREAM_BYTES, DEFAULT_STDIN_TIMEOUT, open_core
from corecensus.coredump.stackwindow import RawSignalFrame, RawStackWord, scan_stack
from corecensus.errors import (
    CompressionError,
    CoreError,
    CoreLimitError,
    KernelDumpError,
    NotACoreError,
)
from corecensus.model import (
    CrashRecord,
    Frame,
    FrameTrust,
    MappedFile,
    ParseStatus,
    Problem,
    ProblemKind,
    SignalFrame,
    StackWord,
    ThreadDetail,
    status_of,
)

if TYPE_CHECKING:
    from corecensus.coredump.dwfl import DwflStacks
    from corecensus.coredump.symbolize import Symbolizer

__all__ = ["inspect_core", "unparsed_core_id"]

# Threads unwound with drgn beyond the crashing one; the rest keep their registers and pc (a
# process with thousands of threads would otherwise cost seconds per core).
MAX_THREADS_UNWOUND = 256


def inspect_core(
    path: str | Path,
    *,
    head_bytes: int | None = None,
    binaries: Sequence[str | Path] = (),
    symbolize: bool = True,
    metadata: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
    stdin_timeout: float = DEFAULT_STDIN_TIMEOUT,
) -> CrashRecord:
    """Parse a core dump (plain, zstd, lz4, xz; ``-`` for stdin) into a crash record.

    ``symbolize=False`` is the fast register-and-anomaly pass (no drgn): frames are then the pc
    and the return addresses recovered from the stack, named from module+offset only.
    """
    meta = dict(metadata or {})
    name = str(path)
    try:
        src = open_core(
            path,
            head_bytes=head_bytes,
            max_stream_bytes=max_stream_bytes,
            stdin=stdin,
            stdin_timeout=stdin_timeout,
        )
    except CoreError as exc:
        return _unparsed(name, exc, meta)
    resolver = BinaryResolver([Path(b) for b in binaries])
    try:
        try:
            parsed = parse_core(src, resolver)
        except CoreError as exc:
            return _unparsed(name, exc, meta)
        return _record(parsed, name, [Path(b) for b in binaries], symbolize, meta)
    except CoreError as exc:
        # Reads past the first pass (e.g. a stream that turns corrupt) still leave a record.
        return _unparsed(name, exc, meta)
    finally:
        resolver.close()
        src.close()


def problem_kind(exc: CoreError) -> ProblemKind:
    """The kind of problem a core that could not be read at all has."""
    if isinstance(exc, NotACoreError):
        return ProblemKind.NOT_A_CORE
    if isinstance(exc, KernelDumpError):
        return ProblemKind.KERNEL_DUMP
    if isinstance(exc, CompressionError | CoreLimitError):
        return ProblemKind.CORRUPT
    return ProblemKind.UNREADABLE


def unparsed_core_id(source: str, host: str | None = None) -> str:
    """The identity of a crash whose core could not be parsed: its file (and host), not its
    bytes, so that ingesting the same file again after a fix (a permission, a worker that died
    on it) replaces the unparsed record instead of counting the crash twice (issue 10)."""
    # surrogatepass: a path with bytes that are not UTF-8 must still hash (and not raise).
    key = f"unparsed\0{host or ''}\0{source}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:32]


def _unparsed(name: str, exc: CoreError, meta: dict[str, str]) -> CrashRecord:
    problem = Problem(problem_kind(exc), str(exc))
    return CrashRecord(
        core_id=unparsed_core_id(name, meta.get("COREDUMP_HOSTNAME")),
        status=ParseStatus.UNPARSED,
        problems=(problem,),
        source=name,
        metadata=meta,
    )


def _record(
    p: ParsedCore, name: str, binaries: list[Path], symbolize: bool, meta: dict[str, str]
) -> CrashRecord:
    errors: list[Problem] = list(p.errors)
    ctx = detect_anomalies(p)
    errors.extend(Problem(ProblemKind.RULE_FAILED, n) for n in ctx.notes)
    if ctx.not_a_crash is not None:
        errors.append(Problem(ProblemKind.NOT_A_CRASH, ctx.not_a_crash))
    words, sigframes, problem = scan_stack(p)
    if problem:
        errors.append(Problem(ProblemKind.NO_STACK, problem))

    modules = p.modules
    frames: list[Frame]
    names: dict[int, str | None] = {}
    symbol_offsets: dict[int, int] = {}
    starts: dict[int, int] = {}  # code address -> start of its function, where symbols say
    returned = ctx.has("returned_to_bad_address")

    def make(address: int, trust: FrameTrust) -> Frame:
        return _frame(address, names.get(address), modules, recovered=True, trust=trust)

    unwound = False
    others: list[ThreadDetail] = []
    if symbolize and p.crashed is not None:
        from corecensus.coredump.symbolize import Symbolizer

        with Symbolizer(p, binaries) as sym:
            fallback = _LazyDwfl(p, sym)
            errors.extend(Problem(ProblemKind.SYMBOLS, e) for e in sym.errors)
            if not sym.opened:
                # No copy drgn could read (a full $TMPDIR): the register pass's frames, as
                # with --no-symbols; the reason is among the problems and the record partial.
                pc = p.pc
                frames = (
                    [_frame(pc, None, modules, trust=FrameTrust.CONTEXT)] if pc is not None else []
                )
                errors.append(Problem(ProblemKind.UNWIND_STOPPED, "not unwound: drgn has no core"))
            elif problem is None:
                stack = sym.unwind()
                pairs = stack.frames
                unwound = stack.unwound
                if not unwound:
                    # drgn cannot unwind this architecture (or this core): ask libdwfl, as
                    # eu-stack does, before giving up.
                    pairs = fallback.stacks().threads.get(p.crashed.pid, [])
                    unwound = len(pairs) > 1
                    if not unwound:
                        reason = stack.stopped_reason or "the unwinder gave no frames"
                        if fallback.stacks().error is not None:
                            reason = f"{reason}; {fallback.stacks().error}"
                        elif pairs:
                            reason = f"{reason}; libdwfl found no caller"
                        errors.append(Problem(ProblemKind.UNWIND_STOPPED, reason))
                elif stack.stopped_reason:
                    errors.append(Problem(ProblemKind.SYMBOLS, stack.stopped_reason))
                if not pairs and p.pc is not None:
                    pairs = [(p.pc, sym.symbol_name(p.pc))]  # no unwinder: the pc, named
                frames = [
                    _frame(pc, fn or _symbol_at(sym, pc, i > 0), modules,
                           trust=FrameTrust.UNWOUND if i else FrameTrust.CONTEXT)
                    for i, (pc, fn) in enumerate(pairs)
                ]  # fmt: skip
            else:
                # Without the stack there is nothing to unwind; name the pc alone.
                pc0 = p.pc
                frames = (
                    []
                    if pc0 is None
                    else [_frame(pc0, sym.symbol_name(pc0), modules, trust=FrameTrust.CONTEXT)]
                )
            for address in [*(a for _o, a, _c in words), *(f.pc for f in frames[:1])]:
                if address in names:
                    continue
                found = sym.symbol(address)
                names[address] = found[0] if found else None
                if found:
                    starts[address] = address - found[1]
            for s in sigframes:
                found = sym.symbol(s.interrupted_pc)
                if found is not None:
                    names.setdefault(s.interrupted_pc, found[0])
                    symbol_offsets[s.interrupted_pc] = found[1]
            frames = recover_callers(
                p, frames, words, names, starts, make, force=not sym.opened, returned=returned
            )
            others = _other_threads(p, modules, sym if sym.opened else None, fallback)
            if sym.opened:
                frames, others = fallback.fill_names(frames, others)
    else:
        pc = p.pc
        frames = [_frame(pc, None, modules, trust=FrameTrust.CONTEXT)] if pc is not None else []
        frames = recover_callers(
            p, frames, words, names, starts, make, force=True, returned=returned
        )
        others = _other_threads(p, modules, None)

    stack_window = _stack_window(words, names, modules)
    signal_frames = tuple(_signal_frame(s, names, symbol_offsets, modules) for s in sigframes)
    if (p.crashed is None or p.arch is None) and not any(
        e.kind is ProblemKind.NO_REGISTERS for e in errors
    ):
        errors.append(Problem(ProblemKind.NO_REGISTERS, "no thread in this core"))
    if p.space.truncated:
        errors.append(
            Problem(
                ProblemKind.TRUNCATED,
                "core truncated: some memory segments end past the end of the file",
            )
        )
    errors.extend(Problem(ProblemKind.DAMAGED, e) for e in p.space.problems)
    p.src.check_integrity(max((s.offset + s.filesz for s in p.segments), default=0))
    if p.src.damage is not None:
        errors.append(Problem(ProblemKind.DAMAGED, p.src.damage))
    t = p.crashed
    exe = meta.get("COREDUMP_EXE") or executable_path(p)
    return CrashRecord(
        core_id=p.head_digest,
        status=status_of(errors),
        problems=tuple(dict.fromkeys(errors)),
        source=name,
        writer=p.writer,
        arch=p.arch_name,
        pid=(p.prpsinfo.pid if p.prpsinfo and p.prpsinfo.pid else (t.pid if t else None)),
        comm=p.prpsinfo.fname if p.prpsinfo else meta.get("COREDUMP_COMM"),
        exe=exe,
        cmdline=p.prpsinfo.psargs if p.prpsinfo else meta.get("COREDUMP_CMDLINE"),
        signal=p.signal,
        signal_name=p.signal_name,
        si_code=p.si_code,
        si_code_name=p.si_code_name,
        fault_address=p.fault_address,
        effective_address=ctx.effective_address,
        instruction=ctx.facts.get("instruction"),
        crashed_tid=t.pid if t else None,
        threads=p.thread_count,
        registers=dict(t.registers) if t else {},
        modules=tuple(modules),
        frames=tuple(frames),
        anomalies=tuple(ctx.found),
        stack_window=stack_window,
        signal_frames=signal_frames,
        threads_detail=(
            ThreadDetail(t.pid, p.signal, dict(t.registers), tuple(frames)),
            *others,
        )
        if t
        else (),
        cpu=_int_or_none(meta.get("CORECENSUS_CPU")),
        metadata=meta,
    )


def _thread_signal(t: PrStatus) -> int | None:
    return t.cursig or t.signo or None


class _LazyDwfl:
    """libdwfl over the file drgn reads, asked only when drgn falls short (ctypes and libdw are
    loaded for those cores alone): every thread's frames where drgn cannot unwind, and names
    for frames drgn could not name."""

    def __init__(self, p: ParsedCore, sym: Symbolizer) -> None:
        self.p, self.sym = p, sym
        self._stacks: DwflStacks | None = None

    def _run(self, name_pcs: Sequence[tuple[int, bool]], unwind: bool) -> DwflStacks:
        from corecensus.coredump.dwfl import DwflStacks, dwfl_stacks

        p = self.p
        if self.sym.path is None:
            return DwflStacks(error="libdwfl: no core file to read")
        build_ids = {m.path: m.build_id for m in p.modules}

        def find_local(name: str) -> str | None:
            found = p.resolver.local_file(name, build_ids.get(name))
            return str(found) if found is not None else None

        exe = executable_path(p)
        return dwfl_stacks(
            self.sym.path, find_local(exe) if exe else None, find_local, name_pcs, unwind
        )

    def stacks(self) -> DwflStacks:
        if self._stacks is None:
            self._stacks = self._run((), unwind=True)
        return self._stacks

    def fill_names(
        self, frames: list[Frame], others: list[ThreadDetail]
    ) -> tuple[list[Frame], list[ThreadDetail]]:
        """Frames in a module that drgn left unnamed, named by libdwfl where it can."""
        every = [*frames, *(f for t in others for f in t.frames)]
        wanted = {(f.pc, f.trust is not FrameTrust.CONTEXT) for f in every if _unnamed(f)}
        if not wanted:
            return frames, others
        names = dict(self._run(sorted(wanted), unwind=False).names)
        if not names:
            return frames, others

        def fix(f: Frame) -> Frame:
            return (
                dataclasses.replace(f, function=names[f.pc]) if _unnamed(f) and f.pc in names else f
            )

        return [fix(f) for f in frames], [
            dataclasses.replace(t, frames=tuple(fix(f) for f in t.frames)) for t in others
        ]


def _symbol_at(sym: Symbolizer, pc: int, is_return: bool) -> str | None:
    """drgn's symbol for a frame an unwinder left unnamed (libdwfl names from the symbol table
    only; drgn also knows DWARF): a caller's return address is looked up at the call."""
    if is_return and pc < _LOWEST_CODE:
        return None
    return sym.symbol_name(pc - 1 if is_return else pc)


# No code is mapped in the first page (vm.mmap_min_addr is at least 4096).
_LOWEST_CODE = 4096


def _unnamed(f: Frame) -> bool:
    # A frame in no known module is asked too: a core with an unnamed or no file list still
    # tells libdwfl where the executable is (its program headers in memory, AT_PHDR).
    return f.function is None and f.pc >= _LOWEST_CODE


def _other_threads(
    p: ParsedCore,
    modules: Sequence[MappedFile],
    sym: Symbolizer | None,
    fallback: _LazyDwfl | None = None,
) -> list[ThreadDetail]:
    """The threads after the crashing one, in the core's order, each unwound by drgn when
    symbolizing, else by libdwfl where drgn could not (``fallback``), else its pc alone; past
    :data:`MAX_THREADS_UNWOUND`, registers and pc only."""
    out: list[ThreadDetail] = []
    for i, t in enumerate(p.threads[1:]):
        frames: list[Frame] = []
        if sym is not None and i < MAX_THREADS_UNWOUND:
            pairs = sym.unwind(t.pid).frames
            if not pairs and fallback is not None:
                pairs = fallback.stacks().threads.get(t.pid, [])
            frames = [
                _frame(pc, fn or _symbol_at(sym, pc, j > 0), modules,
                       trust=FrameTrust.UNWOUND if j else FrameTrust.CONTEXT)
                for j, (pc, fn) in enumerate(pairs)
            ]  # fmt: skip
        pc = p.arch.pc_of(t.registers) if p.arch is not None else None
        if not frames and pc is not None:
            name = sym.symbol_name(pc) if sym is not None else None
            frames = [_frame(pc, name, modules, trust=FrameTrust.CONTEXT)]
        out.append(ThreadDetail(t.pid, _thread_signal(t), dict(t.registers), tuple(frames)))
    return out


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def executable_path(p: ParsedCore) -> str | None:
    """The main executable: the mapped file holding the entry point (AT_ENTRY), which is an
    absolute path; else AT_EXECFN as the program was started (may be relative); else the
    first mapped file."""
    entry = p.auxv.get(AT_ENTRY)
    if entry:
        f = p.space.file_at(entry)
        if f is not None:
            return f.path
    execfn = p.auxv.get(AT_EXECFN)
    if execfn:
        s = p.space.read_cstring(execfn)
        if s:
            return s
    return p.files[0].path if p.files else None


def _find_module(addr: int, modules: Sequence[MappedFile]) -> MappedFile | None:
    for m in modules:
        if m.base <= addr < m.end:
            return m
    return None


def _stack_window(
    words: list[RawStackWord], names: dict[int, str | None], modules: Sequence[MappedFile]
) -> tuple[StackWord, ...]:
    """The window's words with their modules; each distinct address is located once (a deep
    recursion repeats the same return address on every frame)."""
    where: dict[int, tuple[str | None, str | None, int | None]] = {}
    for address in dict.fromkeys(address for _offset, address, _after in words):
        m = _find_module(address, modules)
        name = names.get(address)
        where[address] = (name, m.path, address - m.base) if m else (name, None, None)
    return tuple(
        StackWord(offset, address, *where[address], after_call)
        for offset, address, after_call in words
    )


def _signal_frame(
    s: RawSignalFrame,
    names: dict[int, str | None],
    symbol_offsets: dict[int, int],
    modules: Sequence[MappedFile],
) -> SignalFrame:
    pc = s.interrupted_pc
    m = _find_module(pc, modules)
    return SignalFrame(
        offset=s.offset,
        interrupted_pc=pc,
        function=names.get(pc),
        interrupted_sp=s.interrupted_sp,
        signal=s.signal,
        function_offset=symbol_offsets.get(pc),
        module=m.path if m else None,
        module_offset=pc - m.base if m else None,
    )


def _frame(
    pc: int,
    function: str | None,
    modules: Sequence[MappedFile],
    recovered: bool = False,
    trust: FrameTrust | None = None,
) -> Frame:
    m = _find_module(pc, modules)
    return Frame(
        pc=pc,
        function=function,
        module=m.path if m else None,
        offset=pc - m.base if m else None,
        build_id=m.build_id if m else None,
        recovered=recovered,
        trust=trust,
    )
