"""Driving a running Order Lifecycle system from outside, for scripts/benchmark.py and scripts/fault_test.py."""
