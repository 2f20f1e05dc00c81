# Run by gdb -batch on a core: print the crashing thread's frames, the file mappings (from the
# core's NT_FILE note), build ids and the code addresses near the stack pointer, as JSON.
import json
import os

import gdb

out = {"frames": [], "mappings": [], "build_ids": {}, "stack": [], "sp": None}
out["signal"] = int(gdb.parse_and_eval("$_siginfo.si_signo"))
for objfile in gdb.objfiles():
    if objfile.filename and objfile.build_id:
        out["build_ids"][os.path.realpath(objfile.filename)] = objfile.build_id
text = gdb.execute("info proc mappings", to_string=True)
for line in text.splitlines():
    parts = line.split()
    if len(parts) >= 5 and parts[0].startswith("0x") and parts[-1].startswith("/"):
        start, end, _size, offset = (int(p, 16) for p in parts[:4])
        out["mappings"].append([start, end, offset, os.path.realpath(parts[-1])])
frame = gdb.newest_frame()
while frame is not None and len(out["frames"]) < 64:
    out["frames"].append([frame.pc(), frame.name()])
    frame = frame.older()
sp = int(gdb.parse_and_eval("$sp"))
out["sp"] = sp
inferior = gdb.selected_inferior()
for offset in range(-64, 256, 8):
    try:
        word = int.from_bytes(bytes(inferior.read_memory(sp + offset, 8)), "little")
    except gdb.MemoryError:
        continue
    symbol = gdb.execute(f"info symbol {word:#x}", to_string=True).strip()
    # "dispatch(int) + 11 in section .text of /path": keep code addresses only.
    if symbol.startswith("No symbol") or " in section .text" not in symbol:
        continue
    name = symbol.split(" in section ")[0].rsplit(" + ", 1)[0]
    out["stack"].append([offset, word, name])
print("JSON:" + json.dumps(out))
