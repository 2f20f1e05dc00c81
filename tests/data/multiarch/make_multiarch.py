#!/usr/bin/env python3
"""Regenerate the multi-architecture core dump fixtures in this directory.

Run as root on a Debian 12 x86-64 host, from anywhere::

    python3 tests/data/multiarch/make_multiarch.py            # everything
    python3 tests/data/multiarch/make_multiarch.py --only riscv64 --only i386

It is standard-library only (plus the tools below) and rewrites, for each architecture ``ARCH``:

- ``ARCH/crash-ARCH.zst``: ``crash.c`` built with ``-g -O0 -static -pthread -Wl,--build-id``;
- ``ARCH/core-WRITER.zst``: a core dump of it, written by WRITER:

  ``kernel``: the Linux kernel. x86-64 and i386 run natively here. Every other architecture
  runs in a throw-away ``qemu-system-ARCH`` virtual machine booting a tiny kernel built from
  Debian's ``linux-source-6.1`` (tinyconfig plus the options in ``Vm.kconfig``) with
  ``vm_init.c`` as PID 1, which runs the program and copies the core to a virtio disk. These
  are the cores a fleet produces: NT_PRSTATUS per thread, NT_PRPSINFO, NT_SIGINFO, NT_AUXV,
  NT_FILE, FP and architecture notes, and the executable's first page (with its build-id).

  ``qemu``: qemu-user (``qemu-ARCH``), which writes the guest's core itself when the guest dies
  of a signal and RLIMIT_CORE allows (``qemu_<prog>_<date>_<pid>.core``). qemu 7.2 writes only
  NT_PRSTATUS (one per thread, crashing thread first), NT_PRPSINFO and NT_AUXV: no NT_FILE, no
  NT_SIGINFO, no FP registers, and it does not dump the first page of the executable, so the
  build-id is not in the core. It writes no core at all for riscv64.

- ``manifest.json``: the facts of each core, read here by a struct-based reader written for this
  script and then checked against ``eu-readelf -n`` and ``gdb-multiarch`` (the script fails if
  they disagree), and the NT_PRSTATUS register layout of each architecture;
- ``LAYOUTS.md``: the same layouts for people.

The program runs with an empty environment (so no host environment ends up in a committed core)
as ``./crash-ARCH alpha beta``. The guest stack of qemu-user is 256 KiB (``-s``) and the crashing
thread's 256 KiB, because qemu-user dumps whole stacks and the default 8 MiB would make each core
8 MiB before compression.

Needs (Debian 12 packages): ``gcc`` ``lib32gcc-12-dev`` ``libc6-dev-i386`` ``libc6-dev-x32``
``libx32gcc-12-dev`` ``gcc-{aarch64,powerpc64le,powerpc64,s390x,riscv64,mips,mipsel}-linux-gnu``
``gcc-arm-linux-gnueabihf`` and the matching ``libc6-dev-*-cross``, ``qemu-user``,
``qemu-system-misc`` ``qemu-system-arm`` ``qemu-system-ppc`` ``qemu-system-mips``
``qemu-system-s390x``, ``opensbi``, ``linux-source-6.1`` ``flex`` ``bison`` ``bc``,
``elfutils``, ``gdb-multiarch``, ``zstd``. (``gcc-multilib`` conflicts with the cross compilers
in Debian 12; ``lib32gcc-12-dev`` + ``libc6-dev-i386`` give ``gcc -m32`` without it.)

Kernels are built once into ``--cache`` (default ``/var/tmp/corecensus-multiarch``), a few
minutes each on two cores, and reused while their configuration is unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "crash.c"
VM_INIT = HERE / "vm_init.c"
ARGS = ("alpha", "beta")
QEMU_STACK = 256 * 1024
LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")

# ---------------------------------------------------------------------------------------------
# Register layouts of NT_PRSTATUS pr_reg (elf_gregset_t), as the kernel defines them. qemu-user
# fills the same layout (linux-user/elfload.c, elf_core_copy_regs), except that it writes 0 into
# slots it does not model (orig_rax, orig_r0 and orig_gpr3 get rax/r0/0; mips r26/r27 get 0).
# Each entry: name, byte offset in pr_reg, size; aliases map the names corecensus reports for
# pc and sp onto these.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the general registers sit in one architecture's NT_PRSTATUS."""

    word: int  # bytes per elf_greg_t (and per long in the prstatus header)
    prstatus_size: int
    pr_reg_offset: int
    registers: tuple[tuple[str, int, int], ...]  # (name, offset in pr_reg, size)
    aliases: dict[str, str]  # reported name -> layout name
    source: str

    @property
    def pr_reg_size(self) -> int:
        _name, offset, size = self.registers[-1]
        return offset + size

    def to_json(self) -> dict[str, Any]:
        return {
            "word_size": self.word,
            "prstatus_size": self.prstatus_size,
            "pr_reg_offset": self.pr_reg_offset,
            "pr_reg_size": self.pr_reg_size,
            "registers": [{"name": n, "offset": o, "size": s} for n, o, s in self.registers],
            "aliases": self.aliases,
            "source": self.source,
        }


