"""Crash records shaped like the coredump layer's, for store tests."""

from __future__ import annotations

from collections.abc import Iterable

from corecensus.model import (
    Anomaly,
    CrashRecord,
    Frame,
    MappedFile,
    ParseStatus,
    StackWord,
)
from corecensus.pipeline import sign_records
from corecensus.store import CrashRow

EXE_BUILD_ID = "5f1c2a9e0d4b7c3a8e6f1b2d3c4a5e6f7a8b9c0d"
LIBC_BUILD_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f9011223344"
EXE_BASE = 0x5555_5555_4000
LIBC_BASE = 0x7F3A_1C00_0000
T0 = 1_700_000_000_000_000


def make_record(
    i: int,
    *,
    host: str | None = None,
    function: str = "Server::handle",
    anomalies: tuple[str, ...] = (),
    null_pc: bool = False,
    time_us: int | None = None,
) -> CrashRecord:
    """A record as the coredump layer produces it for a crash in ``function`` of /usr/bin/svc."""
    modules = (
        MappedFile("/usr/bin/svc", EXE_BASE, EXE_BASE + 0x20000, 0x1000, EXE_BUILD_ID, True),
        MappedFile(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            LIBC_BASE,
            LIBC_BASE + 0x180000,
            0x28000,
            LIBC_BUILD_ID,
            True,
        ),
    )
    if null_pc:
        frames: tuple[Frame, ...] = (Frame(0),)
        window: tuple[StackWord, ...] = (
            StackWord(0, EXE_BASE + 0x1234, function, "/usr/bin/svc", 0x2234, True),
        )
    else:
        frames = (
            Frame(EXE_BASE + 0x1200, function, "/usr/bin/svc"),
            Frame(EXE_BASE + 0x1800, "main", "/usr/bin/svc"),
            Frame(LIBC_BASE + 0x2000, "__libc_start_call_main", "libc.so.6"),
        )
        window = ()
    meta = {
        "COREDUMP_HOSTNAME": host or f"host-{i % 7}",
        "COREDUMP_TIMESTAMP": str(time_us if time_us is not None else T0 + i * 1_000_000),
        "COREDUMP_PID": str(1000 + i),
        "CORECENSUS_CPU_MODEL": "Intel(R) Xeon(R) Gold 6148",
        "CORECENSUS_MICROCODE": "0x2006e05",
        "CORECENSUS_KERNEL": "6.1.0-18-amd64",
        "CORECENSUS_SERVICE": "svc",
        "CORECENSUS_VERSION": f"1.{i % 3}.0",
    }
    return CrashRecord(
        core_id=f"{i:064x}",
        status=ParseStatus.OK,
        source=f"/var/crash/core.{i}",
        arch="x86_64",
        pid=1000 + i,
        comm="svc",
        exe="/usr/bin/svc",
        signal=11,
        signal_name="SIGSEGV",
        si_code=1,
        fault_address=0 if null_pc else 0x10,
        crashed_tid=1000 + i,
        threads=4,
        registers={"rip": frames[0].pc, "rsp": 0x7FFD_0000_1000 - 8 * (i % 5)},
        modules=modules,
        frames=frames,
        anomalies=tuple(Anomaly(name, f"{name} seen") for name in anomalies),
        stack_window=window,
        cpu=i % 16,
        writer="kernel",
        metadata=meta,
    )


def rows(records: Iterable[CrashRecord]) -> list[CrashRow]:
    """Records signed by the pipeline, as the application layer hands them to a store."""
    return list(sign_records(records))
