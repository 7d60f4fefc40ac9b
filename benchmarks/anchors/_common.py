"""Shared by the anchor comparisons: interleaved timing, paired ratios, markdown tables.

Each job runs the anchor and ours in alternating order, ``rounds`` times, on the same inputs;
a job's time is the best of its rounds (process CPU time: on a shared machine other jobs hold the
cores) and the ratio column is the median over rounds of anchor time / our time (paired).
"""

from __future__ import annotations

import platform
import statistics
import time

__all__ = ["clock", "interleaved", "ratio_row", "table", "hardware"]


def clock(fn):
    """(process CPU seconds, result) of one call."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def interleaved(jobs: dict, rounds: int) -> tuple[dict, dict]:
    """Run every job once per round, the order alternating between rounds.

    Returns ({name: [seconds per round]}, {name: last result})."""
    times = {k: [] for k in jobs}
    results = {}
    names = list(jobs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t, results[name] = clock(jobs[name])
            times[name].append(t)
    return times, results


def ratio_row(times: dict, anchor: str, ours: str) -> tuple[float, float, float]:
    """(best anchor ms, best ours ms, median paired ratio anchor/ours)."""
    paired = [a / b for a, b in zip(times[anchor], times[ours])]
    return 1e3 * min(times[anchor]), 1e3 * min(times[ours]), statistics.median(paired)


def table(title: str, header: list, rows: list) -> None:
    print(f"\n### {title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def hardware() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {platform.system()} {platform.machine()}"