def _words(word: int, names: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    return tuple((name, i * word, word) for i, name in enumerate(names))


def _prstatus_geometry(word: int, greg_bytes: int) -> tuple[int, int]:
    """(sizeof(struct elf_prstatus), offsetof(pr_reg)) for the generic Linux layout.

    include/linux/elfcore.h: elf_siginfo (12) + short pr_cursig (+2 pad) + two longs
    (sigpend, sighold) + four pid_t + four struct timeval (two longs each) = 72 / 112, then
    pr_reg, then int pr_fpvalid, padded to the alignment of a long.
    """
    pr_reg = 16 + 2 * word + 16 + 8 * word
    size = pr_reg + greg_bytes + 4
    return size + (-size % word), pr_reg


def _layout(
    word: int, regs: tuple[tuple[str, int, int], ...], aliases: dict[str, str], source: str
) -> Layout:
    greg_bytes = regs[-1][1] + regs[-1][2]
    size, offset = _prstatus_geometry(word, greg_bytes)
    return Layout(word, size, offset, regs, aliases, source)


X86_64_NAMES = [
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
I386_NAMES = [
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
RISCV_NAMES = [
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
PPC_NAMES = [f"r{i}" for i in range(32)] + (
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
        "pad0",
        "pad1",
        "pad2",
        "pad3",
    ]
)
MIPS32_NAMES = (
    [f"pad{i}" for i in range(6)]
    + [f"r{i}" for i in range(32)]
    + ["lo", "hi", "cp0_epc", "cp0_badvaddr", "cp0_status", "cp0_cause", "unused0"]
)


def _s390x_regs() -> tuple[tuple[str, int, int], ...]:
    regs: list[tuple[str, int, int]] = [("psw_mask", 0, 8), ("psw_addr", 8, 8)]
    regs += [(f"r{i}", 16 + 8 * i, 8) for i in range(16)]
    regs += [(f"a{i}", 144 + 4 * i, 4) for i in range(16)]
    regs.append(("orig_gpr2", 208, 8))
    return tuple(regs)


LAYOUTS: dict[str, Layout] = {
    "x86_64": _layout(
        8,
        _words(8, X86_64_NAMES),
        {"pc": "rip", "sp": "rsp"},
        "arch/x86/include/asm/user_64.h struct user_regs_struct; ELF_NGREG 27 in "
        "arch/x86/include/asm/elf.h",
    ),
    "i386": _layout(
        4,
        _words(4, I386_NAMES),
        {"pc": "eip", "sp": "esp"},
        "arch/x86/include/asm/user_32.h struct user_regs_struct (bx cx dx si di bp ax ds es fs "
        "gs orig_ax ip cs flags sp ss); on a 64-bit kernel struct user_regs_struct32 in "
        "struct i386_elf_prstatus, arch/x86/include/asm/elfcore-compat.h",
    ),
    # x32: compat_elf_prstatus (32-bit header, 72 bytes) around the full 64-bit
    # user_regs_struct; PRSTATUS_SIZE is 296 (arch/x86/include/asm/elfcore-compat.h).
    "x32": Layout(
        8,
        296,
        72,
        _words(8, X86_64_NAMES),
        {"pc": "rip", "sp": "rsp"},
        "arch/x86/include/asm/elfcore-compat.h: compat_elf_gregset_t is the 64-bit struct "
        "user_regs_struct (arch/x86/include/asm/user_64.h) inside the 32-bit "
        "compat_elf_prstatus",
    ),
    "aarch64": _layout(
        8,
        _words(8, [f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"]),
        {"pc": "pc", "sp": "sp"},
        "arch/arm64/include/uapi/asm/ptrace.h struct user_pt_regs (regs[31], sp, pc, pstate); "
        "ELF_NGREG in arch/arm64/include/asm/elf.h",
    ),
    "arm": _layout(
        4,
        _words(4, [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "cpsr", "orig_r0"]),
        {"pc": "pc", "sp": "sp"},
        "arch/arm/include/uapi/asm/ptrace.h struct pt_regs uregs[18] (ARM_sp 13, ARM_lr 14, "
        "ARM_pc 15, ARM_cpsr 16, ARM_ORIG_r0 17); ELF_NGREG in arch/arm/include/asm/elf.h",
    ),
    "ppc64": _layout(
        8,
        _words(8, PPC_NAMES),
        {"pc": "nip", "sp": "r1"},
        "arch/powerpc/include/uapi/asm/ptrace.h struct user_pt_regs (gpr[32], nip, msr, "
        "orig_gpr3, ctr, link, xer, ccr, softe, trap, dar, dsisr, result), padded to "
        "ELF_NGREG 48 (arch/powerpc/include/uapi/asm/elf.h)",
    ),
    "s390x": _layout(
        8,
        _s390x_regs(),
        {"pc": "psw_addr", "sp": "r15"},
        "arch/s390/include/asm/ptrace.h s390_regs (psw_t psw {mask, addr}; unsigned long "
        "gprs[16]; unsigned int acrs[16]; unsigned long orig_gpr2), typedef'd to "
        "elf_gregset_t in arch/s390/include/asm/elf.h",
    ),
    "riscv64": _layout(
        8,
        _words(8, RISCV_NAMES),
        {"pc": "pc", "sp": "sp"},
        "arch/riscv/include/uapi/asm/ptrace.h struct user_regs_struct; ELF_NGREG in "
        "arch/riscv/include/uapi/asm/elf.h",
    ),
    "mips": _layout(
        4,
        _words(4, MIPS32_NAMES),
        {"pc": "cp0_epc", "sp": "r29"},
        "arch/mips/include/uapi/asm/reg.h MIPS32_EF_* (six unused words, then EF_R0=6 .. "
        "EF_R31=37, EF_LO 38, EF_HI 39, EF_CP0_EPC 40, EF_CP0_BADVADDR 41, EF_CP0_STATUS 42, "
        "EF_CP0_CAUSE 43, EF_UNUSED0 44); ELF_NGREG 45 in arch/mips/include/asm/elf.h",
    ),
}
LAYOUTS["ppc64le"] = LAYOUTS["ppc64"]
LAYOUTS["mipsel"] = LAYOUTS["mips"]

# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------

COMMON_KCONFIG = """
CONFIG_PRINTK=y
CONFIG_TTY=y
CONFIG_BINFMT_ELF=y
CONFIG_COREDUMP=y
CONFIG_ELF_CORE=y
CONFIG_MULTIUSER=y
CONFIG_FUTEX=y
CONFIG_POSIX_TIMERS=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_BLOCK=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_BLK=y
"""
# 32-bit glibc 2.36 waits on futexes with the time32 futex syscall when there is no timeout
# (pthread_join), which exists only with COMPAT_32BIT_TIME; tinyconfig turns it off, and the
# waiting thread then dies in __libc_fatal ("The futex facility returned an unexpected error").
KCONFIG_32BIT = """
CONFIG_COMPAT_32BIT_TIME=y
"""


@dataclasses.dataclass(frozen=True)
class Vm:
    """How to build and boot a kernel for one architecture."""

    karch: str
    image: str  # path of the bootable image inside the build directory
    kconfig: str
    qemu: tuple[str, ...]  # qemu-system command without -kernel/-initrd/-append/disk
    disk: tuple[str, ...]  # arguments attaching {disk} as the first virtio disk
    console: str


@dataclasses.dataclass(frozen=True)
class Target:
    """One architecture: how to build crash.c for it and which writers produce its cores."""

    arch: str
    cc: tuple[str, ...]
    elf_machine: str
    writers: tuple[str, ...]  # "kernel" and/or "qemu"
    qemu_user: str | None = None
    vm: Vm | None = None
    note: str | None = None

    @property
    def exe_name(self) -> str:
        return f"crash-{self.arch}"

    @property
    def cross_prefix(self) -> str:
        return self.cc[0][: -len("gcc")]


RISCV_VM = Vm(
    karch="riscv",
    image="arch/riscv/boot/Image",
    kconfig=COMMON_KCONFIG
    + """
CONFIG_64BIT=y
CONFIG_MMU=y
CONFIG_FPU=y
CONFIG_NONPORTABLE=y
CONFIG_SOC_VIRT=y
CONFIG_RISCV_SBI=y
CONFIG_RISCV_SBI_V01=y
CONFIG_HVC_RISCV_SBI=y
CONFIG_VIRTIO_MMIO=y
""",
    qemu=("qemu-system-riscv64", "-M", "virt", "-m", "256M", "-bios", "default"),
    disk=(
        "-drive",
        "file={disk},format=raw,if=none,id=d0",
        "-device",
        "virtio-blk-device,drive=d0",
    ),
    console="hvc0",
)

VIRTIO_MMIO_DISK = (
    "-drive",
    "file={disk},format=raw,if=none,id=d0",
    "-device",
    "virtio-blk-device,drive=d0",
)
VIRTIO_PCI_DISK = (
    "-drive",
    "file={disk},format=raw,if=none,id=d0",
    "-device",
    "virtio-blk-pci,drive=d0",
)

AARCH64_VM = Vm(
    karch="arm64",
    image="arch/arm64/boot/Image",
    kconfig=COMMON_KCONFIG
    + """
CONFIG_SERIAL_AMBA_PL011=y
CONFIG_SERIAL_AMBA_PL011_CONSOLE=y
CONFIG_VIRTIO_MMIO=y
CONFIG_ARM64_SVE=y
CONFIG_ARM64_PTR_AUTH=y
CONFIG_ARM64_TAGGED_ADDR_ABI=y
""",
    # "max" has SVE and pointer authentication, as current server cores (and distribution
    # kernels) do, so the core carries NT_ARM_SVE and the PAC notes a fleet's cores carry.
    qemu=("qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-m", "256M"),
    disk=VIRTIO_MMIO_DISK,
    console="ttyAMA0",
)

ARM_VM = Vm(
    karch="arm",
    image="arch/arm/boot/zImage",
    kconfig=COMMON_KCONFIG
    + KCONFIG_32BIT
    + """
CONFIG_MMU=y
CONFIG_ARCH_MULTI_V7=y
CONFIG_ARCH_VIRT=y
CONFIG_AEABI=y
CONFIG_ARM_THUMB=y
CONFIG_VFP=y
CONFIG_VFPv3=y
CONFIG_NEON=y
CONFIG_SERIAL_AMBA_PL011=y
CONFIG_SERIAL_AMBA_PL011_CONSOLE=y
CONFIG_VIRTIO_MMIO=y
""",
    qemu=("qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15", "-m", "256M"),
    disk=VIRTIO_MMIO_DISK,
    console="ttyAMA0",
)

S390X_VM = Vm(
    karch="s390",
    image="arch/s390/boot/bzImage",
    kconfig=COMMON_KCONFIG
    + """
CONFIG_S390_GUEST=y
CONFIG_SCLP_TTY=y
CONFIG_SCLP_CONSOLE=y
CONFIG_SCLP_VT220_TTY=y
CONFIG_SCLP_VT220_CONSOLE=y
""",
    qemu=("qemu-system-s390x", "-M", "s390-ccw-virtio", "-m", "256M"),
    disk=("-drive", "file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-ccw,drive=d0"),
    console="ttysclp0",
)


def _ppc64_vm(endian: str) -> Vm:
    return Vm(
        karch="powerpc",
        image="vmlinux",
        kconfig=COMMON_KCONFIG
        + f"""
CONFIG_PPC64=y
CONFIG_PPC_BOOK3S_64=y
CONFIG_CPU_{endian}_ENDIAN=y
CONFIG_PPC_PSERIES=y
CONFIG_PPC_OF_BOOT_TRAMPOLINE=y
CONFIG_HVC_CONSOLE=y
CONFIG_ALTIVEC=y
CONFIG_VSX=y
CONFIG_PCI=y
CONFIG_VIRTIO_PCI=y
""",
        qemu=("qemu-system-ppc64", "-M", "pseries", "-cpu", "power9", "-m", "512M"),
        disk=VIRTIO_PCI_DISK,
        console="hvc0",
    )


def _mips_vm(endian: str, qemu: str) -> Vm:
    return Vm(
        karch="mips",
        image="vmlinux",
        kconfig=COMMON_KCONFIG
        + KCONFIG_32BIT
        + f"""
CONFIG_MIPS_MALTA=y
CONFIG_CPU_MIPS32_R2=y
CONFIG_32BIT=y
CONFIG_CPU_{endian}_ENDIAN=y
CONFIG_MIPS_FP_SUPPORT=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_SERIAL_OF_PLATFORM=y
CONFIG_PCI=y
CONFIG_VIRTIO_PCI=y
CONFIG_POWER_RESET=y
CONFIG_POWER_RESET_SYSCON=y
CONFIG_MFD_SYSCON=y
""",
        qemu=(qemu, "-M", "malta", "-m", "256M"),
        disk=VIRTIO_PCI_DISK,
        console="ttyS0",
    )


QEMU_RISCV_NOTE = "qemu-user 7.2 writes no core for riscv64 (no elf_core_copy_regs for RISC-V)"
BOTH = ("kernel", "qemu")

TARGETS: dict[str, Target] = {
    t.arch: t
    for t in (
        Target("x86_64", ("gcc",), "EM_X86_64", ("kernel",)),
        Target("i386", ("gcc", "-m32"), "EM_386", ("kernel",)),
        Target("x32", ("gcc", "-mx32"), "EM_X86_64", ("kernel",)),
        Target("aarch64", ("aarch64-linux-gnu-gcc",), "EM_AARCH64", BOTH, "qemu-aarch64",
               AARCH64_VM),
        Target("arm", ("arm-linux-gnueabihf-gcc",), "EM_ARM", BOTH, "qemu-arm", ARM_VM),
        Target("ppc64le", ("powerpc64le-linux-gnu-gcc",), "EM_PPC64", BOTH, "qemu-ppc64le",
               _ppc64_vm("LITTLE")),
        Target("ppc64", ("powerpc64-linux-gnu-gcc",), "EM_PPC64", BOTH, "qemu-ppc64",
               _ppc64_vm("BIG")),
        Target("s390x", ("s390x-linux-gnu-gcc",), "EM_S390", BOTH, "qemu-s390x", S390X_VM),
        Target("riscv64", ("riscv64-linux-gnu-gcc",), "EM_RISCV", ("kernel",), None, RISCV_VM,
               note=QEMU_RISCV_NOTE),
        Target("mips", ("mips-linux-gnu-gcc",), "EM_MIPS", BOTH, "qemu-mips",
               _mips_vm("BIG", "qemu-system-mips")),
        Target("mipsel", ("mipsel-linux-gnu-gcc",), "EM_MIPS", BOTH, "qemu-mipsel",
               _mips_vm("LITTLE", "qemu-system-mipsel")),
    )
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# A small ELF reader, written for this script so the manifest does not rest on corecensus.
# ---------------------------------------------------------------------------------------------

EM_NAMES = {3: "EM_386", 8: "EM_MIPS", 21: "EM_PPC64", 22: "EM_S390", 40: "EM_ARM",
            62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}  # fmt: skip
CORE_NOTES = {1: "NT_PRSTATUS", 2: "NT_PRFPREG", 3: "NT_PRPSINFO", 4: "NT_TASKSTRUCT",
              6: "NT_AUXV", 0x46494C45: "NT_FILE", 0x53494749: "NT_SIGINFO"}  # fmt: skip
# include/uapi/linux/elf.h
LINUX_NOTES = {
    0x46E62B7F: "NT_PRXFPREG",
    0x100: "NT_PPC_VMX", 0x101: "NT_PPC_SPE", 0x102: "NT_PPC_VSX", 0x103: "NT_PPC_TAR",
    0x104: "NT_PPC_PPR", 0x105: "NT_PPC_DSCR", 0x106: "NT_PPC_EBB", 0x107: "NT_PPC_PMU",
    0x10F: "NT_PPC_PKEY",
    0x200: "NT_386_TLS", 0x201: "NT_386_IOPERM", 0x202: "NT_X86_XSTATE", 0x204: "NT_X86_SHSTK",
    0x205: "NT_X86_XSAVE_LAYOUT",
    0x300: "NT_S390_HIGH_GPRS", 0x301: "NT_S390_TIMER", 0x302: "NT_S390_TODCMP",
    0x303: "NT_S390_TODPREG", 0x304: "NT_S390_CTRS", 0x305: "NT_S390_PREFIX",
    0x306: "NT_S390_LAST_BREAK", 0x307: "NT_S390_SYSTEM_CALL", 0x308: "NT_S390_TDB",
    0x309: "NT_S390_VXRS_LOW", 0x30A: "NT_S390_VXRS_HIGH", 0x30B: "NT_S390_GS_CB",
    0x30C: "NT_S390_GS_BC", 0x30D: "NT_S390_RI_CB", 0x30E: "NT_S390_PV_CPU_DATA",
    0x400: "NT_ARM_VFP", 0x401: "NT_ARM_TLS", 0x402: "NT_ARM_HW_BREAK", 0x403: "NT_ARM_HW_WATCH",
    0x404: "NT_ARM_SYSTEM_CALL", 0x405: "NT_ARM_SVE", 0x406: "NT_ARM_PAC_MASK",
    0x407: "NT_ARM_PACA_KEYS", 0x408: "NT_ARM_PACG_KEYS", 0x409: "NT_ARM_TAGGED_ADDR_CTRL",
    0x40A: "NT_ARM_PAC_ENABLED_KEYS", 0x40B: "NT_ARM_SSVE", 0x40C: "NT_ARM_ZA",
    0x40D: "NT_ARM_ZT",
    0x800: "NT_MIPS_DSP", 0x801: "NT_MIPS_FP_MODE", 0x802: "NT_MIPS_MSA",
    0x900: "NT_RISCV_CSR", 0x901: "NT_RISCV_VECTOR",
}  # fmt: skip
AT_EXECFN = 31


@dataclasses.dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@dataclasses.dataclass(frozen=True)
class Note:
    owner: str
    type: int
    desc: bytes

    @property
    def name(self) -> str:
        table = CORE_NOTES if self.owner == "CORE" else LINUX_NOTES
        return table.get(self.type, f"{self.type:#x}")


class Elf:
    """The parts of a 32/64-bit, little/big-endian ELF file this script needs."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")
        self.data = data
        self.bits = {1: 32, 2: 64}[data[4]]
        self.endian = {1: "little", 2: "big"}[data[5]]
        self.e = "<" if self.endian == "little" else ">"
        if self.bits == 64:
            fields = struct.unpack_from(self.e + "HHIQQQIHHHHHH", data, 16)
        else:
            fields = struct.unpack_from(self.e + "HHIIIIIHHHHHH", data, 16)
        (self.type, self.machine, _, _, self.phoff, self.shoff, _, _, _, self.phnum, _,
         self.shnum, self.shstrndx) = fields  # fmt: skip

    @property
    def word(self) -> int:
        return self.bits // 8

    def u(self, fmt: str, offset: int, data: bytes | None = None) -> tuple[Any, ...]:
        return struct.unpack_from(self.e + fmt, self.data if data is None else data, offset)

    def segments(self, p_type: int) -> list[Segment]:
        out = []
        for i in range(self.phnum):
            if self.bits == 64:
                t, flags, off, vaddr, _, filesz, memsz, _ = self.u("IIQQQQQQ", self.phoff + 56 * i)
            else:
                t, off, vaddr, _, filesz, memsz, flags, _ = self.u("IIIIIIII", self.phoff + 32 * i)
            if t == p_type:
                out.append(Segment(vaddr, memsz, off, filesz, flags))
        return out

    def notes_in(self, blob: bytes) -> list[Note]:
        notes, pos = [], 0
        while pos + 12 <= len(blob):
            namesz, descsz, ntype = self.u("III", pos, blob)
            name = blob[pos + 12 : pos + 12 + namesz].rstrip(b"\0").decode()
            dpos = pos + 12 + ((namesz + 3) & ~3)
            notes.append(Note(name, ntype, blob[dpos : dpos + descsz]))
            pos = dpos + ((descsz + 3) & ~3)
        return notes

    def core_notes(self) -> list[Note]:
        notes = []
        for seg in self.segments(4):  # PT_NOTE
            notes += self.notes_in(self.data[seg.offset : seg.offset + seg.filesz])
        return notes

    def read(self, addr: int, size: int, *, partial: bool = False) -> bytes | None:
        """Bytes at a virtual address from the core's PT_LOAD contents, None if not dumped.

        With ``partial``, as many of the ``size`` bytes as the segment holds."""
        for seg in self.segments(1):
            end = seg.vaddr + seg.filesz
            if seg.vaddr <= addr and (addr + size <= end or (partial and addr < end)):
                start = seg.offset + addr - seg.vaddr
                return self.data[start : start + min(size, end - addr)]
        return None

    def _section_headers(self) -> list[tuple[int, int, int, int, int, int]]:
        """(name offset, type, addr, offset, size, link) of every section, by index."""
        out = []
        for i in range(self.shnum):
            if self.bits == 64:
                name, t, _, addr, off, size, link, _, _, _ = self.u(
                    "IIQQQQIIQQ", self.shoff + 64 * i
                )
            else:
                name, t, _, addr, off, size, link, _, _, _ = self.u(
                    "IIIIIIIIII", self.shoff + 40 * i
                )
            out.append((name, t, addr, off, size, link))
        return out

    def _string(self, table_offset: int, index: int) -> str:
        end = self.data.index(b"\0", table_offset + index)
        return self.data[table_offset + index : end].decode()

    def sections(self) -> list[tuple[str, int, int, int, int]]:
        """(name, addr, offset, size, link) of every section, by index."""
        headers = self._section_headers()
        names_at = headers[self.shstrndx][3]
        return [(self._string(names_at, n), a, o, s, lk) for n, _, a, o, s, lk in headers]

    def section(self, wanted: str) -> tuple[str, int, int, int, int]:
        for sec in self.sections():
            if sec[0] == wanted:
                return sec
        raise KeyError(wanted)

    def build_id(self) -> tuple[str, int]:
        """The GNU build-id as hex, and the address of its note."""
        _, addr, off, size, _ = self.section(".note.gnu.build-id")
        (note,) = self.notes_in(self.data[off : off + size])
        if note.owner != "GNU" or note.type != 3:
            raise ValueError(f"unexpected note in .note.gnu.build-id: {note}")
        return note.desc.hex(), addr

    def symbol(self, wanted: str) -> tuple[int, int, str]:
        """(value, size, section name) of a symbol in .symtab."""
        sections = self.sections()
        _, _, off, size, link = self.section(".symtab")
        names_at = sections[link][2]
        entsize = 24 if self.bits == 64 else 16
        for pos in range(off, off + size, entsize):
            if self.bits == 64:
                name, _, _, shndx, value, sym_size = self.u("IBBHQQ", pos)
            else:
                name, value, sym_size, _, _, shndx = self.u("IIIBBH", pos)
            if self._string(names_at, name) == wanted:
                return value, sym_size, sections[shndx][0]
        raise KeyError(wanted)


# ---------------------------------------------------------------------------------------------
# Reading the notes of a core
# ---------------------------------------------------------------------------------------------


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_prstatus(core: Elf, note: Note, layout: Layout) -> dict[str, Any]:
    """signal, tid and general registers of one NT_PRSTATUS (include/linux/elfcore.h)."""
    if len(note.desc) != layout.prstatus_size:
        raise ValueError(
            f"NT_PRSTATUS is {len(note.desc)} bytes, the layout says {layout.prstatus_size}"
        )
    (si_signo,) = core.u("i", 0, note.desc)
    (cursig,) = core.u("H", 12, note.desc)
    (tid,) = core.u("i", 16 + 2 * core.word, note.desc)
    regs = {}
    for name, offset, size in layout.registers:
        start = layout.pr_reg_offset + offset
        raw = note.desc[start : start + size]
        regs[name] = int.from_bytes(raw, core.endian)  # type: ignore[arg-type]
    return {"si_signo": si_signo, "cursig": cursig, "tid": tid, "registers": regs}


def read_prpsinfo(core: Elf, note: Note) -> dict[str, Any]:
    """pid, fname and psargs of NT_PRPSINFO.

    struct elf_prpsinfo: four chars, unsigned long pr_flag, then pr_uid and pr_gid, whose width
    is the architecture's __kernel_uid_t (16 bits on i386 and arm, 32 elsewhere), four pid_t,
    char pr_fname[16], char pr_psargs[80]. The note's size tells the uid width.
    """
    uid_at = 8 if core.word == 4 else 16
    uid_size = (len(note.desc) - uid_at - 16 - 96) // 2
    if uid_size not in (2, 4):
        raise ValueError(f"unexpected NT_PRPSINFO size {len(note.desc)}")
    pid_at = uid_at + 2 * uid_size
    (pid,) = core.u("i", pid_at, note.desc)
    fname = _cstr(note.desc[pid_at + 16 : pid_at + 32])
    psargs = _cstr(note.desc[pid_at + 32 : pid_at + 112])
    return {"pid": pid, "fname": fname, "psargs": psargs, "size": len(note.desc)}


def read_siginfo(core: Elf, note: Note) -> dict[str, Any]:
    """si_signo, si_code and si_addr of NT_SIGINFO (a siginfo_t; MIPS swaps code and errno)."""
    signo, second, third = core.u("iii", 0, note.desc)
    code = second if core.machine == 8 else third
    (addr,) = core.u("Q" if core.word == 8 else "I", 16 if core.word == 8 else 12, note.desc)
    return {"si_signo": signo, "si_code": code, "si_addr": addr}


def read_nt_file(core: Elf, note: Note) -> list[dict[str, Any]]:
    """The mappings of NT_FILE: count, page size, count x (start, end, page offset), names."""
    w = "Q" if core.word == 8 else "I"
    count, page_size = core.u(w + w, 0, note.desc)
    ranges = [core.u(w * 3, 2 * core.word + 3 * core.word * i, note.desc) for i in range(count)]
    names = note.desc[(2 + 3 * count) * core.word :].split(b"\0")
    return [
        {"path": names[i].decode(), "start": s, "end": e, "file_offset": off * page_size}
        for i, (s, e, off) in enumerate(ranges)
    ]


def read_auxv(core: Elf, note: Note) -> dict[int, int]:
    w = "Q" if core.word == 8 else "I"
    pairs = len(note.desc) // (2 * core.word)
    out = {}
    for i in range(pairs):
        key, value = core.u(w + w, 2 * core.word * i, note.desc)
        out[key] = value
    return out


def core_facts(core: Elf, layout: Layout) -> dict[str, Any]:
    notes = core.core_notes()
    names: list[str] = []
    for note in notes:
        if note.name not in names:
            names.append(note.name)
    threads = [read_prstatus(core, n, layout) for n in notes if n.name == "NT_PRSTATUS"]
    (psinfo,) = [read_prpsinfo(core, n) for n in notes if n.name == "NT_PRPSINFO"]
    siginfo = [read_siginfo(core, n) for n in notes if n.name == "NT_SIGINFO"]
    files = [read_nt_file(core, n) for n in notes if n.name == "NT_FILE"]
    (auxv,) = [read_auxv(core, n) for n in notes if n.name == "NT_AUXV"]
    execfn_raw = core.read(auxv[AT_EXECFN], 256, partial=True) if AT_EXECFN in auxv else None
    return {
        "notes": names,
        "threads": threads,
        "psinfo": psinfo,
        "siginfo": siginfo[0] if siginfo else None,
        "files": files[0] if files else None,
        "execfn": _cstr(execfn_raw) if execfn_raw else None,
    }


# ---------------------------------------------------------------------------------------------
# Independent cross-checks: eu-readelf and gdb-multiarch
# ---------------------------------------------------------------------------------------------

# How eu-readelf -n names pc and sp in an NT_PRSTATUS of each architecture (elfutils backends;
# 0.188 has no MIPS core-note backend, so it prints no registers for MIPS).
EU_PC_SP = {"x86_64": ("rip", "rsp"), "i386": ("eip", "esp"), "aarch64": ("pc", "sp"),
            "arm": ("pc", "sp"), "ppc64": ("nip", "r1"), "ppc64le": ("nip", "r1"),
            "s390x": ("pswa", "r15"), "riscv64": ("pc", "sp")}  # fmt: skip


def eu_readelf_facts(core_path: Path) -> dict[str, Any]:
    text = subprocess.run(
        ["eu-readelf", "-n", str(core_path)], capture_output=True, text=True, check=True
    ).stdout
    threads: list[dict[str, Any]] = []
    psinfo: dict[str, str] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if re.match(r"\s+CORE\s+\d+\s+PRSTATUS", line):
            current = {"regs": {}}
            threads.append(current)
            continue
        if re.match(r"\s+\S+\s+\d+\s+\S+", line) and "PRSTATUS" not in line and ":" not in line:
            current = None  # another note began
            continue
        m = re.search(r"fname: (.*), psargs: (.*)$", line)
        if m:
            psinfo = {"fname": m.group(1), "psargs": m.group(2)}
            current = None
            continue
        if current is None:
            continue
        if "cursig" in line:
            current["cursig"] = int(re.search(r"cursig: (\d+)", line).group(1))  # type: ignore[union-attr]
        m = re.match(r"\s+pid: (\d+), ppid", line)
        if m:
            current["tid"] = int(m.group(1))
        for name, value in re.findall(r"(\w+):\s+(0x[0-9a-f]+|-?\d+)", line):
            current["regs"][name] = int(value, 0)
    return {"threads": threads, "psinfo": psinfo}


def gdb_facts(exe: Path, core_path: Path) -> dict[str, Any]:
    """pc, sp, the symbol at pc, thread count, crashing thread and psargs, as gdb sees them."""
    out = subprocess.run(
        ["gdb-multiarch", "-nx", "-batch", "-iex", "set auto-load off",
         "-ex", f"file {exe}", "-ex", f"core-file {core_path}",
         "-ex", "p/x $pc", "-ex", "p/x $sp", "-ex", "info symbol $pc", "-ex", "info threads",
         "-ex", "info proc", "-ex", "thread apply all bt 4"],
        capture_output=True, text=True, check=False, timeout=120,
    ).stdout  # fmt: skip
    pc = re.search(r"^\$1 = (0x[0-9a-f]+)", out, re.M)
    sp = re.search(r"^\$2 = (0x[0-9a-f]+)", out, re.M)
    sym = re.search(r"^(\S+) \+ \d+ in section", out, re.M)
    threads = re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP|process)", out, re.M)
    current = re.search(r"^\*\s+\d+\s+.*?LWP (\d+)", out, re.M)
    psargs = re.search(r"^exe = '(.*)'$", out, re.M)  # gdb shows NT_PRPSINFO pr_psargs here
    if not (pc and sp and sym and current and psargs):
        raise RuntimeError(f"gdb-multiarch could not read {core_path}:\n{out}")
    if re.search(r"\b(__libc_message|__libc_fatal|abort)\b", out):
        # The waiting thread must be waiting, not dying of its own error (as it did on 32-bit
        # kernels without COMPAT_32BIT_TIME, see KCONFIG_32BIT).
        raise RuntimeError(f"a thread of {core_path} was not merely waiting:\n{out}")
    return {
        "pc": int(pc.group(1), 16),
        "sp": int(sp.group(1), 16),
        "symbol": sym.group(1),
        "threads": len(threads),
        "crashed_tid": int(current.group(1)),
        "psargs": psargs.group(1),
    }


# ---------------------------------------------------------------------------------------------
# Building and crashing
# ---------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], text=True, check=True, **kw)


def _first_line(cmd: Sequence[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def _core_unlimited() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def build_exe(target: Target, work: Path) -> Path:
    exe = work / target.exe_name
    _run(
        [*target.cc, "-g", "-O0", "-static", "-pthread", "-Wl,--build-id=sha1",
         f"-fdebug-prefix-map={HERE}=.", "-o", exe, SOURCE.name],
        cwd=HERE,
    )  # fmt: skip
    return exe


class Unrunnable(Exception):
    """This machine cannot run the target's program at all; the reason goes in the manifest."""


def crash_native(target: Target, exe: Path, work: Path) -> Path:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern != "core":
        raise SystemExit(f"core_pattern is {pattern!r}; this script needs the plain 'core'")
    for old in work.glob("core*"):
        old.unlink()
    try:
        proc = subprocess.run(
            [f"./{exe.name}", *ARGS], cwd=work, env={}, preexec_fn=_core_unlimited, check=False
        )
    except OSError as exc:  # ENOEXEC: x32 on a kernel without CONFIG_X86_X32_ABI
        raise Unrunnable(f"{exc} on Linux {os.uname().release}{_x32_hint(target.arch)}") from exc
    if proc.returncode != -11:
        raise RuntimeError(f"{exe.name} ended with {proc.returncode}, not SIGSEGV")
    (core,) = [p for p in work.glob("core*") if p.is_file()]
    return core


def crash_qemu_user(target: Target, exe: Path, work: Path) -> Path:
    assert target.qemu_user is not None
    for old in work.glob("qemu_*.core"):
        old.unlink()
    # qemu re-raises the signal after writing the guest's core, and the kernel would then dump
    # qemu itself (hundreds of MB) as ./core: a directory of that name makes that write fail.
    (work / "core").mkdir(exist_ok=True)
    proc = subprocess.run(
        [target.qemu_user, "-s", str(QEMU_STACK), f"./{exe.name}", *ARGS],
        cwd=work, env={}, preexec_fn=_core_unlimited, check=False,
    )  # fmt: skip
    if proc.returncode != -11:
        raise RuntimeError(f"{exe.name} under {target.qemu_user} ended with {proc.returncode}")
    cores = sorted(work.glob(f"qemu_{exe.name}_*.core"))
    if len(cores) != 1:
        raise RuntimeError(f"{target.qemu_user} wrote {len(cores)} guest cores")
    return cores[0]


def _cpio_newc(entries: Sequence[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """An initramfs: (name, mode, contents, (rdev major, rdev minor)) in the "newc" format."""
    out = bytearray()
    trailer = ("TRAILER!!!", 0, b"", (0, 0))
    for ino, (name, mode, data, rdev) in enumerate([*entries, trailer], 1):
        name_z = name.encode() + b"\0"
        nlink = 2 if mode & 0o040000 else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_z), 0)
        out += b"070701" + "".join(f"{v:08X}" for v in fields).encode() + name_z
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_kernel(target: Target, cache: Path) -> tuple[Path, str]:
    """A kernel image for target's VM, built once per configuration; and its version."""
    vm = target.vm
    assert vm is not None
    src = cache / "linux-source-6.1"
    if not (src / "Makefile").exists():
        cache.mkdir(parents=True, exist_ok=True)
        _run(["tar", "-xf", LINUX_TARBALL, "-C", cache])
    key = hashlib.sha256(f"{vm.karch}\n{target.cross_prefix}\n{vm.kconfig}".encode()).hexdigest()
    out = cache / f"build-{target.arch}-{key[:12]}"
    image = out / vm.image
    make = ["make", "-s", f"O={out}", f"ARCH={vm.karch}", f"CROSS_COMPILE={target.cross_prefix}"]
    version = _run([*make, "kernelversion"], cwd=src, capture_output=True).stdout.strip()
    if image.exists():
        return image, version
    out.mkdir(parents=True, exist_ok=True)
    _run([*make, "tinyconfig"], cwd=src, stdout=subprocess.DEVNULL)
    fragment = out / "corecensus.config"
    fragment.write_text(vm.kconfig)
    _run(
        ["scripts/kconfig/merge_config.sh", "-m", "-O", out, out / ".config", fragment],
        cwd=src,
        env={**os.environ, "ARCH": vm.karch, "CROSS_COMPILE": target.cross_prefix},
        stdout=subprocess.DEVNULL,
    )
    _run([*make, "olddefconfig"], cwd=src, stdout=subprocess.DEVNULL)
    config = (out / ".config").read_text().splitlines()
    wanted = [ln for ln in vm.kconfig.split() if ln.startswith("CONFIG_")]
    missing = [w for w in wanted if w.endswith("=y") and w not in config]
    if missing:
        raise RuntimeError(f"kernel config for {target.arch} lacks {missing}")
    _run([*make, f"-j{os.cpu_count() or 1}", Path(vm.image).name], cwd=src)
    return image, version


def crash_vm(target: Target, exe: Path, work: Path, cache: Path) -> tuple[Path, str]:
    vm = target.vm
    assert vm is not None
    image, kernel_version = build_kernel(target, cache)
    init = work / "vm_init"
    _run(
        [*target.cc, "-O2", "-static", f'-DCRASH_EXE="{exe.name}"', "-o", init, VM_INIT.name],
        cwd=HERE,
    )
    initrd = work / "initrd.cpio"
    initrd.write_bytes(
        _cpio_newc(
            [
                ("dev", 0o040755, b"", (0, 0)),
                ("dev/console", 0o020600, b"", (5, 1)),
                ("work", 0o040755, b"", (0, 0)),
                ("init", 0o100755, init.read_bytes(), (0, 0)),
                (f"work/{exe.name}", 0o100755, exe.read_bytes(), (0, 0)),
            ]
        )
    )
    disk = work / "disk.img"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    log = work / "vm.log"
    cmd = [
        *vm.qemu, "-nographic", "-no-reboot", "-nic", "none", "-vga", "none",
        "-kernel", str(image), "-initrd", str(initrd),
        "-append", f"console={vm.console} rdinit=/init panic=-1",
        *(a.format(disk=disk) for a in vm.disk),
    ]  # fmt: skip
    with log.open("w") as f:
        try:
            _run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=300)
        except subprocess.TimeoutExpired:
            # A board whose restart the tiny kernel cannot drive hangs after vm_init copied
            # and synced the core; the disk is read all the same.
            print(f"{target.arch} VM did not stop by itself; killed", file=sys.stderr)
    raw = disk.read_bytes()
    if raw[:8] != b"COREDUMP":
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the {target.arch} VM wrote no core; its console ended with:\n{tail}")
    (size,) = struct.unpack_from("<Q", raw, 8)
    core = work / "core.vm"
    core.write_bytes(raw[16 : 16 + size])
    qemu_version = _first_line([vm.qemu[0], "--version"])
    return core, f"Linux {kernel_version} (Debian linux-source-6.1) under {qemu_version}"


# ---------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------


def code_range(exe: Elf, name: str) -> tuple[int, int]:
    """[start, end) of a function's code. ELFv1 ppc64 symbols name an .opd descriptor whose
    first doubleword is the code address."""
    value, size, section = exe.symbol(name)
    if section == ".opd":
        _, opd_addr, opd_off, _, _ = exe.section(".opd")
        (value,) = exe.u("Q", opd_off + value - opd_addr)
    return value, value + size


def describe(
    target: Target, writer: str, writer_version: str, exe_path: Path, core_path: Path
) -> dict[str, Any]:
    """Read one core three ways, insist they agree, and return its manifest entry."""
    layout = LAYOUTS[target.arch]
    exe = Elf(exe_path.read_bytes())
    core = Elf(core_path.read_bytes())
    if core.type != 4:
        raise ValueError(f"{core_path} is not ET_CORE")
    if EM_NAMES[core.machine] != target.elf_machine or EM_NAMES[exe.machine] != target.elf_machine:
        raise ValueError(f"{core_path}: machine {core.machine}, expected {target.elf_machine}")
    facts = core_facts(core, layout)
    crashed = facts["threads"][0]
    if crashed["cursig"] != 11:
        raise ValueError(f"first NT_PRSTATUS has cursig {crashed['cursig']}, not SIGSEGV")
    regs = crashed["registers"]
    pc, sp = regs[layout.aliases["pc"]], regs[layout.aliases["sp"]]
    start, end = code_range(exe, "crash_here")
    if not start <= pc < end:
        raise ValueError(f"pc {pc:#x} is not in crash_here [{start:#x}, {end:#x})")
    if core.read(sp, core.word) is None:
        raise ValueError(f"sp {sp:#x} is not in dumped memory")
    build_id, note_addr = exe.build_id()
    in_core = core.read(note_addr + 16, len(build_id) // 2)
    load_base = min(s.vaddr for s in exe.segments(1)) & ~0xFFF
    verified_by = ["make_multiarch.py struct reader", "crash_here range from the .symtab"]

    eu = eu_readelf_facts(core_path)
    eu_version = _first_line(["eu-readelf", "--version"])
    if target.arch in EU_PC_SP:
        eu_psinfo = {"fname": facts["psinfo"]["fname"], "psargs": facts["psinfo"]["psargs"]}
        if eu["psinfo"] != eu_psinfo:
            raise ValueError(f"eu-readelf PRPSINFO {eu['psinfo']} disagrees with {eu_psinfo}")
        eu_pc, eu_sp = EU_PC_SP[target.arch]
        if len(eu["threads"]) != len(facts["threads"]):
            raise ValueError("eu-readelf counts a different number of NT_PRSTATUS")
        for ours, theirs in zip(facts["threads"], eu["threads"], strict=True):
            mine = (
                ours["tid"],
                ours["cursig"],
                ours["registers"][layout.aliases["pc"]],
                ours["registers"][layout.aliases["sp"]],
            )
            seen = (
                theirs.get("tid"),
                theirs.get("cursig"),
                theirs["regs"].get(eu_pc),
                theirs["regs"].get(eu_sp),
            )
            if mine != seen:
                raise ValueError(f"eu-readelf disagrees: {seen} vs {mine}")
        verified_by.append(f"{eu_version} (-n)")
    else:
        verified_by.append(f"{eu_version} (-n lists the notes but cannot decode {target.arch})")

    gdb = gdb_facts(exe_path, core_path)
    mine_gdb = (pc, sp, "crash_here", len(facts["threads"]), crashed["tid"])
    seen_gdb = (gdb["pc"], gdb["sp"], gdb["symbol"], gdb["threads"], gdb["crashed_tid"])
    if mine_gdb != seen_gdb or gdb["psargs"].rstrip() != facts["psinfo"]["psargs"].rstrip():
        raise ValueError(f"gdb-multiarch disagrees: {gdb}")
    verified_by.append(_first_line(["gdb-multiarch", "--version"]))

    readelf_id = re.search(
        r"Build ID: ([0-9a-f]+)",
        subprocess.run(
            ["readelf", "-n", str(exe_path)], capture_output=True, text=True, check=True
        ).stdout,
    )
    if readelf_id is None or readelf_id.group(1) != build_id:
        raise ValueError(f"readelf's build-id {readelf_id} differs from {build_id}")

    siginfo = facts["siginfo"]
    entry: dict[str, Any] = {
        "id": f"{target.arch}-{writer}",
        "arch": target.arch,
        "writer": writer,
        "writer_version": writer_version,
        "core": f"{target.arch}/core-{writer}.zst",
        "exe": f"{target.arch}/{target.exe_name}.zst",
        "exe_name": target.exe_name,
        "compiler": _first_line([target.cc[0], "--version"]),
        "elf": {
            "class": core.bits,
            "endian": core.endian,
            "machine": core.machine,
            "machine_name": EM_NAMES[core.machine],
        },
        "notes": facts["notes"],
        "pid": facts["psinfo"]["pid"],
        "crashed_tid": crashed["tid"],
        "threads": len(facts["threads"]),
        "thread_tids": [t["tid"] for t in facts["threads"]],
        "signal": crashed["cursig"],
        "signal_name": "SIGSEGV",
        "si_code": siginfo["si_code"] if siginfo else None,
        "fault_address": siginfo["si_addr"] if siginfo else None,
        "comm": facts["psinfo"]["fname"],
        "psargs": facts["psinfo"]["psargs"],
        "cmdline": " ".join([f"./{target.exe_name}", *ARGS]),
        "execfn": facts["execfn"],
        "registers": {
            REPORTED[target.arch][0]: pc,
            REPORTED[target.arch][1]: sp,
        },
        "pc_symbol": "crash_here",
        "all_registers": regs,
        "exe_build_id": build_id,
        "exe_base": load_base,
        "build_id_in_core": in_core is not None and in_core.hex() == build_id,
        "mapped_files": facts["files"],
        "verified_by": verified_by,
    }
    if facts["files"] is not None:
        exe_maps = [f for f in facts["files"] if f["path"].endswith("/" + target.exe_name)]
        if not exe_maps or min(f["start"] for f in exe_maps) != load_base:
            raise ValueError(f"NT_FILE does not map {target.exe_name} at {load_base:#x}")
    return entry


# Names under which corecensus must report pc and sp (the architectures' own conventions).
REPORTED = {"x86_64": ("rip", "rsp"), "x32": ("rip", "rsp"), "i386": ("eip", "esp"),
            "aarch64": ("pc", "sp"), "arm": ("pc", "sp"), "ppc64": ("nip", "r1"),
            "ppc64le": ("nip", "r1"), "s390x": ("psw_addr", "r15"), "riscv64": ("pc", "sp"),
            "mips": ("pc", "sp"), "mipsel": ("pc", "sp")}  # fmt: skip


def compress(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    _run(["zstd", "-19", "-q", "-f", "--no-progress", src, "-o", dst])
    dst.chmod(0o644)


def layouts_markdown(layouts: dict[str, Layout]) -> str:
    lines = [
        "# NT_PRSTATUS register layouts",
        "",
        "Generated by `make_multiarch.py` (edit the tables there). `pr_reg` is the general "
        "register set (`elf_gregset_t`) inside `struct elf_prstatus` (include/linux/elfcore.h); "
        "its offset is 72 in 32-bit and 112 in 64-bit cores (12-byte `elf_siginfo`, "
        "`short pr_cursig` + 2 padding, `pr_sigpend` and `pr_sighold` as longs, four `pid_t`, "
        "four `struct timeval` of two longs), and it is followed by `int pr_fpvalid`, then "
        "padding to the alignment of a long. Other fields: `pr_cursig` at 12 (u16), `pr_pid` "
        "(the thread id) at 24 (32-bit) or 32 (64-bit). Byte order is the core's (`EI_DATA`).",
        "",
        "qemu-user fills the same layout (linux-user/elfload.c, `elf_core_copy_regs`) but writes "
        "`orig_rax` = rax, `orig_r0` = r0, `orig_gpr3` = 0, MIPS r26/r27 = 0, and leaves the "
        "other ppc64 slots after `ccr` zero.",
        "",
        "The crashing thread's NT_PRSTATUS is the first one in kernel and qemu-user cores. The "
        "kernel sets `pr_cursig` in every thread's NT_PRSTATUS; qemu-user only in the crashing "
        "thread's.",
        "",
        "Every layout below except x32 was checked against the real cores in this directory "
        "(the pc falls in `crash_here`, and eu-readelf and gdb-multiarch read the same pc, sp "
        "and thread ids); x32 comes from the kernel source only, as this machine's kernel cannot "
        "run x32 programs.",
        "",
        "## Other notes",
        "",
        "- NT_PRPSINFO (`struct elf_prpsinfo`): four chars (state, sname, zomb, nice), "
        "`unsigned long pr_flag`, `pr_uid` and `pr_gid` of the architecture's `__kernel_uid_t` "
        "(16 bits on i386 and arm, 32 elsewhere), four `pid_t` (pid, ppid, pgrp, sid), "
        "`pr_fname[16]`, `pr_psargs[80]`. So 136 bytes in 64-bit cores (pid at 24, fname at "
        "40, psargs at 56), 124 on i386/arm (pid 12, fname 28, psargs 44), 128 on mips (pid "
        "16, fname 32, psargs 48). `pr_psargs` is the argument vector with NULs turned into "
        "spaces, usually with one trailing space.",
        "- NT_SIGINFO is a `siginfo_t`: `si_signo`, `si_errno`, `si_code` (MIPS swaps the last "
        "two: `__ARCH_HAS_SWAPPED_SIGINFO`), then for SIGSEGV/SIGBUS `si_addr` at 16 (64-bit) "
        "or 12 (32-bit). qemu-user writes no NT_SIGINFO; its `pr_info` in NT_PRSTATUS has "
        "si_signo only (si_code 0).",
        "- NT_FILE: `count`, `page_size`, then `count` x (start, end, file offset in pages), all "
        "longs, then `count` NUL-terminated paths.",
        "- qemu-user cores have no NT_FILE, and the executable's first page (ELF header, build-id "
        "note) is not dumped: the executable is found from NT_PRPSINFO `pr_fname`, AT_EXECFN "
        "(a string in the dumped stack) or AT_PHDR/AT_ENTRY in NT_AUXV.",
        "",
    ]
    seen: dict[int, str] = {}
    for arch, layout in layouts.items():
        if id(layout) in seen:
            lines += [f"## {arch}", "", f"Same as {seen[id(layout)]}.", ""]
            continue
        seen[id(layout)] = arch
        alias = ", ".join(f"{k} = `{v}`" for k, v in layout.aliases.items())
        lines += [
            f"## {arch}",
            "",
            f"Source: {layout.source}.",
            "",
            f"sizeof(prstatus) {layout.prstatus_size}, pr_reg at {layout.pr_reg_offset}, "
            f"{layout.pr_reg_size} bytes, {layout.word}-byte words; {alias}.",
            "",
            "| offset | size | register |",
            "|---:|---:|---|",
        ]
        lines += [f"| {o} | {s} | {n} |" for n, o, s in layout.registers]
        lines.append("")
    return "\n".join(lines)


def produce(target: Target, writer: str, exe: Path, work: Path, cache: Path) -> tuple[Path, str]:
    if writer == "qemu":
        assert target.qemu_user is not None
        return crash_qemu_user(target, exe, work), _first_line([target.qemu_user, "--version"])
    if target.vm is not None:
        return crash_vm(target, exe, work, cache)
    return crash_native(target, exe, work), f"Linux {os.uname().release} (native)"


def _x32_hint(arch: str) -> str:
    """Why an x32 program cannot run here, if the kernel's own configuration says so."""
    config = Path("/proc/config.gz")
    if arch != "x32" or not config.exists():
        return ""
    import gzip

    if "# CONFIG_X86_X32_ABI is not set" in gzip.decompress(config.read_bytes()).decode():
        return ", built without CONFIG_X86_X32_ABI (/proc/config.gz)"
    return ""


def write_manifest(
    entries: dict[str, dict[str, Any]], not_produced: dict[tuple[str, str], dict[str, str]]
) -> None:
    """Write manifest.json and LAYOUTS.md (after every target, so a failure keeps the rest)."""
    manifest_path = HERE / "manifest.json"
    manifest = {
        "about": "Facts of the cores in this directory, made and checked by make_multiarch.py "
        "(struct reader, eu-readelf -n, gdb-multiarch), not by corecensus.",
        "source": SOURCE.name,
        "cores": [entries[k] for k in sorted(entries)],
        "not_produced": [not_produced[k] for k in sorted(not_produced)],
        "layouts": {arch: layout.to_json() for arch, layout in LAYOUTS.items()},
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    (HERE / "LAYOUTS.md").write_text(layouts_markdown(LAYOUTS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--cache", type=Path, default=Path("/var/tmp/corecensus-multiarch"))
    args = parser.parse_args(argv)
    manifest_path = HERE / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = {e["id"]: e for e in old.get("cores", [])}
    not_produced = {(e["arch"], e["writer"]): e for e in old.get("not_produced", [])}
    work_root = args.cache / "work"
    for arch in args.only or list(TARGETS):
        target = TARGETS[arch]
        work = work_root / arch
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        exe = build_exe(target, work)
        for writer in target.writers:
            key = (arch, writer)
            try:
                core, version = produce(target, writer, exe, work, args.cache)
            except Unrunnable as exc:
                not_produced[key] = {"arch": arch, "writer": writer, "reason": str(exc)}
                print(f"{arch}/{writer}: not produced: {exc}", file=sys.stderr)
                continue
            entry = describe(target, writer, version, exe, core)
            compress(core, HERE / entry["core"])
            compress(exe, HERE / entry["exe"])
            entries[entry["id"]] = entry
            not_produced.pop(key, None)
        if target.note:
            not_produced[(arch, "qemu")] = {"arch": arch, "writer": "qemu", "reason": target.note}
        write_manifest(entries, not_produced)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
