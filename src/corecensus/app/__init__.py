"""The application layer: the use cases every front end calls (the CLI, the demo, the collector,
the report, backfill). Each is a plain function that returns a dataclass and prints nothing:

- :mod:`corecensus.app.ingest`: core files, or records parsed elsewhere, into the store;
- :mod:`corecensus.app.reprocess`: re-sign stored crashes after a rule change;
- :mod:`corecensus.app.analyze`: the store (+ exposure + deploys) into the analysis contract;
- :mod:`corecensus.app.screen`: screen this host's CPUs and record the result.

Submodules are imported by their users (``from corecensus.app.ingest import ...``), so a front
end pays only for the use cases it runs.
"""
