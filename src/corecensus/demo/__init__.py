"""``corecensus demo``: a small fleet of real crashing programs, end to end."""

from __future__ import annotations

from corecensus.demo.run import DemoRun, analyze_demo, run_demo

__all__ = ["DemoRun", "analyze_demo", "run_demo"]
