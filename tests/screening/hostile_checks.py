"""Checks that misbehave on purpose, registered only by the tests (never by the product).

They prove that the screen survives its workers: a check that never returns must become
``timed_out`` and a check that kills its process must become ``crashed``, and the screen must
still return on time.
"""

from __future__ import annotations

import os
import signal
import time

from corecensus.screening.checks import CheckContext, Observation, digest


class SleepsForever:
    name = "sleeps_forever"
    family = "test-hang"
    description = "never returns"

    def run(self, ctx: CheckContext) -> Observation:
        while True:
            time.sleep(3600)


class AbortsOnCpu:
    """Calls abort() on the CPU named by env HOSTILE_ABORT_CPU (every CPU when unset)."""

    name = "aborts"
    family = "test-crash"
    description = "raises SIGABRT"

    def run(self, ctx: CheckContext) -> Observation:
        target = os.environ.get("HOSTILE_ABORT_CPU")
        if target is None or int(target) == ctx.cpu:
            os.abort()
        return Observation(True, "no abort", "no abort", digest("aborts"))


class AbortsWhenLoaded:
    """Kills the worker while it loads its checks, before anything ran."""

    name = "aborts_when_loaded"
    family = "test-crash"
    description = "abort() in the constructor"

    def __init__(self) -> None:
        os.abort()

    def run(self, ctx: CheckContext) -> Observation:
        raise AssertionError("unreachable")


class KillsItself:
    name = "kills_itself"
    family = "test-crash"
    description = "SIGKILLs its own process"

    def run(self, ctx: CheckContext) -> Observation:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class PrintsToStdout:
    """Writes junk to stdout: it must not break the worker protocol."""

    name = "prints"
    family = "test-noise"
    description = "prints to stdout"

    def run(self, ctx: CheckContext) -> Observation:
        print('{"event": "done"} not protocol', flush=True)
        os.write(1, b"raw junk on fd 1\n")
        return Observation(True, "quiet", "quiet", digest("prints"))
