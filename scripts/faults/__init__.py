"""The parts of scripts/fault_test.py: a system of its own, the fault plan, the run and the invariants."""
