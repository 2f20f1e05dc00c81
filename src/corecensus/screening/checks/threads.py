"""A multi-threaded shared counter: locks, atomics and cache-line hand-offs between threads.

Several threads of the worker (all pinned to the CPU under test, so they preempt one another on
it) increment a shared counter under a lock, push numbered items through a queue, and meet at a
barrier each round. The total, the queue's sum and the round count are known exactly; a lost or
doubled update (a lock or compare-and-swap that misbehaves) changes them.
"""

from __future__ import annotations

import queue
import threading

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["SharedCounter"]


class SharedCounter:
    name = "shared_counter"
    family = "threads"
    description = "threads increment a locked counter, pass items through a queue, meet at barriers"

    def run(self, ctx: CheckContext) -> Observation:
        nthreads = 4
        per_thread = ctx.units(4000, minimum=50)
        rounds = ctx.units(8, minimum=2)
        counter = [0]
        lock = threading.Lock()
        items: queue.SimpleQueue[int] = queue.SimpleQueue()
        barrier = threading.Barrier(nthreads)
        passed_rounds = [0] * nthreads
        errors: list[str] = []

        def worker(tid: int) -> None:
            try:
                chunk = per_thread // rounds
                for r in range(rounds):
                    for i in range(chunk):
                        with lock:
                            counter[0] += 1
                        if i % 16 == 0:
                            items.put(tid * 1_000_000 + r * chunk + i)
                    barrier.wait(timeout=30)
                    passed_rounds[tid] += 1
            except Exception as exc:  # a broken barrier or lock: reported, not raised
                errors.append(f"thread {tid}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        chunk = per_thread // rounds
        tally = Tally(f"{nthreads} threads x {rounds} rounds x {chunk} locked increments")
        tally.expect("thread errors", [], errors)
        tally.expect("counter", nthreads * rounds * chunk, counter[0])
        got: list[int] = []
        while True:
            try:
                got.append(items.get_nowait())
            except queue.Empty:
                break
        want = sorted(
            t * 1_000_000 + r * chunk + i
            for t in range(nthreads)
            for r in range(rounds)
            for i in range(0, chunk, 16)
        )
        tally.expect("queue items", want, sorted(got))
        tally.expect("barrier rounds", [rounds] * nthreads, passed_rounds)
        tally.feed(counter[0], sum(got), len(got))
        return tally.observation()
