"""`nel report RUN_DIR [RUN_DIR ...]`: one self-contained HTML file of reduced runs.

Everything is inside the file, so it opens anywhere with no network: CSS and JS inline, plots
as SVG drawn here (nel.report.svg), and the rows as one gzip-compressed, base64-encoded JSON
blob that the page inflates with the browser's own ``DecompressionStream`` and renders a page
at a time. The page's DOM holds 50 rows whatever the run's size, so a 100k-row run opens
as fast as a small one; the file grows with the text kept per row (``--max-text``, see
benchmarks/README.md for the size at 100k rows). With two runs, the page adds `nel compare`'s
paired tests.

The template is Jinja2 (autoescaped): every string from a row or a config reaches the page
escaped, which hand-built f-strings would have to get right at each of dozens of places.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nel.errors import NelError, StoreError
from nel.report.svg import histogram, line_chart
from nel.rundir import RunDir, write_text_atomic
from nel.summary import HEADERS, RunSummary, load_summary, score_names, table_cells
from nel.trajectory import TERMINAL_ERROR_KINDS
from nel.version import __version__

DEFAULT_MAX_TEXT = 4000
PAGE_ROWS = 50
_ROW_COLUMNS = ("problem_idx", "repeat", "subset", "messages", "response", "reasoning_content", "extracted_answer",
                "expected_answer", "correct", "reward", "error_kind", "error", "details", "model_latency_s",
                "completion_tokens", "finish_reason")  # fmt: skip


@dataclass
class RunView:
    """What the template shows of one run; ``rows`` is the compressed blob the page inflates."""

    label: str
    summary: RunSummary
    cells: list[tuple[str, ...]]
    headline: list[tuple[str, ...]]
    plots: dict[str, str]
    error_kinds: dict[str, int]
    subsets: list[str]
    n_rows: int
    rows: str
    notes: list[str] = field(default_factory=list)


def build_report(run_dirs: list[str | Path], out: str | Path | None = None, *, max_text: int = DEFAULT_MAX_TEXT) -> Path:
    """Write the report of ``run_dirs`` (default: RUN_DIR/report.html of the first) and return its path."""
    views = [_run_view(Path(d), max_text) for d in run_dirs]
    comparison, refusal = None, None
    if len(run_dirs) == 2:
        from nel.compare import compare_runs

        try:
            comparison = compare_runs(run_dirs[0], run_dirs[1])
        except NelError as exc:  # not comparable: the report says why instead of failing
            refusal = str(exc)
    target = Path(out) if out is not None else RunDir(run_dirs[0]).report_html
    write_text_atomic(target, render(views, comparison, refusal))
    return target


def render(views: list[RunView], comparison: dict[str, Any] | None, refusal: str | None) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("nel.report", "."), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # fmt: skip
    template = env.get_template("template.html.j2")
    return template.render(views=views, comparison=comparison, refusal=refusal, headers=HEADERS,
                           version=__version__, page_rows=PAGE_ROWS)  # fmt: skip


def _run_view(run_dir: Path, max_text: int) -> RunView:
    summary = load_summary(run_dir)
    path = RunDir(run_dir).trajectories
    try:
        table = _in_key_order(pq.read_table(path, columns=list(_ROW_COLUMNS)))
    except FileNotFoundError:
        raise StoreError(f"{run_dir} has no {path.name}: reduce it first (nel reduce {run_dir})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise StoreError(f"cannot read {path}: {exc}") from exc
    cells = table_cells(summary)
    runtime = summary.runtime
    notes = []
    if "rescored" in summary.run:
        notes.append(f"rescored from {summary.run['rescored'].get('source')} "
                     f"with scorer {summary.run['rescored'].get('scorer_version')}")  # fmt: skip
    subsets = sorted({s for s in table.column("subset").to_pylist() if s is not None})
    return RunView(
        label=f"{summary.run.get('identity', {}).get('bench', '?')} · {summary.run.get('identity', {}).get('model_id', '?')}"
        f" · {run_dir}",
        summary=summary,
        cells=cells,
        headline=[c for c, r in zip(cells, summary.rows) if r.subset is None],
        plots=_plots(table, run_dir, runtime),
        error_kinds=runtime.get("error_kinds", {}),
        subsets=subsets,
        n_rows=len(table),
        rows=_rows_blob(table, subsets, max_text),
        notes=notes,
    )


def _in_key_order(table: Any) -> Any:
    """Rows by (problem, repeat); a merged file of in-order shards already is (the sort costs ~2 s at 100k rows)."""
    key = table.column("problem_idx").to_numpy() * (1 << 20) + table.column("repeat").to_numpy()
    if key.size < 2 or bool(np.all(key[1:] >= key[:-1])):
        return table
    return table.sort_by([("problem_idx", "ascending"), ("repeat", "ascending")])


def _plots(table: Any, run_dir: Path, runtime: dict[str, Any]) -> dict[str, str]:
    plots: dict[str, str] = {}
    metrics = json.loads(RunDir(run_dir).metrics.read_text())
    modes: dict[str, Any] = next(iter(metrics.values()), {})
    ks = sorted(int(m[5:]) for m in modes if m.startswith("pass@") and m[5:].isdigit())
    if len(ks) > 1:
        series = {name: [(float(k), float(modes[f"pass@{k}"][name])) for k in ks if name in modes[f"pass@{k}"]]
                  for name in score_names(modes["pass@1"])}  # fmt: skip
        plots["pass@k"] = line_chart(series, "k (samples per problem)", "pass@k (%)", y_range=(0.0, 100.0))
    latency = pc.fill_null(table.column("model_latency_s"), float("nan")).to_numpy(zero_copy_only=False)
    plots["model latency"] = histogram(latency.astype(float), "model latency (s)")
    tokens = pc.fill_null(table.column("completion_tokens"), -1).to_numpy(zero_copy_only=False).astype(float)
    plots["completion tokens"] = histogram(tokens[tokens >= 0], "completion tokens per row")
    limits = runtime.get("concurrency") or {}
    if limits:
        series = {f"shard {shard}": [(float(t), float(limit)) for t, limit in record.get("history", [])]
                  for shard, record in limits.items()}  # fmt: skip
        plots["adaptive concurrency limit"] = line_chart(series, "seconds since the shard started",
                                                         "requests in flight (limit)", steps=True)  # fmt: skip
    return {name: svg for name, svg in plots.items() if svg}


def _rows_blob(table: Any, subsets: list[str], max_text: int) -> str:
    """Rows as columns of compact JSON (prompts once per problem), gzip, base64: ~10x smaller than HTML rows."""

    def cut(values: list[Any]) -> list[Any]:
        if max_text <= 0:
            return values
        return [v if v is None or len(v) <= max_text else v[:max_text] + f" … [{len(v) - max_text} more chars]"
                for v in values]  # fmt: skip

    col = {name: table.column(name).to_pylist() for name in _ROW_COLUMNS if name != "messages"}
    problems = col["problem_idx"]
    prompts: dict[int, str | None] = {}
    messages = table.column("messages")
    seen: set[int] = set()
    firsts = [i for i, p in enumerate(problems) if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]
    for i in firsts:
        raw = messages[i].as_py()
        prompts[problems[i]] = _prompt_text(raw)
    subset_code = {s: i for i, s in enumerate(subsets)}
    kinds = col["error_kind"]
    verdict = [("failed" if k not in TERMINAL_ERROR_KINDS else "correct" if c else "wrong")
               for k, c in zip(kinds, col["correct"])]  # fmt: skip
    latency = np.round(pc.fill_null(table.column("model_latency_s"), -1.0).to_numpy(zero_copy_only=False), 3)
    payload = {
        "problem": problems, "repeat": col["repeat"], "subset": [subset_code.get(s, -1) for s in col["subset"]],
        "verdict": verdict, "reward": col["reward"], "kind": kinds, "finish": col["finish_reason"],
        "latency": latency.tolist(), "tokens": col["completion_tokens"],
        "extracted": cut(col["extracted_answer"]), "expected": cut(col["expected_answer"]),
        "response": cut(col["response"]), "reasoning": cut(col["reasoning_content"]),
        "details": cut(col["details"]), "error": cut(col["error"]),
        "prompts": {str(k): v for k, v in zip(prompts, cut(list(prompts.values())))},
    }  # fmt: skip
    return base64.b64encode(gzip.compress(orjson.dumps(payload), compresslevel=1, mtime=0)).decode()


def _prompt_text(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        messages = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in messages if isinstance(m, dict))


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nel report", description="Write a self-contained HTML report.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="reduced runs; two: the compare view too")
    parser.add_argument("--out", help="the HTML file (default: RUN_DIR/report.html of the first run)")
    parser.add_argument("--max-text", type=int, default=DEFAULT_MAX_TEXT,
                        help=f"characters kept of each prompt/response/reasoning (default {DEFAULT_MAX_TEXT}; 0: all)")  # fmt: skip
    args = parser.parse_args(argv)
    path = build_report(args.run_dirs, args.out, max_text=args.max_text)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
