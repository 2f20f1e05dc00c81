"""Turns of the event loop, one holder each, in the order they asked (the front end's bodies
decoded on its loop).

A body decoded on the loop holds every other callback for as long as it takes (2-4 ms for 20
records of 10 KB), so the bodies that arrive together must not all be decoded in one turn: the
loop would not look at its sockets, nor answer the door, until the last of them was done (a
turn's callbacks run before the next poll). :class:`LoopTurns` gives each one a turn of its
own, first come first served, and the loop polls between them. Before, the bodies past the
first of a turn went to a decode thread: a hand-off each way (the executor's queue, the
loop's self-pipe, the interpreter lock passed between threads), 7 % of a front end's CPU at
capacity (py-spy), for no parallelism under one interpreter lock.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["LoopTurns"]


class LoopTurns:
    """:meth:`take` returns in a turn of the running loop that no other taker had."""

    def __init__(self) -> None:
        self._taken = False  # this turn's (or the next's, once granted) has a holder
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._taken and not self._waiting:
            self._taken = True
            loop.call_soon(self._passed)
            return
        waiter = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _passed(self) -> None:
        """The holder's turn is over: the next taker's (its task wakes up in the turn after
        this one, and this is called again in that turn, after it), or nobody's."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # (a taker cancelled while it waited)
                waiter.set_result(None)
                asyncio.get_running_loop().call_soon(self._passed)
                return
        self._taken = False
