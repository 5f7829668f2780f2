"""The parts of scripts/benchmark.py: timed orders, board probes, worker metrics, figures and report."""
