#!/usr/bin/env python3
"""Draws the benchmark plots of docs/benchmarks.md from `shardkeeper bench` JSON.

    pip install matplotlib
    python3 scripts/plot-benchmarks.py bench-results.json docs/
"""
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def startup(results, out):
    run = results["startup"]
    times = [t for t, _ in run["progress"]]
    ready = [r for _, r in run["progress"]]
    windows = math.ceil(run["n"] / run["k"])
    floor_t = [i * run["window_s"] for i in range(windows + 1)]
    floor_r = [min(run["n"], i * run["k"]) for i in range(windows + 1)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(times + [run["seconds"]], ready + [run["n"]], where="post", label="shardkeeper: shards ready")
    ax.step(floor_t, floor_r, where="post", linestyle="--", label=f"floor: {run['k']} per {run['window_s']:.0f} s window")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("shards ready")
    ax.set_title(f"Start-up of {run['n']} shards, max_concurrency {run['k']}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench-startup.png", dpi=110)


def memory(results, out):
    rows = results["memory"]["idle"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for compression in sorted({row["compression"] for row in rows}):
        idle = [row for row in rows if row["compression"] == compression]
        shards = [row["shards"] for row in idle]
        per_shard = [row["kib_per_shard"] for row in idle]
        base = idle[0]["rss_kib"]
        marginal = [(row["rss_kib"] - base) / max(1, row["shards"] - 1) for row in idle[1:]]
        ax.plot(shards, per_shard, marker="o", label=f"{compression}: RSS / shards")
        ax.plot(shards[1:], marginal, marker="s", label=f"{compression}: (RSS − RSS of 1) / (shards − 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("idle shards")
    ax.set_ylabel("KiB per shard")
    ax.set_title("Memory per idle shard")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "bench-memory.png", dpi=110)


def main():
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs")
    startup(results, out)
    memory(results, out)


if __name__ == "__main__":
    main()
