"""The run summary a person reads: one table of headline scores, and the runtime in units.

`nel eval run` and `nel reduce` print it when a run is reduced; `nel show RUN_DIR` prints it
for any reduced run, sharded or not, from metrics.json and runtime.json alone (plus two small
columns of trajectories.parquet for the failed rows of each subset). A terminal gets a rich
table; a pipe or a log file gets plain aligned text, so logs stay greppable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nel.errors import StoreError
from nel.metrics import RUN_FIELDS
from nel.rundir import read_run
from nel.store import TERMINAL_ERROR_KINDS

# Keys of a metrics.json mode that are not scores.
_NOT_SCORES = {*RUN_FIELDS, "no_answer"}
HEADERS = ("benchmark", "subset", "metric", "score ± 95% CI", "n", "failed", "tokens/sample", "time")


@dataclass(frozen=True)
class SummaryRow:
    """One headline score of one benchmark or subset; ``ci95`` in percent like ``score``."""

    benchmark: str
    subset: str | None
    mode: str
    score_name: str
    score: float
    ci95: tuple[float, float] | None
    problems: int
    failed: int
    avg_tokens: int | None
    seconds: float | None


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    run: dict[str, Any]
    rows: list[SummaryRow]
    runtime: dict[str, Any]


def headline_mode(modes: dict[str, Any]) -> str | None:
    """The mode a person quotes: pass@1[avg-of-k] for the largest k, else pass@1."""
    ks = [int(m.split("@", 1)[1].split("[")[0]) for m in modes if m.startswith("pass@")]
    if not ks:
        return None
    for mode in (f"pass@1[avg-of-{max(ks)}]", "pass@1"):
        if mode in modes:
            return mode
    return None


def score_names(values: dict[str, Any]) -> list[str]:
    """Scores of one mode: those with an interval, else every plain number that is not a count."""
    with_ci = [k for k in values if f"{k}_ci95" in values]
    if with_ci:
        return with_ci
    return [k for k, v in values.items() if isinstance(v, (int, float)) and k not in _NOT_SCORES
            and not k.endswith("_std_err")]  # fmt: skip


def load_summary(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    metrics = _read_json(run_dir, "metrics.json")
    runtime = _read_json(run_dir, "runtime.json")
    failed = _failed_by_subset(run_dir / "trajectories.parquet")
    benchmark = next(iter(metrics), "")
    rows: list[SummaryRow] = []
    for group, modes in metrics.items():
        mode = headline_mode(modes)
        if mode is None:
            continue
        values = modes[mode]
        subset = group[len(benchmark) + 1 :] if group != benchmark else None
        seconds = runtime.get("wall_seconds") if subset is None else values.get("gen_seconds")
        for name in score_names(values):
            ci = values.get(f"{name}_ci95")
            rows.append(SummaryRow(
                benchmark=benchmark, subset=subset, mode=mode, score_name=name, score=float(values[name]),
                ci95=(float(ci[0]), float(ci[1])) if ci else None, problems=int(values.get("num_entries", 0)),
                failed=failed.get(subset, 0) if subset else sum(failed.values()),
                avg_tokens=values.get("avg_tokens"), seconds=seconds,
            ))  # fmt: skip
    return RunSummary(run_dir, run, rows, runtime)


def _read_json(run_dir: Path, name: str) -> dict[str, Any]:
    path = run_dir / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(
            f"{run_dir} has no {name}: the run is not reduced yet (`nel status {run_dir}` shows its "
            f"shards; `nel reduce {run_dir}` merges them)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc


def _failed_by_subset(path: Path) -> dict[str | None, int]:
    """Rows per subset whose error_kind is not terminal (a partial reduce keeps them)."""
    if not path.exists():
        return {}
    try:
        table = pq.read_table(path, columns=["subset", "error_kind"])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise StoreError(f"cannot read {path}: {exc}") from exc
    failed = table.filter(pc.invert(pc.is_in(table.column("error_kind"), value_set=pa.array(sorted(TERMINAL_ERROR_KINDS)))))
    counts = pc.value_counts(failed.column("subset")).to_pylist() if len(failed) else []
    return {c["values"]: int(c["counts"]) for c in counts}


# ------------------------------------------------------------------------------- formatting


def seconds_text(seconds: float | None) -> str:
    """12 ms, 3.40 s, 2m 05s, 1h 02m: the unit a person reads at that size."""
    if seconds is None:
        return "-"
    if seconds == 0:  # metrics.json truncates gen_seconds to whole seconds
        return "< 1 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def quantiles_text(values: dict[str, float | None]) -> str:
    shown = [f"{k} {seconds_text(v)}" for k, v in values.items() if v is not None]
    return ", ".join(shown) if shown else "-"


def score_text(row: SummaryRow) -> str:
    if row.ci95 is None:
        return f"{row.score:.2f}"
    half = (row.ci95[1] - row.ci95[0]) / 2
    return f"{row.score:.2f} ± {half:.2f}"


def table_cells(summary: RunSummary) -> list[tuple[str, ...]]:
    return [
        (row.benchmark, row.subset or "(all)", f"{row.mode} {row.score_name}", score_text(row), str(row.problems),
         str(row.failed), "-" if row.avg_tokens is None else str(row.avg_tokens), seconds_text(row.seconds))
        for row in summary.rows
    ]  # fmt: skip


def footer_lines(summary: RunSummary) -> list[str]:
    rt = summary.runtime
    run = summary.run
    lines = [f"run {run.get('run_id')} ({run.get('identity', {}).get('bench', '?')}): "
             + ("complete" if rt.get("complete") else "INCOMPLETE (partial reduce)")]  # fmt: skip
    rps = rt.get("requests_per_second")
    lines.append(
        f"rows {rt.get('rows', 0)}, wall {seconds_text(rt.get('wall_seconds'))}"
        + (f", {rps:.1f} requests/s" if rps else "")
        + f", retries {rt.get('retries', 0)}"
    )
    tokens = rt.get("tokens", {})
    lines.append("tokens: " + ", ".join(f"{k} {v:,}" for k, v in tokens.items()))
    lines.append(f"model latency: {quantiles_text(rt.get('latency_s', {}))}")
    lines.append(f"scoring time: {quantiles_text(rt.get('verify_time_s', {}))}")
    kinds = rt.get("error_kinds", {})
    lines.append("error kinds: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    if kinds.get("unfinished_reasoning"):
        lines.append(f"unfinished reasoning: {kinds['unfinished_reasoning']} row(s) ran out of tokens while thinking; "
                     "scored as no answer (raise --max-tokens)")  # fmt: skip
    if "rescored" in run:
        lines.append(f"rescored from {run['rescored'].get('source')} with scorer {run['rescored'].get('scorer_version')}")
    return lines


def plain_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def print_summary(run_dir: str | Path, out: TextIO | None = None) -> RunSummary:
    """Print the table and footer of a reduced run: rich on a terminal, plain text otherwise."""
    out = out or sys.stdout
    summary = load_summary(run_dir)
    cells = table_cells(summary)
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for i, header in enumerate(HEADERS):
            table.add_column(header, justify="right" if i >= 3 else "left")
        for row in cells:
            table.add_row(*row)
        console = Console(file=out)
        console.print(table)
        for line in footer_lines(summary):
            console.print(line, highlight=False, markup=False)
    else:
        out.write(plain_table(HEADERS, cells) + "\n")
        out.write("\n".join(footer_lines(summary)) + "\n")
    return summary


def show_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="nel show", description="Print the summary table of a reduced run.")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    summary = print_summary(args.run_dir)
    return 0 if summary.runtime.get("complete", True) else 1
