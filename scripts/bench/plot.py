"""PNG plots of the CSV files the bench scripts write (matplotlib, Agg backend: no display needed).

    plot.py coldstart DIR [--out DIR]     DIR/samples.csv (scripts/bench-coldstart.sh) ->
                                          coldstart-latency.png: time to first response per start
                                          kind, one panel per example, log-scale ms
    plot.py wrk CSV [--out DIR] [--name NAME] [--title TEXT]
                                          a wrk CSV (scripts/bench-gateway.sh, bench-fastapi.sh) ->
                                          NAME-rps.png (req/s vs connections per target) and
                                          NAME-p50.png (p50 latency vs connections, log scale)

The bench scripts call it through their plot virtualenv (scripts/bench/plot-venv.sh) at the end of
a run; run it the same way to redraw a committed CSV:
    $(scripts/bench/plot-venv.sh) scripts/bench/plot.py wrk docs/bench/gateway/gateway.csv

Input formats (a header line, then one row per measurement):
    coldstart samples.csv   side,example,mode,ms         one row per sample; mode is cold, restore,
                                                         restore-after-idle, fork or warm (others are
                                                         drawn after those, in order of appearance)
    wrk CSV                 round,target,request,connections,rps,p50_us,p99_us,errors
                                                         one row per target, request kind (GET or
                                                         POST), connection count and round
Targets, sides, examples and modes are whatever the file holds: nothing here names them.
Prints the path of every PNG it wrote.
"""

import argparse
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DPI = 100
#: The start kinds in the order BENCHMARKS.md's tables have them, with the tables' letters.
MODE_ORDER = ["cold", "restore", "restore-after-idle", "fork", "warm"]
MODE_LABELS = {
    "cold": "(a) cold start",
    "restore": "(b) CRIU restore",
    "restore-after-idle": "(b) restore\nafter idle",
    "fork": "(d) fork",
    "warm": "(c) warm",
}
COLDSTART_COLUMNS = ["side", "example", "mode", "ms"]
WRK_COLUMNS = ["round", "target", "request", "connections", "rps", "p50_us", "p99_us", "errors"]


def read_csv(path, columns):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"plot: {path} lacks the column(s) {', '.join(missing)} (has {reader.fieldnames})")
        rows = list(reader)
    if not rows:
        raise SystemExit(f"plot: {path} has no rows")
    return rows


def in_order(values, preferred=()):
    """The distinct values, those named in `preferred` first in its order, the rest as they came."""
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def plain_number(value, _position=None):
    return f"{value:g}" if value < 1000 else f"{value:,.0f}"


def save(figure, path):
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    print(path)
    return path


