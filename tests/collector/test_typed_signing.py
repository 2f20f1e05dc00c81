"""The collector's signer of typed records: the rows it makes are the rows sign_records makes of
the same records (real cores), its cache is keyed by everything the signature rules read (a
change anywhere else signs the same; a change there is a miss), and store_uploads stores both
kinds of record alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from tests.store.store_records import make_record

from corecensus.app.uploads import UploadGroup, store_uploads
from corecensus.collector.journal import journal_rows, piece_rows
from corecensus.coredump import inspect_core
from corecensus.ingest.wire import RecordKind, WireLimits, encode_batch
from corecensus.ingest.wire_typed import typed_crashes
from corecensus.model import (
    Anomaly,
    CrashRecord,
    Frame,
    MappedFile,
    ParseStatus,
    SignalFrame,
)
from corecensus.signature import compute_signatures
from corecensus.signing import TypedSigner, sign_records
from corecensus.store import CrashRow, open_store

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "x86_64"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if (p / "core.zst").is_file())


def _real(name: str, samples: Path = SAMPLES) -> CrashRecord:
    if samples == SAMPLES:
        rec = inspect_core(SAMPLES / name / "core.zst", binaries=[SAMPLES / name])
    else:
        rec = inspect_core(samples / name, binaries=[samples])
    meta = {
        **rec.metadata,
        "COREDUMP_HOSTNAME": "web-1",
        "COREDUMP_TIMESTAMP": "17",
        "CORECENSUS_CPU": "3",
    }
    return dataclasses.replace(rec, metadata=meta)


def _typed(records: list[CrashRecord]) -> list[Any]:
    batch = typed_crashes(encode_batch(RecordKind.CRASHES, records), WireLimits())
    assert batch is not None
    return [r.value for r in batch.records]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_typed_rows_are_the_rows_of_the_same_records(name: str) -> None:
    records = [_real(name), make_record(3, anomalies=("sp_off_by_8",), host="web-2")]
    signer = TypedSigner()
    for typed_row, row in zip(signer.rows(_typed(records)), sign_records(records), strict=True):
        assert dataclasses.replace(typed_row, record_json="") == dataclasses.replace(
            row, record_json=""
        )
        # The JSON text is spelled differently (defaults left out), and reads back the same.
        assert CrashRecord.from_json(json.loads(typed_row.record_json)) == CrashRecord.from_json(
            json.loads(row.record_json)
        )


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_rows_made_for_the_journal_are_its_bytes_of_the_same_rows(name: str) -> None:
    """The collector's rows (JournalCrashRow) are encoded for its journal as the CrashRows of
    the same records are, byte for byte, and read back as those CrashRows."""
    records = [_real(name), make_record(3, anomalies=("sp_off_by_8",), host="web-2")]
    typed = _typed(records)
    rows, made = list(TypedSigner().rows(typed)), TypedSigner().journal_rows(typed)
    assert not any(isinstance(r, CrashRow) for r in made)
    encoded = journal_rows(RecordKind.CRASHES, made)
    assert encoded == journal_rows(RecordKind.CRASHES, rows)
    assert piece_rows(encoded) == rows


# Fields the signature rules do not read, each changed in a way a real fleet changes it.
_ELSEWHERE = {
    "pid": 4242,
    "cmdline": "/usr/bin/other --flag",
    "crashed_tid": 4243,
    "cpu": 5,
    "fault_address": 0xDEAD,
    "si_code": 2,
    "instruction": "mov (%rax),%eax",
    "threads": 9,
}


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_what_the_rules_do_not_read_does_not_change_a_signature(name: str) -> None:
    rec = _real(name)
    regs = dict(rec.registers)
    regs.update({r: v ^ 8 for r, v in regs.items() if r not in ("rsp", "sp", "esp", "r13")})
    others = [
        dataclasses.replace(rec, **{field: value}) for field, value in _ELSEWHERE.items()
    ] + [
        dataclasses.replace(rec, registers=regs),
        dataclasses.replace(rec, threads_detail=()),
        dataclasses.replace(rec, core_id="another-crash"),
        dataclasses.replace(rec, metadata={**rec.metadata, "COREDUMP_HOSTNAME": "web-9",
                                           "COREDUMP_TIMESTAMP": "99", "COREDUMP_PID": "7"}),
    ]  # fmt: skip
    signer = TypedSigner()
    rows = list(signer.rows(_typed([rec, *others])))
    assert (signer.misses, signer.hits) == (1, len(others))  # one computation for all
    for other, row in zip(others, rows[1:], strict=True):
        # The cached signature is the one the rules give the changed record itself.
        assert row.signature.sig_symbolic == compute_signatures(other).symbolic
        assert row.signature.sig_address == compute_signatures(other).address
        assert row.signature.pop_symbolic == rows[0].signature.pop_symbolic


def test_what_the_rules_read_is_a_new_computation() -> None:
    rec = make_record(1)
    moved = dataclasses.replace(rec, frames=rec.frames[1:])
    renamed = dataclasses.replace(rec, exe="/usr/bin/other")
    anomalous = make_record(1, anomalies=("sp_off_by_8",))
    signer = TypedSigner()
    rows = list(signer.rows(_typed([rec, moved, renamed, anomalous, rec])))
    assert (signer.misses, signer.hits) == (4, 1)
    assert len({(r.signature.sig_address, r.signature.sig_anomaly_class) for r in rows[:4]}) == 4


def test_the_cache_keeps_the_latest_entries_only() -> None:
    signer = TypedSigner(max_entries=2)
    records = [make_record(1, function=f"f{i}") for i in range(3)]
    list(signer.rows(_typed([*records, records[2], records[0]])))
    # f0, f1, f2 computed; f2 found; f0 had been dropped (only two kept): computed again.
    assert (signer.misses, signer.hits) == (4, 1)


def test_store_uploads_stores_checked_and_typed_records_alike(tmp_path: Path) -> None:
    checked = [make_record(i, host="web-1") for i in range(3)]
    typed = _typed([make_record(i, host="web-2") for i in range(3, 6)])
    with open_store(tmp_path / "s.duckdb") as store:
        counts = store_uploads(store, UploadGroup(crashes=[*checked, *typed]), TypedSigner())
        assert (counts.crashes.new, counts.crashes.duplicate) == (6, 0)
        again = store_uploads(store, UploadGroup(crashes=typed))
        assert (again.crashes.new, again.crashes.duplicate) == (0, 3)
        stored = {r.core_id: r for r in store.iter_crashes()}
    assert set(stored) == {r.core_id for r in checked} | {t.core_id for t in typed}
    assert stored[checked[0].core_id] == checked[0]
    assert stored[typed[0].core_id] == make_record(3, host="web-2")


DEMO_SAMPLES = Path(__file__).resolve().parents[2] / "src" / "corecensus" / "demo" / "samples"


def _shifted(rec: CrashRecord, code: int, stack: int) -> CrashRecord:
    """``rec`` as another run of the same program would leave it under ASLR: every module
    loaded ``code`` bytes further, the stack ``stack`` bytes further."""
    regs = {r: v + (stack if r in ("rsp", "rbp") else code if r == "rip" else 0)
            for r, v in rec.registers.items()}  # fmt: skip
    return dataclasses.replace(
        rec,
        registers=regs,
        modules=tuple(dataclasses.replace(m, base=m.base + code, end=m.end + code)
                      for m in rec.modules),
        frames=tuple(dataclasses.replace(f, pc=f.pc + code) if f.pc else f for f in rec.frames),
        stack_window=tuple(dataclasses.replace(w, address=w.address + code)
                           for w in rec.stack_window),
        signal_frames=tuple(
            dataclasses.replace(
                s, interrupted_pc=s.interrupted_pc + code,
                interrupted_sp=None if s.interrupted_sp is None else s.interrupted_sp + stack,
            )
            for s in rec.signal_frames
        ),
    )  # fmt: skip


def _corpus() -> list[CrashRecord]:
    """Real crashes (the test samples and the demo's) and what a fleet makes of them: other
    load addresses, a failed unwind (the stack window signs), a return to NULL, no executable
    path or signal number, a core that did not parse, a signal race, anomalies."""
    real = [_real(name) for name in SAMPLE_NAMES]
    real += [_real(p.name, DEMO_SAMPLES) for p in sorted(DEMO_SAMPLES.glob("*.core.zst"))]
    lib = MappedFile("/usr/lib/libunwind.so.8", 0x7F00_0000_0000, 0x7F00_0001_0000, 0, "ab" * 20)
    sp = 0x7FFF_0000_1000
    race = CrashRecord(  # libunwind's race (tests/signature/test_signature_race.py)
        core_id="race",
        status=ParseStatus.OK,
        exe="/srv/app",
        signal=11,
        registers={"rip": 0, "rsp": sp},
        modules=(lib,),
        anomalies=(Anomaly("pc_zero", ""), Anomaly("returned_to_bad_address", "")),
        signal_frames=(
            SignalFrame(
                -3000, lib.base + 0x53D4, "_Ux86_64_setcontext", sp, None, 0x52, lib.path, 0x53D4
            ),
        ),
        metadata={"COREDUMP_HOSTNAME": "web-1"},
    )
    real.append(race)
    out: list[CrashRecord] = []
    for i, rec in enumerate(real):
        out += [
            rec,
            _shifted(rec, 0x1000 * (i + 1), 0x10 * (i + 3)),
            dataclasses.replace(rec, frames=()),
            dataclasses.replace(rec, exe=None, signal=None),  # the comm and the signal's name
            dataclasses.replace(rec, frames=(Frame(0), *rec.frames[1:])),
            dataclasses.replace(
                rec, frames=tuple(dataclasses.replace(f, recovered=True) for f in rec.frames)
            ),
        ]
    out += [
        make_record(1, anomalies=("sp_off_by_8",)),
        make_record(2, null_pc=True, anomalies=("pc_zero", "returned_to_bad_address")),
        dataclasses.replace(
            make_record(3), status=ParseStatus.UNPARSED, frames=(), stack_window=()
        ),
    ]
    return [dataclasses.replace(r, core_id=f"corpus-{i}") for i, r in enumerate(out)]


def test_a_cache_miss_signs_as_the_whole_record_does() -> None:
    """A miss signs the part of the record the rules read, built from the typed crash; every
    crash of the corpus is signed exactly as the rules sign the whole record (the reference
    path: sign_records, which reads the record itself), notes and all."""
    corpus = _corpus()
    assert any(r.signal_frames for r in corpus) and any(r.stack_window for r in corpus)
    typed_rows = [TypedSigner().row(crash) for crash in _typed(corpus)]  # each a miss
    reference = list(sign_records(corpus))
    for rec, fast, slow in zip(corpus, typed_rows, reference, strict=True):
        assert fast.signature == slow.signature, rec.core_id
    # The variants are not all one signature: the corpus exercises the rules' branches.
    assert len({r.signature.sig_address for r in reference}) > len(SAMPLE_NAMES)
    assert any(r.signature.sig_unwind_failed for r in reference)
    assert any(r.signature.sig_symbolic.startswith("signal race in ") for r in reference)
