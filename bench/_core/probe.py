"""Child process for core_bench: one fresh interpreter per memory or cold-start measurement.

    python bench/_core/probe.py MODE CORE

MODE is ``import`` / ``import_drgn`` (import what the register / full pass needs and parse
nothing: the interpreter baseline), ``reg`` (one register-and-anomaly pass), ``full`` (one full
symbolized pass), ``drgn`` (one "drgn alone" backtrace, see :func:`drgn_alone`) or ``cold``
(import, then two calls of each pass, each timed). Prints one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any


def drgn_alone(core: str, phases: dict[str, list[float]] | None = None) -> list[str | None]:
    """The peer "drgn alone": drgn's own documented way to a named backtrace of a core.

    Same work as corecensus's full pass minus everything corecensus adds (notes, anomalies, stack
    window): open the core, load debug info for every loaded module with drgn's default finders,
    unwind the crashed thread, name each frame (DWARF name, else the ELF symbol). ``phases``
    collects the seconds spent in ``load_debug_info``.
    """
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(core)
    t = time.perf_counter()
    # Raised when any module lacks debug info (here the vDSO); drgn still has the rest.
    with contextlib.suppress(drgn.MissingDebugInfoError):
        prog.load_debug_info(default=True)
    if phases is not None:
        phases.setdefault("load_debug_info", []).append(time.perf_counter() - t)
    names: list[str | None] = []
    for frame in prog.crashed_thread().stack_trace():
        try:
            pc = frame.pc
        except LookupError:
            break  # drgn ends a trace with a pc-less frame
        name = frame.name
        if name is None:
            try:
                name = prog.symbol(pc).name
            except LookupError:
                name = None
        names.append(name)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, core = argv[1], argv[2]
    # drgn logs one warning per module without debug info; corecensus silences it too.
    logging.getLogger("drgn").setLevel(logging.ERROR)
    out: dict[str, Any] = {"mode": mode}
    t0 = time.perf_counter()
    from corecensus.coredump import inspect_core

    if mode == "import_drgn":
        import drgn  # noqa: F401 - the full pass imports it lazily; count it in its baseline

    out["import_s"] = time.perf_counter() - t0
    if mode == "reg":
        out["functions"] = [f.function for f in inspect_core(core, symbolize=False).frames]
    elif mode == "full":
        out["functions"] = [f.function for f in inspect_core(core).frames]
    elif mode == "drgn":
        out["functions"] = drgn_alone(core)
    elif mode == "cold":
        for key, sym in (
            ("reg1_s", False),
            ("reg2_s", False),
            ("full1_s", True),
            ("full2_s", True),
        ):
            t = time.perf_counter()
            inspect_core(core, symbolize=sym)
            out[key] = time.perf_counter() - t
    elif mode not in ("import", "import_drgn"):
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