def plot_coldstart(samples_csv, out_dir):
    rows = read_csv(samples_csv, COLDSTART_COLUMNS)
    values = defaultdict(list)  # (example, mode, side) -> ms
    for row in rows:
        values[(row["example"], row["mode"], row["side"])].append(float(row["ms"]))
    examples = in_order(r["example"] for r in rows)
    modes = in_order((r["mode"] for r in rows), MODE_ORDER)
    sides = in_order(r["side"] for r in rows)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    columns = min(2, len(examples))
    lines = (len(examples) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(5.2 * columns + 0.4, 3.6 * lines + 0.9), sharey=True,
                                squeeze=False)
    width = 0.8 / len(sides)
    for index, example in enumerate(examples):
        ax = axes[index // columns][index % columns]
        for s, side in enumerate(sides):
            positions, data = [], []
            for m, mode in enumerate(modes):
                samples = values.get((example, mode, side))
                if samples:
                    positions.append(m - 0.4 + width * (s + 0.5))
                    data.append(samples)
            if not data:
                continue
            colour = colours[s % len(colours)]
            ax.boxplot(data, positions=positions, widths=width * 0.8, whis=(0, 100), showfliers=False,
                       patch_artist=True, medianprops={"color": "black"},
                       boxprops={"facecolor": colour, "alpha": 0.35, "edgecolor": colour},
                       whiskerprops={"color": colour}, capprops={"color": colour})
            for position, samples in zip(positions, data):
                # Every sample as a dot, spread a little sideways so that equal values stay visible.
                spread = [position + width * 0.3 * ((i % 7) / 6 - 0.5) for i in range(len(samples))]
                ax.scatter(spread, samples, s=9, color=colour, alpha=0.8, linewidths=0, zorder=3)
        ax.set_title(example)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels([MODE_LABELS.get(m, m) for m in modes], fontsize=8)
        ax.set_xlim(-0.6, len(modes) - 0.4)
        ax.grid(axis="y", which="both", alpha=0.3)
        if index % columns == 0:
            ax.set_ylabel("ms, log scale")
    for index in range(len(examples), lines * columns):
        axes[index // columns][index % columns].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colours[s % len(colours)], alpha=0.5) for s in range(len(sides))]
    counts = sorted({len(v) for v in values.values()})
    figure.legend(handles, sides, loc="lower center", ncol=len(sides), frameon=False)
    figure.suptitle("Time to first response by start kind (client side; box: quartiles, whiskers: min-max; "
                    f"{'-'.join(map(str, [counts[0], counts[-1]] if len(counts) > 1 else counts))} samples per box)",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    return [save(figure, os.path.join(out_dir, "coldstart-latency.png"))]


def plot_wrk(wrk_csv, out_dir, name, title):
    rows = read_csv(wrk_csv, WRK_COLUMNS)
    targets = in_order(r["target"] for r in rows)
    get = [r for r in rows if r["request"].upper() == "GET"]
    if not get:
        raise SystemExit(f"plot: {wrk_csv} has no GET rows")
    connections = sorted({int(r["connections"]) for r in get})
    rounds = sorted({r["round"] for r in get})
    cells = defaultdict(list)  # (target, connections, column) -> one value per round
    errors = set()
    for r in get:
        key = (r["target"], int(r["connections"]))
        cells[key + ("rps",)].append(float(r["rps"]))
        cells[key + ("p50_us",)].append(float(r["p50_us"]))
        if r["errors"] not in ("", "0", "no"):
            errors.add(r["target"])

    # Enough distinct colours for a dozen targets and more; aether's own targets solid, peers dashed.
    palette = plt.get_cmap("tab20").colors if len(targets) > 10 else plt.get_cmap("tab10").colors
    style = {}
    for index, target in enumerate(targets):
        ours = target.lower().startswith("aether")
        style[target] = {"color": palette[(index * 2 if len(targets) <= 10 else index) % len(palette)],
                         "linestyle": "-" if ours else "--", "linewidth": 2.2 if ours else 1.3,
                         "marker": "o" if ours else "s", "markersize": 6 if ours else 4.5}
    written = []
    for column, label, log, suffix in (("rps", "requests/s", False, "rps"),
                                       ("p50_us", "p50 latency, µs (log scale)", True, "p50")):
        figure, ax = plt.subplots(figsize=(9.6, 5.2))
        for target in targets:
            xs, means, lows, highs = [], [], [], []
            for c in connections:
                samples = cells.get((target, c, column))
                if samples:
                    xs.append(c)
                    mean = sum(samples) / len(samples)
                    means.append(mean)
                    lows.append(mean - min(samples))
                    highs.append(max(samples) - mean)
            if not xs:
                continue
            legend = target + (" (errors)" if target in errors else "")
            ax.errorbar(xs, means, yerr=[lows, highs], label=legend, capsize=3, elinewidth=0.8, **style[target])
        ax.set_xscale("log", base=2)
        ax.set_xticks(connections)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        ax.set_xlabel("connections (wrk -t1)")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
        else:
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
        ax.grid(which="both", alpha=0.3)
        spread = f"mean of {len(rounds)} rounds, bars: min-max" if len(rounds) > 1 else "one round"
        ax.set_title(f"{title}: {label.split(',')[0]} vs connections, GET ({spread})", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        figure.tight_layout()
        written.append(save(figure, os.path.join(out_dir, f"{name}-{suffix}.png")))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    coldstart = kinds.add_parser("coldstart", help="coldstart-latency.png from DIR/samples.csv")
    coldstart.add_argument("dir", help="the folder scripts/bench-coldstart.sh wrote (samples.csv)")
    coldstart.add_argument("--out", help="where the PNG goes (default: that folder)")
    wrk = kinds.add_parser("wrk", help="NAME-rps.png and NAME-p50.png from a wrk CSV")
    wrk.add_argument("csv")
    wrk.add_argument("--out", help="where the PNGs go (default: the CSV's folder)")
    wrk.add_argument("--name", help="file name prefix (default: the CSV's name without .csv)")
    wrk.add_argument("--title", help="title prefix (default: the name)")
    args = parser.parse_args(argv)
    if args.kind == "coldstart":
        out = args.out or args.dir
        os.makedirs(out, exist_ok=True)
        plot_coldstart(os.path.join(args.dir, "samples.csv"), out)
    else:
        out = args.out or os.path.dirname(args.csv) or "."
        os.makedirs(out, exist_ok=True)
        name = args.name or os.path.splitext(os.path.basename(args.csv))[0]
        plot_wrk(args.csv, out, name, args.title or name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
