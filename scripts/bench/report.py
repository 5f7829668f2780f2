"""The benchmark's printed summary with its verdict on each target, and its latency histogram."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scripts.bench.orders import PROMISE_SECONDS, OrderRecord
from scripts.bench.summary import TARGETS
from scripts.drive.tables import table


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report(
    summary: dict[str, Any], cpu: dict[str, float], board: dict[str, Any],
    args: argparse.Namespace,
) -> tuple[str, list[dict[str, Any]]]:
    wall = summary["wall_seconds"]
    workflow, client = summary["workflow_latency_s"], summary["client_latency_s"]
    rows = [
        ("orders / in flight", f"{summary['orders']} / {args.concurrency}"),
        ("states", ", ".join(f"{state} {n}" for state, n in sorted(summary["states"].items()))),
        ("terminal within deadline", f"{summary['within_promise']} ({fmt(summary['within_promise_pct'], 1)} %)"),
        ("failed / cancelled", f"{summary['failed']} / {summary['cancelled']}"),
        *[(f"  {reason}", str(n)) for reason, n in sorted(summary["reasons"].items())],
        ("latency workflow p50/p90/p99/max s",
         " / ".join(fmt(workflow[k]) for k in ("p50", "p90", "p99", "max"))),
        ("latency client p50/p90/p99/max s",
         " / ".join(fmt(client[k]) for k in ("p50", "p90", "p99", "max"))),
        ("client-seen, first request to end, p50/p90/p99/max s",
         " / ".join(fmt(summary["total_latency_s"][k]) for k in ("p50", "p90", "p99", "max"))
         + f"  ({summary['gave_up']} gave up after {args.give_up_seconds:g} s)"),
        ("start answered after p50/p99/max s",
         " / ".join(fmt(summary["start_answer_s"][k]) for k in ("p50", "p99", "max"))
         + "  (waiting for a place included)"),
        ("wall time s", fmt(wall)),
        (f"status requests (wait={args.wait_seconds:g} s) / errors",
         f"{summary['status_requests']} / {summary['status_errors']}"),
        ("throughput orders/s", fmt(summary["orders_per_second"])),
        *[(f"  floor ({shape} activities): orders/s, p50 / p99 s, product's share",
           f"{fmt(figures['orders_per_second'])}, {fmt(figures['p50'])} / {fmt(figures['p99'])},"
           f" {fmt(summary[f'share_of_{shape}_floor'])}")
          for shape, figures in summary["floor"].items()],
        ("Temporal server CPU s per order", fmt(summary["server_cpu_per_order"], 3)),
        ("starts refused at capacity / for an outage, retried",
         f"{summary['capacity_refusals']} / {summary['outage_refusals']}"),
        ("activity attempts by outcome",
         ", ".join(f"{k} {v}" for k, v in sorted(summary["activity_attempts"].items())) or "-"),
        ("activity coroutines running: right after / settled",
         f"{fmt(summary['coroutines_after_run'])} / {fmt(summary['coroutines_after_settle'])}"
         f"  ({args.settle_seconds:g} s later)"),
        (f"row fragment p50/p95 ms ({board.get('route', 'not measured')})",
         f"{fmt(summary['row_p50_ms'], 1)} / {fmt(summary['row_p95_ms'], 1)}"
         f"  ({summary['row_samples']} samples, {summary['row_errors']} errors,"
         f" mean {fmt(summary['row_mean_in_flight'], 1)} in flight)"),
        ("row status age p50/p95 s (how old the shown status was)",
         f"{fmt(summary['row_status_age_p50_s'])} / {fmt(summary['row_status_age_p95_s'])}"),
        ("overview panel p50/p95 ms (GET /board/overview)",
         f"{fmt(summary['overview_p50_ms'], 1)} / {fmt(summary['overview_p95_ms'], 1)}"
         f"  ({summary['overview_samples']} samples, {summary['overview_errors']} errors,"
         f" mean {fmt(summary['overview_mean_in_flight'], 1)} in flight)"),
        ("GET /orders/{id}/status p50/p95 ms while in flight",
         f"{fmt(summary['status_p50_ms'], 1)} / {fmt(summary['status_p95_ms'], 1)}"
         f"  ({summary['status_samples']} samples, {summary['status_errors_sampled']} errors)"),
        *[(f"CPU s {kind}", f"{seconds:.1f} ({100 * seconds / wall:.0f} % of a core)" if wall else f"{seconds:.1f}")
          for kind, seconds in cpu.items()],
    ]
    text = "Summary\n" + table(("figure", "measured"), rows)
    if board.get("note"):
        text += f"\nnote: {board['note']}"
    verdicts = []
    for target in TARGETS:
        measured = summary.get(target.key)
        verdicts.append({
            "figure": target.figure, "measured": measured,
            "target": f"{'<=' if target.at_most else '>='} {fmt(target.bound(summary))}",
            "applies_to": target.applies_to, "this_run_is_that_run": target.applies(args),
            "verdict": target.verdict(summary),
        })
    text += "\n\nTargets (a verdict counts only where this run is the target's run)\n" + table(
        ("figure", "measured", "target", "target's run", "this run?", "verdict"),
        [(v["figure"], fmt(v["measured"]), v["target"], v["applies_to"],
          "yes" if v["this_run_is_that_run"] else "no", v["verdict"]) for v in verdicts],
    )
    return text, verdicts


def plot_histogram(records: list[OrderRecord], summary: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    workflow = [r.workflow_seconds for r in records if r.workflow_seconds is not None]
    client = [r.client_seconds for r in records if r.client_seconds is not None]
    top = max([PROMISE_SECONDS + 1, *workflow, *client])
    bins = [i * 0.25 for i in range(int(top / 0.25) + 2)]
    figure, axes = pyplot.subplots(figsize=(12, 4.5))
    axes.hist(workflow, bins=bins, color="tab:blue", alpha=0.75, label="workflow started_at → finished_at")
    axes.hist(client, bins=bins, histtype="step", color="tab:orange", linewidth=1.5,
              label="client: start answered → terminal status")
    axes.axvline(PROMISE_SECONDS, color="red", linestyle="--", linewidth=2, label="15-s promise")
    for name, style in (("p50", ":"), ("p99", "-.")):
        value = summary["workflow_latency_s"][name]
        if value is not None:
            axes.axvline(value, color="tab:blue", linestyle=style, label=f"workflow {name} {value:.2f} s")
    axes.set_xlabel("seconds from start to shipped / cancelled / failed")
    axes.set_ylabel("orders")
    axes.set_title(
        f"N={args.orders} C={args.concurrency}: {summary['within_promise']}/{summary['orders']} within the deadline, "
        f"{summary['failed']} failed, {fmt(summary['orders_per_second'])} orders/s"
    )
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
