"""Per-architecture facts: where NT_PRSTATUS keeps the registers, their names, signal numbers.

The register orders are each architecture's ``elf_gregset_t`` as the kernel writes it in
``elf_core_copy_regs`` (and as qemu-user mirrors it for guest cores):

- x86-64 / x32: ``struct user_regs_struct`` (arch/x86/include/asm/user_64.h)
- i386: ``struct user_regs_struct`` (arch/x86/include/asm/user_32.h)
- aarch64: ``struct user_pt_regs`` (arch/arm64/include/uapi/asm/ptrace.h)
- arm: ``struct pt_regs`` uregs[18] (arch/arm/include/uapi/asm/ptrace.h)
- ppc64/ppc: ``struct pt_regs`` (arch/powerpc/include/uapi/asm/ptrace.h), ELF_NGREG 48
- s390x: ``s390_regs`` (arch/s390/include/asm/elf.h): psw, gprs, 32-bit access regs, orig_gpr2
- riscv64: ``struct user_regs_struct`` (arch/riscv/include/uapi/asm/ptrace.h)
- s390 (31-bit): the same fields as s390x in 4-byte words (``s390_compat_regs``); the pc is the
  PSW address without its top bit, the 31-bit addressing-mode flag
- mips o32: ``elf_gregset_t`` of 45 words with r0 at EF_R0 = 6 (arch/mips/include/asm/reg.h,
  ``CONFIG_32BIT || WANT_COMPAT_REG_H``); mips n64 and n32: EF_R0 = 0 and 8-byte registers
  (n32's ``elf_prstatus`` has 4-byte longs but binfmt_elfn32.c keeps the 64-bit ``elf_gregset_t``),
  so an ELF32 MIPS core is n32 when its NT_PRSTATUS holds 45 eight-byte registers
- sparc64: ``ELF_CORE_COPY_REGS`` in arch/sparc/include/asm/elf_64.h: g0-g7, o0-o7, the l and i
  registers of the register window (copied from the stack), tstate, tpc, tnpc, y
- m68k: ``struct user_regs_struct`` (arch/m68k/include/asm/user.h) with 2-byte ``stkadj``, ``sr``,
  ``fmtvec``; m68k aligns ``long`` to 2 bytes, so ``pr_sigpend`` follows ``pr_cursig`` at 14,
  ``pr_pid`` is at 22 and ``pr_reg`` at 70 (elfutils backends/m68k_corenote.c agrees)

``pr_reg`` sits after ``struct elf_prstatus_common``: 112 bytes where ``long`` is 8 bytes, 72 where
it is 4 (x32 and MIPS n32 use the 32-bit compat layout with 64-bit registers).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = [
    "ArchInfo",
    "arch_for",
    "si_code_name",
    "signal_name",
]


@dataclass(frozen=True, slots=True)
class ArchInfo:
    name: str
    word_size: int
    reg_offset: int
    # (name, size in bytes) in pr_reg order.
    registers: tuple[tuple[str, int], ...]
    pc: str
    sp: str
    mips_signals: bool = False
    # siginfo_t stores si_code before si_errno on MIPS (__ARCH_HAS_SWAPPED_SIGINFO).
    swapped_siginfo: bool = False
    # Offset of pr_pid in NT_PRSTATUS when it is not the usual 32 (64-bit) or 24 (32-bit).
    pid_offset: int | None = None
    # Bits of the pc register that are the address (s390's 31-bit PSW keeps a mode flag on top).
    pc_mask: int = (1 << 64) - 1

    def pc_of(self, registers: dict[str, int]) -> int | None:
        """The program counter in a decoded register set, as an address."""
        value = registers.get(self.pc)
        return None if value is None else value & self.pc_mask


def _regs(names: list[str], size: int) -> tuple[tuple[str, int], ...]:
    return tuple((n, size) for n in names)


_X86_64_REGS = [
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs",
    "eflags",
    "rsp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
]
_I386_REGS = [
    "ebx",
    "ecx",
    "edx",
    "esi",
    "edi",
    "ebp",
    "eax",
    "ds",
    "es",
    "fs",
    "gs",
    "orig_eax",
    "eip",
    "cs",
    "eflags",
    "esp",
    "ss",
]
_AARCH64_REGS = [f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"]
_ARM_REGS = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "cpsr", "orig_r0"]
_PPC_REGS = [f"r{i}" for i in range(32)] + (
    [
        "nip",
        "msr",
        "orig_gpr3",
        "ctr",
        "link",
        "xer",
        "ccr",
        "softe",
        "trap",
        "dar",
        "dsisr",
        "result",
    ]
)
_RISCV_REGS = [
    "pc",
    "ra",
    "sp",
    "gp",
    "tp",
    "t0",
    "t1",
    "t2",
    "s0",
    "s1",
    "a0",
    "a1",
    "a2",
    "a3",
    "a4",
    "a5",
    "a6",
    "a7",
    "s2",
    "s3",
    "s4",
    "s5",
    "s6",
    "s7",
    "s8",
    "s9",
    "s10",
    "s11",
    "t3",
    "t4",
    "t5",
    "t6",
]
_MIPS_REGS = [
    "zero",
    "at",
    "v0",
    "v1",
    "a0",
    "a1",
    "a2",
    "a3",
    "t0",
    "t1",
    "t2",
    "t3",
    "t4",
    "t5",
    "t6",
    "t7",
    "s0",
    "s1",
    "s2",
    "s3",
    "s4",
    "s5",
    "s6",
    "s7",
    "t8",
    "t9",
    "k0",
    "k1",
    "gp",
    "sp",
    "s8",
    "ra",
    "lo",
    "hi",
    "pc",
    "badvaddr",
    "status",
    "cause",
]
_MIPS_O32_PAD = [f"pad{i}" for i in range(6)]
_SPARC64_REGS = (
    [f"g{i}" for i in range(8)]
    + [f"o{i}" for i in range(8)]
    + [f"l{i}" for i in range(8)]
    + [f"i{i}" for i in range(8)]
    + ["tstate", "tpc", "tnpc", "y"]
)
_M68K_REGS: tuple[tuple[str, int], ...] = (
    *_regs([f"d{i}" for i in range(1, 8)] + [f"a{i}" for i in range(7)] + ["d0", "usp"], 4),
    ("orig_d0", 4),
    ("stkadj", 2),
    ("sr", 2),
    ("pc", 4),
    ("fmtvec", 2),
    ("pad0", 2),
)
_S390X_REGS: tuple[tuple[str, int], ...] = (
    ("psw_mask", 8),
    ("psw_addr", 8),
    *_regs([f"r{i}" for i in range(16)], 8),
    *_regs([f"acr{i}" for i in range(16)], 4),
    ("orig_gpr2", 8),
)
_S390_REGS: tuple[tuple[str, int], ...] = (
    ("psw_mask", 4),
    ("psw_addr", 4),
    *_regs([f"r{i}" for i in range(16)], 4),
    *_regs([f"acr{i}" for i in range(16)], 4),
    ("orig_gpr2", 4),
)

EM_386, EM_68K, EM_MIPS, EM_PPC, EM_PPC64, EM_S390, EM_ARM = 3, 4, 8, 20, 21, 22, 40
EM_SPARCV9, EM_X86_64, EM_AARCH64, EM_RISCV = 43, 62, 183, 243
# pr_reg (72) + 45 eight-byte registers: an ELF32 MIPS NT_PRSTATUS at least this long is n32's.
_MIPS_N32_PRSTATUS = 72 + 45 * 8


def arch_for(
    machine: int, is_64: bool, little_endian: bool, prstatus_size: int = 0
) -> ArchInfo | None:
    """The layout for an ELF ``e_machine``/class/endianness, or None when unknown (one shared,
    immutable ArchInfo per layout: every core asks). ``prstatus_size``, the length of the first
    NT_PRSTATUS, tells MIPS n32 from o32: their cores differ in nothing else (e_flags is 0)."""
    wide = machine == EM_MIPS and not is_64 and prstatus_size >= _MIPS_N32_PRSTATUS
    return _arch_for(machine, is_64, little_endian, wide)


@functools.lru_cache(maxsize=64)
def _arch_for(machine: int, is_64: bool, little_endian: bool, wide: bool) -> ArchInfo | None:
    if machine == EM_X86_64:
        if is_64:
            return ArchInfo("x86_64", 8, 112, _regs(_X86_64_REGS, 8), "rip", "rsp")
        return ArchInfo("x32", 4, 72, _regs(_X86_64_REGS, 8), "rip", "rsp")
    if machine == EM_386:
        return ArchInfo("i386", 4, 72, _regs(_I386_REGS, 4), "eip", "esp")
    if machine == EM_AARCH64:
        return ArchInfo("aarch64", 8, 112, _regs(_AARCH64_REGS, 8), "pc", "sp")
    if machine == EM_ARM:
        return ArchInfo("arm", 4, 72, _regs(_ARM_REGS, 4), "pc", "sp")
    if machine == EM_PPC64:
        name = "ppc64le" if little_endian else "ppc64"
        return ArchInfo(name, 8, 112, _regs(_PPC_REGS, 8), "nip", "r1")
    if machine == EM_PPC:
        return ArchInfo("ppc", 4, 72, _regs(_PPC_REGS, 4), "nip", "r1")
    if machine == EM_S390 and is_64:
        return ArchInfo("s390x", 8, 112, _S390X_REGS, "psw_addr", "r15")
    if machine == EM_S390:
        return ArchInfo("s390", 4, 72, _S390_REGS, "psw_addr", "r15", pc_mask=0x7FFFFFFF)
    if machine == EM_SPARCV9 and is_64:
        return ArchInfo("sparc64", 8, 112, _regs(_SPARC64_REGS, 8), "tpc", "o6")
    if machine == EM_68K:
        return ArchInfo("m68k", 4, 70, _M68K_REGS, "pc", "usp", pid_offset=22)
    if machine == EM_RISCV:
        if is_64:
            return ArchInfo("riscv64", 8, 112, _regs(_RISCV_REGS, 8), "pc", "sp")
        return ArchInfo("riscv32", 4, 72, _regs(_RISCV_REGS, 4), "pc", "sp")
    if machine == EM_MIPS:
        # Debian's names: mips/mipsel (o32), mipsn32/mipsn32el, mips64/mips64el (n64).
        base = "mips64" if is_64 else "mipsn32" if wide else "mips"
        name = base + ("el" if little_endian else "")
        size = 8 if is_64 or wide else 4
        regs = _regs(_MIPS_REGS if size == 8 else _MIPS_O32_PAD + _MIPS_REGS, size)
        return ArchInfo(
            # cp0_epc is the pc; gdb and the manifest of tests/data/multiarch call it "pc".
            name, 8 if is_64 else 4, 112 if is_64 else 72, regs, "pc", "sp",
            mips_signals=True, swapped_siginfo=True,
        )  # fmt: skip
    return None


_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
    8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
    14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
    20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
    26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
}  # fmt: skip
# MIPS numbers several signals differently (arch/mips/include/uapi/asm/signal.h).
_MIPS_SIGNALS = {
    **{k: v for k, v in _SIGNALS.items() if k <= 9 and k != 7},
    7: "SIGEMT", 10: "SIGBUS", 11: "SIGSEGV", 12: "SIGSYS", 13: "SIGPIPE", 14: "SIGALRM",
    15: "SIGTERM", 16: "SIGUSR1", 17: "SIGUSR2", 18: "SIGCHLD", 19: "SIGPWR", 20: "SIGWINCH",
    21: "SIGURG", 22: "SIGIO", 23: "SIGSTOP", 24: "SIGTSTP", 25: "SIGCONT", 26: "SIGTTIN",
    27: "SIGTTOU", 28: "SIGVTALRM", 29: "SIGPROF", 30: "SIGXCPU", 31: "SIGXFSZ",
}  # fmt: skip


def signal_name(signo: int | None, arch: ArchInfo | None) -> str | None:
    if signo is None or signo == 0:
        return None
    table = _MIPS_SIGNALS if arch is not None and arch.mips_signals else _SIGNALS
    if signo in table:
        return table[signo]
    if 32 <= signo <= 64:
        return f"SIGRT{signo - 32}"
    return f"SIG{signo}"


# include/uapi/asm-generic/siginfo.h
_SI_CODES: dict[str, dict[int, str]] = {
    "SIGSEGV": {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR",
                5: "SEGV_ACCADI", 6: "SEGV_ADIDERR", 7: "SEGV_ADIPERR", 8: "SEGV_MTEAERR",
                9: "SEGV_MTESERR", 10: "SEGV_CPERR"},
    "SIGBUS": {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR", 4: "BUS_MCEERR_AR",
               5: "BUS_MCEERR_AO"},
    "SIGILL": {1: "ILL_ILLOPC", 2: "ILL_ILLOPN", 3: "ILL_ILLADR", 4: "ILL_ILLTRP",
               5: "ILL_PRVOPC", 6: "ILL_PRVREG", 7: "ILL_COPROC", 8: "ILL_BADSTK",
               9: "ILL_BADIADDR"},
    "SIGFPE": {1: "FPE_INTDIV", 2: "FPE_INTOVF", 3: "FPE_FLTDIV", 4: "FPE_FLTOVF",
               5: "FPE_FLTUND", 6: "FPE_FLTRES", 7: "FPE_FLTINV", 8: "FPE_FLTSUB",
               14: "FPE_FLTUNK", 15: "FPE_CONDTRAP"},
    "SIGTRAP": {1: "TRAP_BRKPT", 2: "TRAP_TRACE", 3: "TRAP_BRANCH", 4: "TRAP_HWBKPT"},
}  # fmt: skip
_SI_GENERIC = {0: "SI_USER", 0x80: "SI_KERNEL", -1: "SI_QUEUE", -2: "SI_TIMER",
               -3: "SI_MESGQ", -4: "SI_ASYNCIO", -5: "SI_SIGIO", -6: "SI_TKILL"}  # fmt: skip


def si_code_name(signame: str | None, code: int | None) -> str | None:
    if code is None:
        return None
    if code <= 0 or code == 0x80:
        return _SI_GENERIC.get(code, str(code))
    return _SI_CODES.get(signame or "", {}).get(code, str(code))


# Signals that carry a fault address in siginfo (si_addr).
FAULT_SIGNALS = frozenset({"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP", "SIGEMT"})
