"""The uploads' answers, made without Starlette, are the bytes and headers Starlette's
JSONResponse makes of the same document (the reading routes still use it)."""

from __future__ import annotations

from starlette.responses import JSONResponse

from corecensus.collector.server import _Answer
from corecensus.ingest.wire import BatchAck, RecordProblem, RejectReason

# Every code point a str can hold in an answer (a surrogate alone cannot be UTF-8 either way).
EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


def test_every_character_is_written_as_starlette_writes_it() -> None:
    doc = {"error": "bad_envelope", "detail": EVERY_CHARACTER, "indices": [0, 7, 2**40]}
    ours = _Answer.json(422, doc)
    theirs = JSONResponse(doc, status_code=422)
    assert ours.body == theirs.body
    assert ours.headers == theirs.raw_headers


def test_acks_and_refusals_with_their_headers() -> None:
    ack = BatchAck(2, (RecordProblem(1, RejectReason.SCHEMA, 'frames[3].pc: "x"\n\u2028'),))
    headers = {"Retry-After": "3", "WWW-Authenticate": 'Bearer realm="corecensus"'}
    cases = [
        (200, BatchAck(20, ()).to_json(), None),
        (422, ack.to_json(), None),
        (
            503,
            {"error": "overloaded", "detail": "d", "records_ahead": 9, "retry_after_s": 3},
            headers,
        ),
        (401, {"error": "unauthenticated", "detail": "d"}, {}),
    ]
    for status, doc, given in cases:
        ours = _Answer.json(status, doc, given)
        theirs = JSONResponse(doc, status_code=status, headers=given)
        assert (ours.status, ours.body, ours.headers) == (
            theirs.status_code,
            theirs.body,
            theirs.raw_headers,
        )
