"""Fleet simulator: the benchmark for detection quality (see run.py)."""
