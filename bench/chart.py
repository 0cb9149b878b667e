"""A chart of reports/compare.json: uploads/s per system, image size, clients and generator.

    python -m bench.chart [--json reports/compare.json] [--out reports/compare.png]

One panel per image size; in each, a group of bars per client count: one colour per system,
plain bars for the Python load generator, hatched for wrk; a cell measured more than once
(the peer's) at its mean. Rows with "limit_rps" (from reports/lab-limits.json) add a red line
per distinct lab limit, named in the panel's legend; a limit far above the bars is only named
there (marked "off scale"), so the bars stay readable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

SYSTEMS = ("cloud-p2p fsync", "cloud-p2p no-fsync", "haproxy+nginx")
COLOURS = {"cloud-p2p fsync": "#1f77b4", "cloud-p2p no-fsync": "#7fb8e6",
           "haproxy+nginx": "#ff7f0e"}
SIZE_ORDER = ("4KiB", "64KiB", "1MiB")
GENERATORS = ("python", "wrk")
HATCH = {"python": "", "wrk": "///"}
OFF_SCALE = 3.0  # a limit more than this many times the tallest bar is written, not drawn
LIMIT_STYLES = ("--", ":", "-.")


def _order(values: set[Any], preferred: Sequence[Any]) -> list[Any]:
    return [v for v in preferred if v in values] + sorted(values - set(preferred), key=str)


def _merged(rows: list[dict[str, Any]],
            gen: Callable[[dict[str, Any]], str]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """One bar per system, generator and client count: a cell measured more than once (the
    peer, next to each cloud-p2p system) is drawn at its mean, with all its failures."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["system"], gen(r), r["clients"]), []).append(r)
    return {key: {**rs[0], "rps": sum(float(r["rps"]) for r in rs) / len(rs),
                  "failed": sum(int(r.get("failed", 0)) for r in rs)}
            for key, rs in groups.items()}


def render(rows: list[dict[str, Any]], out: Path) -> Path:
    """Write the chart of `rows` (compare.json's list) to `out` (PNG); return `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def gen(r: dict[str, Any]) -> str:
        return str(r.get("generator", "python"))

    sizes = _order({r["size"] for r in rows}, SIZE_ORDER)
    systems = _order({r["system"] for r in rows}, SYSTEMS)
    generators = _order({gen(r) for r in rows}, GENERATORS)
    series = [(s, g) for s in systems for g in generators]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.4 * len(sizes), 5.6), squeeze=False)
    width = 0.8 / len(series)
    for ax, size in zip(axes[0], sizes, strict=True):
        cells = _merged([r for r in rows if r["size"] == size], gen)
        clients = sorted({c for _, _, c in cells})
        top = max((float(r["rps"]) for r in cells.values()), default=1.0) or 1.0
        for i, (system, g) in enumerate(series):
            xs, heights, failed = [], [], []
            for x, c in enumerate(clients):
                r = cells.get((system, g, c))
                if r is not None:
                    xs.append(x - 0.4 + width * (i + 0.5))
                    heights.append(float(r["rps"]))
                    failed.append(int(r.get("failed", 0)))
            bars = ax.bar(xs, heights, width, color=COLOURS.get(system, "#999999"),
                          hatch=HATCH.get(g, ".."), edgecolor="#333333", linewidth=0.6)
            labels = [f"{h:,.0f}" + (f"\n{f} failed" if f else "")
                      for h, f in zip(heights, failed, strict=True)]
            ax.bar_label(bars, labels=labels, fontsize=7, padding=2, rotation=90)
        limits: dict[float, list[str]] = {}
        for system in systems:
            values = {float(r["limit_rps"]) for (s, _, _), r in cells.items()
                      if s == system and r.get("limit_rps")}
            for v in values:
                limits.setdefault(round(v, 1), []).append(system)
        ymax = top * 1.35
        lines: list[Any] = []
        for v, owners in sorted(limits.items()):
            text = f"lab limit {v:,.0f}/s: {', '.join(owners)}"
            if v > top * OFF_SCALE:  # written in the legend only, with an arrow
                lines.append(Line2D([], [], linestyle="none", label=f"↑ {text} (off scale)"))
                continue
            style = LIMIT_STYLES[len(lines) % len(LIMIT_STYLES)]
            lines.append(ax.axhline(v, color="#c0392b", linestyle=style, linewidth=1.3,
                                    label=text))
            ymax = max(ymax, v * 1.15)
        ax.set_ylim(0, ymax)
        if lines:
            ax.legend(handles=lines, loc="upper left", fontsize=7, framealpha=0.9,
                      handlelength=2.5)
        ax.set_xticks(range(len(clients)), [f"{c} clients" for c in clients])
        ax.set_title(f"{size} images")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("uploads/s (2xx responses)")
    handles = [Patch(facecolor=COLOURS.get(s, "#999999"), edgecolor="#333333", label=s)
               for s in systems]
    handles += [Patch(facecolor="white", edgecolor="#333333", hatch=HATCH.get(g, ".."),
                      label=f"load generator: {g}") for g in generators]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle("PUT /images throughput: cloud-p2p vs HAProxy + nginx (higher is better)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=Path("reports/compare.json"))
    p.add_argument("--out", type=Path, default=None,
                   help="PNG to write (default: the JSON's path with .png)")
    args = p.parse_args(argv)
    rows = orjson.loads(args.json.read_bytes())
    if not rows:
        print(f"{args.json}: no rows", file=sys.stderr)
        return 1
    out = render(rows, args.out or args.json.with_suffix(".png"))
    print(f"chart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
