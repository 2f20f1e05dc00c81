"""gdb (batch mode) script: deliver SIGUSR2 at the racy instruction of _Ux86_64_setcontext.

The instruction is found, not hard-coded: the first one after the `mov ...,%rsp` that switches
to the landing pad's stack (libunwind 1.6.2: _Ux86_64_setcontext+82, `mov 0xa8(%rdi),%rcx`,
which reads the target %rip from the context the switch left below %rsp).  gdb stops there on
the first throw, delivers SIGUSR2 with `signal`, and passes the SIGSEGV that follows, so the
process dies and the kernel writes its core.  Prints one line ``RACE_FACTS {json}``.

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
gdb.execute("signal SIGUSR2")
