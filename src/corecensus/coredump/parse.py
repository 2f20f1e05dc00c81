"""From a core's bytes to its facts: process, threads, registers, signal, mappings, build-ids.

No symbolization and no unwinding here (that is :mod:`corecensus.coredump.symbolize`); this is
the register pass the benchmark times, and it works for every architecture in
:mod:`corecensus.coredump.arch`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from corecensus.coredump import linkmap
from corecensus.coredump.arch import FAULT_SIGNALS, ArchInfo, arch_for, si_code_name, signal_name
from corecensus.coredump.binaries import BinaryResolver, build_id_from_image, build_id_of_file
from corecensus.coredump.elf import (
    EM_NAMES,
    ElfHeader,
    Note,
    Segment,
    read_header,
    read_notes,
    read_segments,
)
from corecensus.coredump.memory import AddressSpace
from corecensus.coredump.notes import (
    AT_EXECFN,
    AT_PLATFORM,
    AT_RANDOM,
    AT_SYSINFO_EHDR,
    NT_AUXV,
    NT_FILE,
    NT_PRPSINFO,
    NT_PRSTATUS,
    NT_SIGINFO,
    FileMapping,
    PrPsInfo,
    PrStatus,
    SigInfo,
    decode_auxv,
    decode_file_note,
    decode_prpsinfo,
    decode_prstatus,
    decode_siginfo,
)
from corecensus.coredump.source import CoreSource, FileSource
from corecensus.errors import KernelDumpError
from corecensus.model import MappedFile, Problem, ProblemKind

__all__ = ["ParsedCore", "parse_core"]

# Signals a process stopped at under gdb that make its gcore a crash (faults and abort()).
_FAULTS = frozenset({"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS", "SIGEMT"})

# Bytes of stack read around the crashing thread's stack pointer (the issue asks for >= 8 KiB
# each way; the dead frames below %rsp are where a signal-handler race leaves its traces).
STACK_BELOW = 8 << 10
STACK_ABOVE = 8 << 10
# Stack captured above the window for the unwinder (drgn) when the core is compressed.
UNWIND_STACK_ABOVE = 256 << 10
# Threads whose registers are decoded; the rest are only counted. The crashed thread is the
# first note (see ParsedCore.crashed) and the record keeps only its registers and the count, so
# nothing the record holds is lost and no problem is recorded (a JVM may well run 10,000
# threads); a core claiming a million threads costs a count, not a million register sets.
MAX_THREADS_KEPT = 4096
# Distinct mapped files kept as modules (each costs a build-id read and a place in every stored
# record); a process with more is hostile or extraordinary. Executable ones are kept first.
MAX_MODULES = 4096


@dataclass
class ParsedCore:
    """What the register pass knows about a core. The derived facts (crashed thread, signal,
    pc, sp, ...) are computed once: the anomaly rules and the stack scan ask for them dozens of
    times per core, and the notes they come from do not change after parsing."""

    src: CoreSource
    hdr: ElfHeader
    arch: ArchInfo | None
    arch_name: str
    segments: list[Segment]
    files: list[FileMapping]
    threads: list[PrStatus]
    prpsinfo: PrPsInfo | None
    siginfo: SigInfo | None
    auxv: dict[int, int]
    space: AddressSpace
    resolver: BinaryResolver
    head_digest: str
    writer: str
    errors: list[Problem] = field(default_factory=list)
    modules: list[MappedFile] = field(default_factory=list)
    notes_end: int = 0  # file offset just past the last note: the head a copy must keep
    # Threads in the core (``threads`` holds at most MAX_THREADS_KEPT of them).
    thread_count: int = 0

    @cached_property
    def crashed(self) -> PrStatus | None:
        # The kernel writes the thread that took the fatal signal first (fill_note_info puts the
        # dumping thread's NT_PRSTATUS at the head of the list).
        return self.threads[0] if self.threads else None

    @cached_property
    def signal(self) -> int | None:
        if self.siginfo is not None and self.siginfo.signo:
            return self.siginfo.signo
        t = self.crashed
        if t is None:
            return None
        return t.cursig or t.signo or None

    @cached_property
    def signal_name(self) -> str | None:
        return signal_name(self.signal, self.arch)

    @cached_property
    def si_code(self) -> int | None:
        if self.siginfo is not None:
            return self.siginfo.code
        t = self.crashed
        return t.code if t is not None and t.signo else None

    @cached_property
    def fault_address(self) -> int | None:
        if self.siginfo is None or self.signal_name not in FAULT_SIGNALS:
            return None
        return self.siginfo.addr

    @cached_property
    def si_code_name(self) -> str | None:
        return si_code_name(self.signal_name, self.si_code)

    def register(self, name: str) -> int | None:
        t = self.crashed
        return None if t is None else t.registers.get(name)

    @cached_property
    def pc(self) -> int | None:
        t = self.crashed
        return None if t is None or self.arch is None else self.arch.pc_of(t.registers)

    @cached_property
    def sp(self) -> int | None:
        return self.register(self.arch.sp) if self.arch else None

    @cached_property
    def not_a_crash(self) -> str | None:
        """Why this core is not a crash, or None when it is one.

        The kernel writes a core only for a signal whose default action dumps core, so every
        kernel (and qemu-user) core is a crash. gdb's gcore snapshots a process wherever it
        stopped: only a fault or abort it stopped at is a crash; SIGSTOP, SIGINT, a breakpoint's
        SIGTRAP or no signal at all is a snapshot of a live process.
        """
        if self.writer != "gdb-gcore" or self.signal_name in _FAULTS:
            return None
        why = f"stopped by {self.signal_name}" if self.signal_name else "with no signal pending"
        return (
            f"not a crash: gdb's gcore wrote this core while the process was {why}; "
            "crash anomalies do not apply"
        )

    def in_undumped_file(self, addr: int) -> bool:
        """Whether ``addr`` lies in a mapped file the core lists (NT_FILE, link map) but holds
        no segment for: gdb's gcore leaves unmodified file text out of the program headers, so
        nothing is known there about permissions, and nothing is wrong either."""
        return self.space.segment_at(addr) is None and self.space.file_at(addr) is not None

    @cached_property
    def stack_starts(self) -> frozenset[int]:
        """Start addresses of the mappings that are stacks by the process's layout, whatever
        their permissions (an executable stack is RWX; MIPS and old kernels make stacks
        executable): the main stack (it holds the strings the auxiliary vector points at),
        the stacks of the other threads (their stack pointers), and any writable mapping
        right above a guard mapping with no access (glibc's pthread stacks)."""
        space = self.space
        starts: set[int] = set()
        for key in (AT_EXECFN, AT_RANDOM, AT_PLATFORM):
            seg = space.segment_at(self.auxv[key]) if self.auxv.get(key) else None
            if seg is not None and seg.writable:
                starts.add(seg.vaddr)
        if self.arch is not None:
            for t in self.threads[1:]:
                sp = t.registers.get(self.arch.sp)
                seg = space.segment_at(sp) if sp is not None else None
                if seg is not None and seg.writable:
                    starts.add(seg.vaddr)
        previous = None
        for seg in self.segments:
            if (
                previous is not None
                and previous.end == seg.vaddr
                and not previous.flags & 7
                and seg.writable
                and space.file_at(seg.vaddr) is None
            ):
                starts.add(seg.vaddr)
            previous = seg
        return frozenset(starts)

    def is_stack(self, addr: int) -> bool:
        """Whether ``addr`` lies in a stack: by layout (:attr:`stack_starts`), or in a readable,
        writable, non-executable anonymous mapping (where stacks usually live)."""
        if self.space.is_stack_like(addr):
            return True
        seg = self.space.segment_at(addr)
        return seg is not None and seg.vaddr in self.stack_starts


def parse_core(src: CoreSource, resolver: BinaryResolver | None = None) -> ParsedCore:
    """Parse headers and notes; raise :class:`~corecensus.errors.CoreError` if nothing is usable."""
    resolver = resolver or BinaryResolver()
    hdr = read_header(src)
    errors: list[Problem] = []
    segments, note_segs, complete = read_segments(src, hdr)
    if not complete:
        errors.append(Problem(ProblemKind.TRUNCATED, "program headers truncated (core cut short?)"))
    notes, problems = read_notes(src, hdr, note_segs)
    errors.extend(problems)
    if any(n.name == b"VMCOREINFO" for n in notes):
        raise KernelDumpError(
            "this is a kernel crash dump (vmcore: it has a VMCOREINFO note); corecensus reads "
            "user-space core dumps only — use crash(8) or drgn for vmcores",
            src.name,
        )
    first_status = next((n for n in notes if n.type == NT_PRSTATUS and n.name == b"CORE"), None)
    arch = arch_for(
        hdr.machine, hdr.is_64, hdr.little_endian, len(first_status.desc) if first_status else 0
    )
    arch_name = arch.name if arch else EM_NAMES.get(hdr.machine, f"em{hdr.machine}")
    if arch is None:
        errors.append(
            Problem(
                ProblemKind.NO_REGISTERS,
                f"registers not decoded: unsupported architecture e_machine={hdr.machine}",
            )
        )

    threads: list[PrStatus] = []
    prpsinfo = None
    siginfo = None
    auxv: dict[int, int] = {}
    files: list[FileMapping] = []
    has_file_note = False
    thread_count = 0
    for note in notes:
        if note.name not in (b"CORE", b"LINUX"):
            continue
        if note.type == NT_PRSTATUS and note.name == b"CORE":
            thread_count += 1
            if len(threads) >= MAX_THREADS_KEPT:
                continue
            st = decode_prstatus(note, hdr, arch)
            if st is not None:
                threads.append(st)
        elif note.type == NT_PRPSINFO and prpsinfo is None:
            prpsinfo = decode_prpsinfo(note, hdr)
        elif note.type == NT_SIGINFO and siginfo is None:
            siginfo = decode_siginfo(note, hdr, arch)
        elif note.type == NT_AUXV and not auxv:
            auxv = decode_auxv(note, hdr)
        elif note.type == NT_FILE and not has_file_note:
            has_file_note = True
            files, problem = decode_file_note(note, hdr)
            if problem:
                # An NT_FILE cut to the cap keeps its first entries; one that claims more
                # than it holds keeps none, and the module list is then unknown.
                kind = ProblemKind.CAPPED if files else ProblemKind.DAMAGED
                errors.append(Problem(kind, problem))
    if not threads:
        errors.append(
            Problem(
                ProblemKind.NO_REGISTERS, "no NT_PRSTATUS note: no thread registers in this core"
            )
        )
    notes_whole = complete and not any(p.kind is ProblemKind.TRUNCATED for p in problems)
    writer = _guess_writer(notes, has_file_note, siginfo, notes_whole=notes_whole)

    space = AddressSpace(src, hdr, segments, files, resolver.read_mapping)
    notes_end = _notes_end(note_segs)
    head = src.pread(0, min(1 << 16, max(0, notes_end)))
    digest = hashlib.sha256(head).hexdigest()[:32]
    parsed = ParsedCore(
        src, hdr, arch, arch_name, segments, files, threads, prpsinfo, siginfo, auxv, space,
        resolver, digest, writer, errors, notes_end=notes_end, thread_count=thread_count,
    )  # fmt: skip
    if not isinstance(src, FileSource):  # a plain file reads at random for free
        src.prefetch(wanted_ranges(parsed))
    if not has_file_note:
        # gcore and qemu-user write no NT_FILE: find the loaded objects through the dynamic
        # linker's r_debug list instead (as gdb does for such cores).
        files = linkmap.mapped_files(
            space, auxv, segments, lambda name: resolver.local_file(name, None)
        )
        space.set_files(files)
        parsed.files = files
    parsed.modules = _modules(parsed)
    return parsed


def _notes_end(note_segs: list[Segment]) -> int:
    return max((s.offset + s.filesz for s in note_segs), default=4096)


def _guess_writer(
    notes: list[Note], has_file: bool, siginfo: SigInfo | None, *, notes_whole: bool = True
) -> str:
    names = {n.name for n in notes}
    if not has_file and siginfo is None:
        # qemu-user is told by what its cores lack; a core cut before (or inside) its notes
        # lacks the same, and once read as "written by qemu-user".
        return "qemu-user" if b"LINUX" not in names and notes_whole else "unknown"
    if any(n.name == b"CORE" and n.type == NT_PRSTATUS for n in notes) and b"GDB" in names:
        return "gdb-gcore"
    if sum(n.type == NT_SIGINFO and n.name == b"CORE" for n in notes) > 1:
        # The kernel writes one NT_SIGINFO (the dumping thread's); gdb's gcore one per thread,
        # and gdb before 8.3 wrote no GDB note (LLDB's test cores from gcore).
        return "gdb-gcore"
    return "kernel"


def wanted_ranges(p: ParsedCore) -> list[tuple[int, int]]:
    """File ranges of the core the rest of the parse will read (for one-pass streaming)."""
    out: list[tuple[int, int]] = []

    def want(addr: int, size: int) -> None:
        for seg in p.segments:
            lo, hi = max(addr, seg.vaddr), min(addr + size, seg.vaddr + seg.filesz)
            if lo < hi:
                out.append((seg.offset + lo - seg.vaddr, hi - lo))

    for f in p.files:
        if f.file_offset == 0:
            want(f.start, 4096)
    sp = p.sp
    if sp is not None:
        want(sp - STACK_BELOW - 4096, STACK_BELOW + UNWIND_STACK_ABOVE + 4096)
    pc = p.pc
    if pc is not None:
        want(pc - 64, 128)
    execfn = p.auxv.get(AT_EXECFN)
    if execfn:
        want(execfn, 4096)
    if not p.files:
        # Without NT_FILE the link map is read from anywhere; take the first page of every
        # executable-adjacent segment (ELF headers) so streaming needs no restart.
        for seg in p.segments:
            if seg.filesz and seg.readable and not seg.writable:
                want(seg.vaddr, 4096)
    return out


def _modules(p: ParsedCore) -> list[MappedFile]:
    """One entry per mapped file: base (lowest address), end, build-id from its dumped header."""
    by_path: dict[str, list[FileMapping]] = {}
    for f in p.files:
        by_path.setdefault(f.path, []).append(f)
    if len(by_path) > MAX_MODULES:
        # Executable files first (the ones frames and signatures name), then by address.
        ranked = sorted(
            by_path,
            key=lambda path: not any(p.space.is_executable(m.start) for m in by_path[path]),
        )
        p.errors.append(
            Problem(
                ProblemKind.CAPPED, f"{len(by_path)} mapped files; kept {MAX_MODULES} as modules"
            )
        )
        by_path = {path: by_path[path] for path in ranked[:MAX_MODULES]}
    out: list[MappedFile] = []
    for path, maps in by_path.items():
        maps.sort(key=lambda m: m.start)
        first = next((m for m in maps if m.file_offset == 0), maps[0])
        base = first.start - first.file_offset
        build_id = None
        # Only the core's own bytes here: a file on disk is trusted only once a build-id from
        # the core says it is the same file. A file can be mapped at offset 0 more than once
        # (an executable the kernel maps and ld.so maps again, as in elfutils' linkmap-cut
        # core): the header may be dumped in a later one only.
        for m in maps:
            if m.file_offset == 0 and build_id is None:
                build_id = build_id_from_image(p.space.read_dumped, m.start)
        if build_id is None and p.resolver.has_dirs:
            # qemu-user dumps no file-backed page, so the core holds no build-id; a file of
            # the same name in --binaries is then the best evidence there is.
            local = p.resolver.local_file(path, None)
            if local is not None:
                build_id = build_id_of_file(local)
                if build_id is not None:
                    p.errors.append(
                        Problem(
                            ProblemKind.SYMBOLS,
                            f"build-id of {path} not in the core; taken from {local} (same name)",
                        )
                    )
        p.resolver.build_ids[path] = build_id
        executable = any(p.space.is_executable(m.start) for m in maps)
        out.append(MappedFile(path, base, maps[-1].end, first.file_offset, build_id, executable))
    vdso = _vdso(p)
    if (
        vdso is not None
        and len(out) < MAX_MODULES
        and not any(m.base <= vdso.base < m.end for m in out)
    ):
        out.append(vdso)
    return out


VDSO = "[vdso]"


def _vdso(p: ParsedCore) -> MappedFile | None:
    """The vDSO as a module (``[vdso]``, as gdb, eu-stack and /proc/PID/maps call it): the
    kernel maps it at AT_SYSINFO_EHDR and dumps it whole, as it is in no file NT_FILE lists."""
    base = p.auxv.get(AT_SYSINFO_EHDR)
    seg = p.space.segment_at(base) if base else None
    if base is None or seg is None or seg.filesz == 0:
        return None
    build_id = build_id_from_image(p.space.read_dumped, base)
    return MappedFile(VDSO, base, seg.vaddr + seg.memsz, 0, build_id, seg.executable)
