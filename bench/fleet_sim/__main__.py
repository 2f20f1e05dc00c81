"""``python -m bench.fleet_sim``."""

from bench.fleet_sim.run import main

raise SystemExit(main())
