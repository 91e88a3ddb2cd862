"""Report output shared by the evaluation modes and the benchmark scripts: the one set of table helpers
(:func:`markdown_table` for files, :func:`print_tables` for the console), the one map of attention types to
display names (:data:`ATTENTION_FAMILIES`, :func:`attention_label`), formatting of measured values, CSV /
JSON files, log-log line plots and the machine description of a report's header.

Importing this module imports only the standard library (torch, rich and matplotlib are imported inside the
functions that need them).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .measure import GIB

__all__ = [
    "ATTENTION_FAMILIES", "attention_label",
    "cpu_model", "machine_info", "machine_header",
    "write_csv", "write_json", "markdown_table", "print_tables",
    "fmt_time", "fmt_mib", "ratio", "fmt_ratio", "cell", "value", "plot_panels", "log", "log_row",
    "write_report",
]

# The model family of each attention type (the registry names of longdoc.attention), as the papers and Long
# Range Arena's tables name them.
ATTENTION_FAMILIES = {"full": "Transformer", "lsh": "Reformer", "local_global": "Longformer"}


def attention_label(name: str, note: str | None = None) -> str:
    """Display name of an attention type: its family and, in brackets, ``note`` (default: the registry name),
    e.g. ``attention_label("lsh") == "Reformer (lsh)"``, ``attention_label("full", "ours") == "Transformer (ours)"``.
    A name without a family is shown as itself (with ``(note)`` when a note is given)."""
    family = ATTENTION_FAMILIES.get(name)
    if family is None:
        return name if note is None else f"{name} ({note})"
    return f"{family} ({name if note is None else note})"


# ----------------------------------------------------------------------------------------------
# machine description
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, dtype: str, device_name: str | None = None) -> dict:
    """CPU model, core counts, memory, library versions and device of this machine."""
    import torch

    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_total = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_total = int(fh.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
        "mem_total_gib": round(mem_total / GIB, 1), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": tf_version, "device": device,
        "device_name": device_name or device, "dtype": dtype,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_header(info: Mapping) -> str:
    """One line describing the machine, e.g. for the top of a markdown report."""
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info['mem_total_gib']} GiB RAM; torch {info['torch']}, transformers {info['transformers']}, "
            f"python {info['python']}; device {info['device']} = {info['device_name']}; dtype {info['dtype']}"
            + (f"; load average {info['load_avg_1m']} at start" if info.get("load_avg_1m") is not None else ""))


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def write_csv(path: str | Path, rows: Sequence[Mapping], fields: Sequence[str]) -> None:
    """Write ``rows`` with ``fields`` first (other keys appended in first-seen order); floats as %.6g."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(fields)
    for r in rows:
        for k in r:
            if k not in cols and not isinstance(r[k], (list, dict)):
                cols.append(k)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def print_tables(tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence]]]) -> None:
    """Print ``(title, header, rows)`` tables with rich, aligned as :func:`markdown_table` (first column left,
    the others right); 140 columns wide when stdout is not a terminal (log files), so tables do not wrap at 80."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    for title, header, rows in tables:
        table = Table(title=title)
        for i, h in enumerate(header):
            table.add_column(str(h), justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*(str(c) for c in r))
        console.print(table)


# ----------------------------------------------------------------------------------------------
# values and plots
# ----------------------------------------------------------------------------------------------


def fmt_time(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mib(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or a < 0:
        return None
    return a / b


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def cell(row: Mapping | None, key: str, fmt: Callable[[float | None], str]) -> str:
    """Format ``row[key]`` for a table: the value for status 'ok', else the status itself."""
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return str(row.get("status", "-"))
    return fmt(row.get(key))


def value(row: Mapping | None, key: str) -> float | None:
    """``row[key]`` as float when the row is 'ok', else None."""
    if row is None or row.get("status") != "ok" or row.get(key) in (None, ""):
        return None
    return float(row[key])


def plot_panels(path: str | Path, panels: Sequence[dict], title: str = "") -> bool:
    """Save side-by-side log-log line plots.

    Each panel: ``{"title", "xlabel", "ylabel", "series": {label: [(x, y), ...]}, "logx": True,
    "logy": True, "xticks": [...]}``. Points with y None are dropped. Returns False (and writes
    nothing) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, pts in p["series"].items():
            pts = [(x, y) for x, y in pts if y is not None and y > 0]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=label)
        if p.get("logx", True):
            ax.set_xscale("log", base=2)
        if p.get("logy", True):
            ax.set_yscale("log")
        if p.get("xticks"):
            ax.set_xticks(p["xticks"])
            ax.set_xticklabels([str(x) for x in p["xticks"]])
        ax.set_title(p.get("title", ""))
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, 90 * len(panels)), fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def log_row(label: str, n: int, row: Mapping, extra: str = "") -> None:
    """One measured configuration on stderr: label, N, status, time, peak memory, ``extra``, wall time, note."""
    log(f"  {label:30s} N={n:6d}  {row['status']:7s}  time {fmt_time(value(row, 'time_s')):>10s}  "
        f"peak {fmt_mib(value(row, 'peak_mem_mib')):>7s} MiB  {extra}wall {row.get('wall_s', 0):.1f}s  "
        f"{row.get('note', '')}")


def write_report(out: str | Path, stem: str, md: str, payload: dict, t_start: float,
                 plot: Callable[[Path], object]) -> None:
    """The end of a benchmark sweep: ``<out>/<stem>.md`` (``md``), ``<stem>.json`` (``payload`` + ``total_wall_s``
    since ``t_start``, a ``time.perf_counter()`` value), ``plot(<out>/<stem>.png)``; the table printed to stdout."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(md)
    write_json(out / f"{stem}.json", {**payload, "total_wall_s": time.perf_counter() - t_start})
    plot(out / f"{stem}.png")
    print(md)
    log(f"total {time.perf_counter() - t_start:.0f} s; wrote {out}/{stem}.{{csv,md,png,json}}")
