"""gdb (batch mode) script: deliver SIGUSR2 at the racy instruction of _Ux86_64_setcontext.

The instruction is found, not hard-coded: the first one after the `mov ...,%rsp` that switches
to the landing pad's stack (libunwind 1.6.2: _Ux86_64_setcontext+82, `mov 0xa8(%rdi),%rcx`,
which reads the target %rip from the context the switch left below %rsp).  gdb stops there on
the first throw, delivers SIGUSR2 with `signal`, and stops again at the next instruction (the
`push` of the %rip just read back from the context) to see what the signal frame left there.
When that is 0 (what the frame's fpstate leaves on the CPUs seen so far) it passes the SIGSEGV
that follows, so the process dies and the kernel writes its core.  When the frame left the slot
alone or wrote something else (where the slot falls depends on the CPU's XSAVE layout: see
throw_loop.cc's PAD), it kills the process instead of letting it run on, so the caller can try
another padding.  Prints ``RACE_FACTS {json}`` and then ``RACE_TARGET 0x...``.

Environment: RACE_EXE, RACE_ARGS (space separated).
"""

import json
import os

import gdb

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set breakpoint pending on")
gdb.execute("handle SIGUSR2 nostop noprint pass")
gdb.execute("handle SIGSEGV nostop noprint pass")
gdb.execute(f"file {os.environ['RACE_EXE']}")
gdb.execute("break _Ux86_64_setcontext")
gdb.execute(f"run {os.environ.get('RACE_ARGS', '')}")
frame = gdb.selected_frame()
start = int(gdb.parse_and_eval("(long)&_Ux86_64_setcontext")) & (2**64 - 1)
arch = frame.architecture()
window = None
for insn in arch.disassemble(start, count=64):
    if window is not None:
        window = insn["addr"]
        break
    if insn["asm"].replace(" ", "").endswith(",%rsp") and insn["asm"].startswith("mov"):
        window = -1
if window is None or window < 0:
    raise gdb.GdbError("no `mov ...,%rsp` in _Ux86_64_setcontext")
gdb.execute("delete")
gdb.execute(f"tbreak *{window:#x}")
gdb.execute("continue")
rsp = int(gdb.parse_and_eval("$rsp")) & (2**64 - 1)
facts = {"function_start": start, "interrupted_pc": window, "interrupted_sp": rsp}
print("RACE_FACTS " + json.dumps(facts), flush=True)
push = arch.disassemble(window, count=2)[1]["addr"]
gdb.execute(f"tbreak *{push:#x}")
gdb.execute("signal SIGUSR2")
target = int(gdb.parse_and_eval("$rcx")) & (2**64 - 1)
print(f"RACE_TARGET {target:#x}", flush=True)
if target == 0:
    gdb.execute("continue")
else:
    gdb.execute("kill")
