"""``python -m corecensus``."""

from __future__ import annotations

from corecensus.cli.main import main

raise SystemExit(main())
