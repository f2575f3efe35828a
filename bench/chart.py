"""The headline figures as a small PNG: acks/s per receiver and database (bars, min-max whiskers
over the rounds), ack p99 below, and the end-to-end lag p99 where it was measured.

Needs matplotlib (requirements-bench.txt); draws off-screen (Agg), so it runs without a display.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import rounds

GROUPS = {"-": "no storage", "sqlite": "SQLite", "postgres": "PostgreSQL, local", "postgres-link": "PostgreSQL, link"}


def _rows(full_speed: list[rounds.FullSpeed], paced: list) -> list[dict]:
    lag = {}
    for run in paced:  # prefer the lag at half the project's own maximum, where it means something
        if run.lag and run.lag.p99 is not None and ((run.name, run.database) not in lag or "own" in run.why):
            lag[(run.name, run.database)] = run.lag.p99
    rows = []
    for contender, runs in rounds.by_contender(full_speed).items():
        acks = [r.acks_per_s for r in runs]
        rows.append({"name": contender.name, "database": contender.database, "acks": statistics.median(acks),
                     "low": min(acks), "high": max(acks),
                     "p99": statistics.median(r.outcome.p99 for r in runs),
                     "lag": lag.get((contender.name, contender.database))})
    return rows


def write(path: Path, full_speed: list[rounds.FullSpeed], paced: list = (), title: str = "") -> Path:
    """Draw the chart into `path` (PNG, 1000 px wide)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = _rows(full_speed, paced)
    groups = [g for g in GROUPS if any(r["database"] == g for r in rows)]
    names = list(dict.fromkeys(r["name"] for r in rows))
    colours = dict(zip(names, plt.get_cmap("tab10").colors))
    panels = [("acks", "acks/s"), ("p99", "ack p99, ms")]
    if any(r["lag"] is not None for r in rows):
        panels.append(("lag", "lag p99, ms"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 + 1.4 * len(panels)), dpi=100, sharex=True)
    width = 0.8 / max(1, max(sum(r["database"] == g for r in rows) for g in groups))
    for ax, (key, label) in zip(axes, panels):
        labelled = set()
        for g, group in enumerate(groups):
            members = [r for r in rows if r["database"] == group]
            for i, r in enumerate(members):
                if r[key] is None:
                    continue
                x = g + (i - (len(members) - 1) / 2) * width
                err = [[r["acks"] - r["low"]], [r["high"] - r["acks"]]] if key == "acks" else None
                ax.bar(x, r[key], width * 0.9, color=colours[r["name"]], yerr=err, capsize=2,
                       label=None if r["name"] in labelled else r["name"])
                ax.annotate(f"{r[key]:,.0f}", (x, r[key]), ha="center", va="bottom", fontsize=6,
                            xytext=(0, 1), textcoords="offset points")
                labelled.add(r["name"])
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=min(4, len(names)), loc="upper right")
    axes[-1].set_xticks(range(len(groups)), [GROUPS[g] for g in groups], fontsize=9)
    axes[0].set_title(", ".join(filter(None, [title, "bars: median of the rounds, whiskers: min–max; "
                                                      "lag: acknowledged -> handled, at a constant rate"])), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
