"""The fault plan, drawn from the seeded RNG: which faults fire after how many started orders, and
which orders an operator cancels when."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import Optional

SCENARIOS = ("workers", "stalls", "graceful", "database", "web")
# Faults fire between these shares of the orders started, so that orders are in flight before,
# during and after each of them.
FAULT_WINDOW = (0.1, 0.8)
RESTART_PAUSE_SECONDS = (0.5, 2.0)
# A stalled worker is frozen (SIGSTOP) longer than the 2-s workflow task timeout, so that its
# tasks time out and its replica takes them over while its own attempts are still in flight,
# to complete when it wakes (SIGCONT).
STALL_SECONDS = (2.5, 4.0)
# An operator's cancel comes this long after the order's start answered: an order takes about
# 0.5 to 2 s from there under the fault test's load, so cancels land before the approval, while
# charging, while shipping and after the end.
CANCEL_AFTER_SECONDS = (0.0, 1.5)


@dataclass
class Fault:
    action: str  # kill, stall, graceful, database, web
    target: str
    after_started: int
    """Fires once this many orders have been started."""
    pause: float
    """Seconds between stopping the process and starting it again (stall: frozen)."""

    @property
    def label(self) -> str:
        return {
            "kill": f"SIGKILL {self.target}",
            "stall": f"SIGSTOP {self.target} for {self.pause:.1f} s",
            "graceful": f"SIGTERM {self.target}",
            "database": "restart PostgreSQL",
            "web": "restart web",
        }[self.action]


def plan_faults(rng: random.Random, args: argparse.Namespace) -> list[Fault]:
    wanted: list[tuple[str, str]] = []
    if "workers" in args.scenarios:
        wanted += [("kill", "order-worker"), ("kill", "shipping-worker")] * args.kills
    if "stalls" in args.scenarios:
        # The second replicas: the kills take the first ones, and the two kinds of fault may
        # overlap (see scripts/faults/run.py inject_faults).
        wanted += [("stall", "order-worker-2"), ("stall", "shipping-worker-2")] * args.stalls
    if "graceful" in args.scenarios:
        wanted.append(("graceful", "order-worker"))
    if "database" in args.scenarios:
        wanted += [("database", "postgres")] * args.database_restarts
    if "web" in args.scenarios:
        wanted += [("web", "web")] * args.web_restarts
    rng.shuffle(wanted)
    # One random moment in each of len(wanted) equal slices of the window, so that the faults
    # are spread over the run rather than bunched.
    low, high = (share * args.orders for share in FAULT_WINDOW)
    slice_width = (high - low) / max(1, len(wanted))
    moments = [
        max(1, round(low + (index + rng.random()) * slice_width)) for index in range(len(wanted))
    ]
    return [
        Fault(action, target, moment, rng.uniform(*(STALL_SECONDS if action == "stall" else RESTART_PAUSE_SECONDS)))
        for (action, target), moment in zip(wanted, moments)
    ]


def plan_cancels(rng: random.Random, args: argparse.Namespace) -> list[Optional[float]]:
    """For each order, the seconds after its approval at which an operator cancels it, or None
    (for about `args.cancel_share` of the orders, a time)."""
    return [
        rng.uniform(*CANCEL_AFTER_SECONDS) if rng.random() < args.cancel_share else None
        for _ in range(args.orders)
    ]
