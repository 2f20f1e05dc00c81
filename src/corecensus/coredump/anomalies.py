"""Register-level anomalies: the facts that tell a faulty CPU from a software bug.

Each anomaly is a small rule in an ordered list (the Socorro signature generator's habit): a rule
that fails adds a note to ``errors`` and the others still run. Rules read only registers, the
mappings, a few words of stack and the faulting instruction.

The classification after a jump to a bad pc follows the outage in DESIGN.md: a ``ret`` to a bad
address leaves the popped value just below ``%rsp`` (``[rsp-8] == rip``); a call through a bad
pointer leaves a return address just after a call instruction at ``[rsp]`` whose operand evaluates
to ``rip``; and a ``ret`` executed with ``%rsp`` 8 bytes off pops the neighbouring slot, leaving the
real return address at ``[rsp]`` (8 low) or ``[rsp-16]`` (8 high) with ``%rsp`` misaligned for a
return site (the SysV x86-64 ABI keeps ``%rsp`` 16-byte aligned at every call, so right after a
correct ``ret`` ``%rsp % 16 == 0`` in code that follows the ABI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from corecensus.coredump import instruction
from corecensus.coredump.notes import AT_ENTRY
from corecensus.coredump.parse import ParsedCore
from corecensus.model import Anomaly

__all__ = ["AnomalyContext", "detect_anomalies"]

SIGBUS = 7
BUS_MCEERR_AR, BUS_MCEERR_AO = 4, 5
SEGV_MAPERR, SEGV_ACCERR = 1, 2
SI_KERNEL = 0x80
# Addresses below this are NULL plus a field offset, never a flipped bit of a real pointer.
NULL_GUARD = 1 << 16
# Highest user-space address bit considered for a flip (x86-64 user space is 47 bits; the 63rd
# bit flip makes a non-canonical address, which is exactly the case worth catching).
MAX_FLIP_BIT = 63
# Linux's default stack_guard_gap (256 pages) and how far from sp a stack-overflow fault may be
# (one frame's locals; a larger frame is probed page by page with -fstack-clash-protection).
GUARD_GAP = 256 * 4096
NEAR_SP = 1 << 16


@dataclass
class AnomalyContext:
    core: ParsedCore
    insn: Any | None = None
    accesses: list[instruction.MemoryAccess] | None = None
    effective_address: int | None = None
    found: list[Anomaly] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    not_a_crash: str | None = None  # why no rule ran: the core is a snapshot, not a crash

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.found)


class AnomalyRule(Protocol):
    name: str

    def applies(self, ctx: AnomalyContext) -> bool: ...

    def run(self, ctx: AnomalyContext) -> None: ...


def _regs(ctx: AnomalyContext) -> dict[str, int]:
    t = ctx.core.crashed
    return dict(t.registers) if t else {}


class PcZero:
    name = "pc_zero"

    def applies(self, ctx: AnomalyContext) -> bool:
        return ctx.core.pc is not None

    def run(self, ctx: AnomalyContext) -> None:
        if ctx.core.pc == 0:
            ctx.found.append(Anomaly("pc_zero", "the instruction pointer is 0"))


# The longest s390 instruction is 6 bytes.
_MAX_INSN_AFTER_ENTRY = 6


class PcNotExecutable:
    name = "pc_not_executable"

    def applies(self, ctx: AnomalyContext) -> bool:
        return bool(ctx.core.pc) and bool(ctx.core.segments)

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        pc = c.pc
        assert pc is not None
        if c.space.is_executable(pc) or c.in_undumped_file(pc):
            return
        if pc == c.auxv.get(AT_ENTRY) and c.space.file_at(pc) is not None:
            # The kernel started the program here, so it executed, whatever the core says of
            # the mapping (a core from a CPU without NX lists text without X; a SIGILL at the
            # very first instruction then looks like a jump into data).
            return
        seg = ctx.core.space.segment_at(pc)
        entry = c.auxv.get(AT_ENTRY)
        if (
            seg is not None
            and entry is not None
            and 0 < pc - entry <= _MAX_INSN_AFTER_ENTRY
            and c.space.segment_at(entry) == seg
        ):
            # The same SIGILL at the entry point, where the kernel reports the pc after the
            # failing instruction: s390 puts the PSW past it (elfutils' testfile67/68, an
            # R-only text 2 bytes past AT_ENTRY, from CPUs without execute protection).
            return
        if seg is None and not c.files and entry is not None and c.space.segment_at(entry) is None:
            # A core with no file list that left out even the executable's own text (trimmed
            # test cores, some gcore versions): where code lives is unknown, not absent.
            return
        where = "in a non-executable mapping" if seg else "in no mapping at all"
        if seg is not None and ctx.core.is_stack(pc):
            where = "in a writable anonymous mapping (stack or heap)"
        ctx.found.append(
            Anomaly("pc_not_executable", f"pc {pc:#x} is {where}", data={"mapped": seg is not None})
        )


class ReturnOrCall:
    """``returned_to_bad_address`` versus a call through a bad pointer; then ``sp_off_by_8``."""

    name = "returned_to_bad_address"

    def applies(self, ctx: AnomalyContext) -> bool:
        c = ctx.core
        return c.arch_name == "x86_64" and c.pc is not None and c.sp is not None

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        pc, sp = c.pc, c.sp
        assert pc is not None and sp is not None
        bad_pc = pc in (0, c.fault_address)
        bad_pc = bad_pc or not (c.space.is_executable(pc) or c.in_undumped_file(pc))
        if not bad_pc:
            return
        regs = _regs(ctx)
        top = c.space.read_word(sp)
        below = c.space.read_word(sp - 8)
        below2 = c.space.read_word(sp - 16)
        call_at_top = instruction.call_before(c.space, top, "x86_64") if top else None
        if call_at_top is not None and _call_target(call_at_top, regs, c) == pc:
            ctx.facts["bad_call"] = {"return_address": top, "call": _insn_text(call_at_top)}
            ctx.notes.append(
                f"call through a bad pointer: [rsp]={top:#x} follows `{_insn_text(call_at_top)}` "
                f"whose target evaluates to pc {pc:#x}"
            )
            return
        if below != pc:
            return
        ctx.found.append(
            Anomaly(
                "returned_to_bad_address",
                f"a `ret` popped {pc:#x}: the word just below rsp ([rsp-8]) equals rip",
                confidence=0.9 if pc == 0 or not c.space.is_mapped(pc) else 0.7,
                data={"popped_from": sp - 8},
            )
        )
        # Where is the real return address? At [rsp] if rsp is 8 low, at [rsp-16] if 8 high.
        for direction, slot, value in (("low", sp, top), ("high", sp - 16, below2)):
            if not value or not c.space.is_executable(value):
                continue
            call = instruction.call_before(c.space, value, "x86_64")
            if call is None:
                continue
            misaligned = sp % 16 == 8
            confidence = 0.9 if misaligned else 0.5
            ctx.found.append(
                Anomaly(
                    "sp_off_by_8",
                    f"rsp is 8 bytes {direction}: the real return address {value:#x} (after "
                    f"`{_insn_text(call)}`) sits at {slot:#x}, the slot next to the one `ret` "
                    f"popped; rsp % 16 = {sp % 16} "
                    + ("(misaligned for a return site, as the ABI forbids)" if misaligned else ""),
                    confidence=confidence,
                    data={"direction": direction, "return_address": value, "slot": slot},
                )
            )
            break


def _insn_text(insn: Any) -> str:
    return f"{insn.mnemonic} {insn.op_str}".strip()


def _call_target(insn: Any, regs: dict[str, int], c: ParsedCore) -> int | None:
    """Where an (indirect) call would go with the crash-time registers."""
    from capstone import x86 as cs_x86

    if not insn.operands:
        return None
    op = insn.operands[0]
    if op.type == cs_x86.X86_OP_IMM:
        return int(op.imm)
    if op.type == cs_x86.X86_OP_REG:
        return instruction.register_value(insn.reg_name(op.reg), regs)
    if op.type == cs_x86.X86_OP_MEM:
        # Memory-indirect: the pointer slot is read with registers as they are now, which is
        # right when nothing ran between the call and the fault (the call faulted at its target).
        accesses = instruction.effective_accesses(insn, {**regs, "rsp": (regs.get("rsp", 0) + 8)})
        if not accesses:
            return None
        return c.space.read_word(accesses[0].address)
    return None


class StackOverflow:
    """Recognise a stack overflow first, so no other rule mistakes its fault for a hardware sign.

    The fault lands in the guard gap just below a stack mapping (Linux keeps ``stack_guard_gap``,
    256 pages = 1 MiB, free below a growing stack since commit 1be7107fbe18 "mm: larger stack
    guard gap, between vmas"), close to ``sp``. ``sp`` itself may still be inside the stack (the
    faulting ``call`` or ``push`` writes to ``sp - 8``) or already in the gap (a ``sub`` moved
    it and a later store faulted), so the rule looks at the fault address, not only at ``sp``.
    """

    name = "stack_overflow"

    def applies(self, ctx: AnomalyContext) -> bool:
        c = ctx.core
        return c.sp is not None and c.fault_address is not None and bool(c.segments)

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        sp, fault = c.sp, c.fault_address
        assert sp is not None and fault is not None
        if c.space.is_mapped(fault) or abs(fault - sp) >= NEAR_SP:
            return
        stack = c.space.segment_above(fault)
        if stack is None or stack.vaddr - fault > GUARD_GAP + NEAR_SP:
            return
        if not c.is_stack(stack.vaddr):
            return
        ctx.facts["stack_overflow"] = True
        ctx.notes.append(
            f"stack overflow: the fault at {fault:#x} lies in the guard gap "
            f"{stack.vaddr - fault:#x} bytes below the stack at {stack.vaddr:#x} (sp {sp:#x})"
        )


class SpOutsideStack:
    name = "sp_outside_stack"

    def applies(self, ctx: AnomalyContext) -> bool:
        return ctx.core.sp is not None and bool(ctx.core.segments)

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        sp = c.sp
        assert sp is not None
        if c.is_stack(sp):
            return
        if ctx.facts.get("stack_overflow"):
            return  # sp in the guard gap below its own stack: the overflow, not a bad pointer
        seg = c.space.segment_at(sp)
        where = "in no mapping" if seg is None else "in a mapping that is not a stack"
        ctx.found.append(
            Anomaly("sp_outside_stack", f"sp {sp:#x} is {where}", data={"mapped": seg is not None})
        )


class FaultAddressMismatch:
    name = "fault_address_mismatch"

    def applies(self, ctx: AnomalyContext) -> bool:
        return ctx.accesses is not None and ctx.core.signal_name in ("SIGSEGV", "SIGBUS")

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        accesses = ctx.accesses or []
        explicit = [a for a in accesses if not a.implicit] or accesses
        fault = c.fault_address
        code = c.si_code
        if not explicit:
            return
        if code == SI_KERNEL or (fault == 0 and code not in (SEGV_MAPERR, SEGV_ACCERR)):
            # General-protection faults (non-canonical addresses) report si_addr 0; the real
            # address is the one the instruction computed.
            non_canonical = [a for a in explicit if not _canonical(a.address)]
            if non_canonical:
                ctx.effective_address = non_canonical[0].address
                ctx.notes.append(
                    f"non-canonical address {non_canonical[0].address:#x} recovered from "
                    f"`{_insn_text(ctx.insn)}` (the kernel reports 0 for such faults)"
                )
            return
        if fault is None or c.pc == fault:
            return  # instruction fetch faults are the pc rules' business
        for a in accesses:
            if a.address <= fault < a.address + max(a.size, 1) or _same_page_span(a, fault):
                ctx.effective_address = a.address
                return
        computed = ", ".join(f"{a.address:#x}" for a in explicit)
        ctx.effective_address = explicit[0].address
        ctx.found.append(
            Anomaly(
                "fault_address_mismatch",
                f"`{_insn_text(ctx.insn)}` accesses {computed} with the saved registers, but the "
                f"kernel reported a fault at {fault:#x}",
                confidence=0.8,
                data={"computed": [a.address for a in explicit], "reported": fault},
            )
        )


def _canonical(addr: int) -> bool:
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1


def _same_page_span(a: instruction.MemoryAccess, fault: int) -> bool:
    # rep movs/stos and vector accesses touch more than op.size; accept a fault within the
    # first 4 KiB after the computed start (same direction as the access).
    return a.address <= fault < a.address + 4096 and a.size >= 8


class BitFlipCandidate:
    name = "bit_flip_candidate"

    def applies(self, ctx: AnomalyContext) -> bool:
        return ctx.core.signal_name in ("SIGSEGV", "SIGBUS") and bool(ctx.core.segments)

    def run(self, ctx: AnomalyContext) -> None:
        c = ctx.core
        addr = ctx.effective_address if ctx.effective_address is not None else c.fault_address
        if addr is None or addr < NULL_GUARD or c.space.is_mapped(addr):
            return
        if ctx.facts.get("stack_overflow"):
            return  # a fault in the guard gap is explained; a nearby mapping is no evidence
        bits = [b for b in range(MAX_FLIP_BIT + 1) if c.space.is_mapped(addr ^ (1 << b))]
        if not bits:
            return
        # Heuristic confidence: a flip of a high bit landing in a mapping is unlikely by chance
        # (user mappings are sparse in a 47-bit space); low bits land near the faulting address
        # anyway. Several candidate bits dilute it.
        best = max(bits)
        base = 0.9 if best >= 32 else 0.7 if best >= 20 else 0.4 if best >= 12 else 0.15
        confidence = round(base / len(bits), 3)
        target = addr ^ (1 << best)
        ctx.found.append(
            Anomaly(
                "bit_flip_candidate",
                f"fault address {addr:#x} is bit {best} away from mapped address {target:#x}",
                confidence=confidence,
                data={"bit": best, "bits": bits, "address": addr, "mapped_address": target},
            )
        )


class SigbusMemoryError:
    name = "sigbus_memory_error"

    def applies(self, ctx: AnomalyContext) -> bool:
        return ctx.core.signal_name == "SIGBUS"

    def run(self, ctx: AnomalyContext) -> None:
        code = ctx.core.si_code
        if code in (BUS_MCEERR_AR, BUS_MCEERR_AO):
            kind = "action required" if code == BUS_MCEERR_AR else "action optional"
            ctx.found.append(
                Anomaly(
                    "sigbus_memory_error",
                    f"SIGBUS from a machine-check memory error ({kind}) at "
                    f"{ctx.core.fault_address or 0:#x}",
                    data={"si_code": code},
                )
            )


ANOMALY_RULES: tuple[AnomalyRule, ...] = (
    StackOverflow(),
    PcZero(),
    PcNotExecutable(),
    ReturnOrCall(),
    SpOutsideStack(),
    FaultAddressMismatch(),
    BitFlipCandidate(),
    SigbusMemoryError(),
)


def detect_anomalies(core: ParsedCore) -> AnomalyContext:
    """Run every rule; a rule that raises adds a note and the rest still run."""
    ctx = AnomalyContext(core)
    ctx.not_a_crash = core.not_a_crash
    if ctx.not_a_crash is not None:
        return ctx
    pc = core.pc
    if core.arch_name == "x86_64" and pc:
        code = core.space.read(pc, 15)
        if code is None:
            # The instruction may end before a mapping boundary.
            code = next((b for n in range(14, 0, -1) if (b := core.space.read(pc, n))), None)
        if code is not None:
            ctx.insn = instruction.decode(code, pc)
            if ctx.insn is not None:
                ctx.accesses = instruction.effective_accesses(ctx.insn, _regs(ctx))
                ctx.facts["instruction"] = _insn_text(ctx.insn)
        else:
            ctx.notes.append(f"code at pc {pc:#x} not available (neither in the core nor a binary)")
    for rule in ANOMALY_RULES:
        try:
            if rule.applies(ctx):
                rule.run(ctx)
        except Exception as exc:  # a broken rule must not hide the other rules' findings
            ctx.notes.append(f"anomaly rule {rule.name} failed: {type(exc).__name__}: {exc}")
    return ctx
