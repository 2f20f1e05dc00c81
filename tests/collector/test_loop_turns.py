"""LoopTurns: each taker has a turn of the event loop of its own, first come first served, and
the loop goes on between them (a real asyncio loop; turns counted by a callback that runs once
in each)."""

from __future__ import annotations

import asyncio
import itertools

from corecensus.collector.turns import LoopTurns


async def _turn_counter(stop: asyncio.Event) -> list[int]:
    """A list whose one item counts the loop's turns (a callback scheduling itself again)."""
    loop = asyncio.get_running_loop()
    count = [0]

    def tick() -> None:
        count[0] += 1
        if not stop.is_set():
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.sleep(0)
    return count


def test_takers_get_turns_of_their_own_in_the_order_they_asked() -> None:
    async def main() -> list[tuple[str, int]]:
        stop = asyncio.Event()
        turns = LoopTurns()
        count = await _turn_counter(stop)
        held: list[tuple[str, int]] = []

        async def taker(name: str) -> None:
            await turns.take()
            held.append((name, count[0]))

        # Five ask in the same turn, then one more later, while the others still wait.
        tasks = [asyncio.create_task(taker(f"t{i}")) for i in range(5)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(taker("late")))
        await asyncio.gather(*tasks)
        stop.set()
        return held

    held = asyncio.run(main())
    assert [name for name, _ in held] == ["t0", "t1", "t2", "t3", "t4", "late"]
    at = [turn for _, turn in held]
    assert len(set(at)) == len(at), held  # never two in one turn
    assert all(b > a for a, b in itertools.pairwise(at)), held


def test_a_lone_taker_goes_at_once_and_a_cancelled_one_does_not_hold_the_rest() -> None:
    async def main() -> list[str]:
        turns = LoopTurns()
        done: list[str] = []
        # Nobody holds a turn: no wait at all (returns in the same turn).
        await turns.take()
        done.append("first")

        async def taker(name: str) -> None:
            await turns.take()
            done.append(name)

        waiting = [asyncio.create_task(taker(n)) for n in ("a", "cancelled", "b")]
        await asyncio.sleep(0)  # all three wait behind "first"'s turn
        waiting[1].cancel()
        await asyncio.wait_for(asyncio.gather(waiting[0], waiting[2]), 30)
        # Once nobody waits, the turns are free again.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.wait_for(turns.take(), 30)
        done.append("again")
        return done

    assert asyncio.run(main()) == ["first", "a", "b", "again"]
