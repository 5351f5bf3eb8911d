"""``nel sweep FILE``: keep a grid of runs (models x benchmarks x settings) evaluated.

Each call looks at every run of the grid and does only what is missing, so it is safe to
run from cron every few minutes::

    complete      collect its headline metrics into the results table (once)
    active        jobs are queued or running: leave it alone
    not finished  submit the shards that are not done, plus a reducer (like `nel resume`),
                  unless it was already submitted ``max_submissions`` times
    new           submit it

A run is identified by its config hash: its run dir is
``<output_root>/<bench>__<model>__<hash>``, the same one ``python -m nel.launch`` picks, so
a sweep and a hand launch of the same config share their work.

The sweep file (YAML; see launch/example_sweep.yaml)::

    name: nightly
    output_root: /shared/nel_runs
    results: /shared/nel_runs/results.parquet
    backend: slurm              # or local: run the shards in this process (no SLURM); "mode" also works
    max_submissions: 3
    common: [shards=8, cluster=default]        # Hydra overrides for every run
    models:                                     # label -> overrides
      qwen3-8b: [model.url=http://gpu-node-12:8000/v1, model.model_id=Qwen/Qwen3-8B]
    benchmarks: [gsm8k, aime24]                 # bench=skills/<name>
    settings:                                   # label -> overrides
      greedy: [repeats=1, model.temperature=0.0]
      sampled: [repeats=8, model.temperature=0.6]

The results table has one row per (run, metrics key, mode, metric): for example
(qwen3-8b, aime24, sampled, "aime24", "pass@1[avg-of-8]", "symbolic_correct", 43.3, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nel.backends import BACKENDS, get_backend
from nel.backends.base import ranges
from nel.errors import ConfigError, ExitCode, NelError, StoreError, exit_code_for
from nel.launch import compose_plan as launch_plan
from nel.launch import conf_dir
from nel.metrics import RUN_FIELDS
from nel.reconcile import Target, advance

RESULTS_SCHEMA_VERSION = "1"
_SWEEP_KEYS = {
    "name",
    "backend",
    "output_root",
    "results",
    "mode",
    "max_submissions",
    "common",
    "models",
    "benchmarks",
    "settings",
}
# Per-mode entries of metrics.json that describe the run rather than score it.
_NOT_SCORES = set(RUN_FIELDS)


@dataclass(frozen=True)
class SweepFile:
    name: str
    output_root: str
    results: str
    backend: str = "slurm"
    max_submissions: int = 3
    common: list[str] = field(default_factory=list)
    models: dict[str, list[str]] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=list)
    settings: dict[str, list[str]] = field(default_factory=lambda: {"default": []})

    @classmethod
    def load(cls, path: Path) -> SweepFile:
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"sweep file {path} does not exist") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read sweep file {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"sweep file {path} must be a mapping (name, models, benchmarks, ...)")
        unknown = sorted(set(raw) - _SWEEP_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_SWEEP_KEYS))}"
            )
        base = path.parent
        output_root = str(raw.get("output_root") or "nel_runs")
        data: dict[str, Any] = {
            "name": str(raw.get("name") or path.stem),
            "output_root": str((base / output_root).resolve()),
            "results": str(
                (base / str(raw.get("results") or Path(output_root) / "results.parquet")).resolve()
            ),
            "backend": str(raw.get("backend") or raw.get("mode") or "slurm"),
            "max_submissions": int(raw.get("max_submissions", 3)),
            "common": _overrides(raw.get("common"), f"{path}: common"),
            "models": _labelled(raw.get("models"), f"{path}: models"),
            "benchmarks": [str(b) for b in raw.get("benchmarks") or []],
            "settings": _labelled(raw.get("settings"), f"{path}: settings") or {"default": []},
        }
        sweep = cls(**data)
        if not sweep.models or not sweep.benchmarks:
            raise ConfigError(f"{path}: needs at least one entry under models and under benchmarks")
        if "backend" in raw and "mode" in raw and raw["backend"] != raw["mode"]:
            raise ConfigError(f"{path}: backend {raw['backend']!r} and mode {raw['mode']!r} disagree; keep backend")
        if sweep.backend not in BACKENDS:
            raise ConfigError(
                f"{path}: backend must be one of {', '.join(sorted(BACKENDS))}, got {sweep.backend!r}"
            )
        return sweep

    def runs(self) -> Iterator[SweepRun]:
        for (model, m_over), bench, (setting, s_over) in itertools.product(
            self.models.items(), self.benchmarks, self.settings.items()
        ):
            bench_option = bench if "/" in bench else f"skills/{bench}"
            overrides = [
                *self.common,
                *m_over,
                f"bench={bench_option}",
                *s_over,
                f"output_root={self.output_root}",
            ]
            yield SweepRun(model, bench, setting, overrides)


@dataclass(frozen=True)
class SweepRun:
    model: str
    bench: str
    setting: str
    overrides: list[str]

    @property
    def label(self) -> str:
        return f"{self.model} / {self.bench} / {self.setting}"


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of Hydra overrides like model.temperature=0.6")
    return list(value)


def _labelled(value: Any, where: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if isinstance(value, list):  # a bare list of labels-as-options: [local_smollm2] -> model=local_smollm2
        return {str(v): [] for v in value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must map a label to a list of overrides")
    return {str(k): _overrides(v, f"{where}.{k}") for k, v in value.items()}


# --------------------------------------------------------------------------------------------


def compose_plan(run: SweepRun, backend: str) -> Any:
    """The launch plan of one run of the grid (a model label that names conf/model/LABEL.yaml
    selects it unless the run's overrides pick a model themselves)."""
    overrides = list(run.overrides)
    if not any(o.startswith("model=") for o in overrides) and _is_model_option(run.model):
        overrides.insert(0, f"model={run.model}")
    try:
        return launch_plan([*overrides, f"backend={backend}"])
    except ConfigError as exc:
        raise ConfigError(f"{run.label}: {exc}") from None


def _is_model_option(label: str) -> bool:
    return (conf_dir() / "model" / f"{label}.yaml").exists()


@dataclass
class Outcome:
    run: SweepRun
    run_dir: Path | None
    action: str  # submitted | running | complete | collected | gave-up | would-submit | error
    detail: str = ""


# nel.reconcile's step -> the sweep's word for it
_ACTIONS = {"active": "running", "gave-up": "gave-up", "would-submit": "would-submit", "submitted": "submitted"}


def sweep(sweep_file: SweepFile, *, dry_run: bool = False, out: Any = None) -> list[Outcome]:
    out = out or sys.stdout
    outcomes: list[Outcome] = []
    collected = _collected_runs(Path(sweep_file.results))
    backend = get_backend(sweep_file.backend)
    for run in sweep_file.runs():
        run_dir = None
        try:
            plan = compose_plan(run, sweep_file.backend)
            run_dir = plan.run_dir
            target = Target(
                plan.spec, plan.total_shards, plan.settings, plan.allow_partial,
                {**plan.record(), "sweep": sweep_file.name},
            )  # fmt: skip
            step = advance(
                target, backend, dry_run=dry_run, max_submissions=sweep_file.max_submissions, out=out
            )
        except NelError as exc:
            outcomes.append(Outcome(run, run_dir, "error", str(exc)))
            continue
        if step.action == "complete" or (step.action == "ran" and step.status and step.status.complete):
            action = "complete" if plan.spec.config_hash() in collected else "collected"
            outcomes.append(Outcome(run, run_dir, action))
        elif step.action == "ran":
            outcomes.append(Outcome(run, run_dir, "error", f"incomplete; see nel status {run_dir}"))
        elif step.action == "would-submit":
            detail = f"shards {ranges(step.todo) or 'none'} of {plan.total_shards}"
            outcomes.append(Outcome(run, run_dir, "would-submit", detail))
        elif step.action == "submitted" and step.submission is not None:
            jobs = ",".join(step.submission.job_ids())
            outcomes.append(Outcome(run, run_dir, "submitted", f"jobs {jobs}, shards {len(step.todo)}"))
        else:
            outcomes.append(Outcome(run, run_dir, _ACTIONS.get(step.action, step.action), step.detail))
    fresh = [o for o in outcomes if o.action == "collected" and o.run_dir is not None]
    if fresh and not dry_run:
        append_results(Path(sweep_file.results), [_result_rows(sweep_file.name, o) for o in fresh])
    return outcomes


# --------------------------------------------------------------------------------------------
# The results table


def _result_rows(sweep_name: str, outcome: Outcome) -> list[dict[str, Any]]:
    from nel.rundir import RunDir, read_run

    run_dir = outcome.run_dir
    assert run_dir is not None
    run = read_run(run_dir)
    metrics_path = RunDir(run_dir).metrics
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {metrics_path}: {exc}") from exc
    finished = dt.datetime.fromtimestamp(metrics_path.stat().st_mtime, dt.timezone.utc).isoformat(
        timespec="seconds"
    )
    spec = run.get("spec", {})
    base = {
        "sweep": sweep_name,
        "model": outcome.run.model,
        "bench": outcome.run.bench,
        "setting": outcome.run.setting,
        "config_hash": run["run_id"],
        "run_dir": str(run_dir),
        "model_id": spec.get("model", {}).get("model_id"),
        "repeats": spec.get("repeats"),
        "finished_at": finished,
        "collected_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "nel_version": run.get("nel_version"),
    }
    rows = []
    for key, modes in metrics.items():
        for mode, values in (modes or {}).items():
            for metric, value in values.items():
                if metric in _NOT_SCORES or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if metric.endswith(("_std_err", "_ci95")):
                    continue
                ci = values.get(f"{metric}_ci95") or [None, None]
                rows.append(
                    {
                        **base,
                        "metrics_key": key,
                        "mode": mode,
                        "metric": metric,
                        "value": float(value),
                        "std_err": _float(values.get(f"{metric}_std_err")),
                        "ci95_low": _float(ci[0]),
                        "ci95_high": _float(ci[1]),
                        "num_entries": values.get("num_entries"),
                    }
                )
    return rows


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _results_schema() -> Any:
    import pyarrow as pa

    s, i, f = pa.string(), pa.int64(), pa.float64()
    fields = [
        ("sweep", s), ("model", s), ("bench", s), ("setting", s), ("config_hash", s), ("run_dir", s),
        ("model_id", s), ("repeats", i), ("metrics_key", s), ("mode", s), ("metric", s), ("value", f),
        ("std_err", f), ("ci95_low", f), ("ci95_high", f), ("num_entries", i), ("finished_at", s),
        ("collected_at", s), ("nel_version", s),
    ]  # fmt: skip
    return pa.schema(fields, metadata={"nel.results_schema": RESULTS_SCHEMA_VERSION})


def _collected_runs(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    if not path.exists():
        return set()
    try:
        return set(pq.read_table(path, columns=["config_hash"]).column("config_hash").to_pylist())
    except Exception as exc:
        raise StoreError(f"cannot read results table {path}: {exc}") from exc


def append_results(path: Path, runs: list[list[dict[str, Any]]]) -> int:
    """Append rows (skipping runs already in the table) atomically: write a tmp file, rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _results_schema()
    have = _collected_runs(path)
    new_rows = [row for rows in runs for row in rows if row["config_hash"] not in have]
    if not new_rows:
        return 0
    table = pa.Table.from_pylist(new_rows, schema=schema)
    if path.exists():
        table = pa.concat_tables([pq.read_table(path).cast(schema), table])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return len(new_rows)


@contextlib.contextmanager
def _sweep_lock(results: Path) -> Iterator[bool]:
    """One sweep at a time per results table (cron may start the next before this one ends)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results.with_name(f".{results.name}.lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nel sweep",
        description="Submit every run of a sweep file (models x benchmarks x settings) that is neither "
        "done nor running, and append finished runs' headline metrics to the results table. "
        "Idempotent: safe to run from cron. Exit 0 when every run is complete, 5 while some are "
        "in progress, 1 if any run errored or was given up, 2 for bad input.",
    )
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted; submit nothing"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the outcomes as JSON lines (and nothing else on stdout)"
    )
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout  # what the runs print, e.g. the local backend's shards
    try:
        sweep_file = SweepFile.load(args.sweep_file)
        if args.dry_run:  # reads only: no lock, nothing created
            outcomes = sweep(sweep_file, dry_run=True, out=out)
            return _print_outcomes(outcomes, as_json=args.json)
        with _sweep_lock(Path(sweep_file.results)) as locked:
            if not locked:
                print(f"nel sweep: another sweep holds the lock of {sweep_file.results}; nothing done", file=sys.stderr)
                return ExitCode.IN_PROGRESS
            outcomes = sweep(sweep_file, dry_run=args.dry_run, out=out)
    except NelError as exc:
        print(f"nel: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return _print_outcomes(outcomes, as_json=args.json)


def _print_outcomes(outcomes: list[Outcome], *, as_json: bool) -> int:
    for o in outcomes:
        if as_json:
            print(
                json.dumps(
                    {
                        **dataclasses.asdict(o.run),
                        "run_dir": str(o.run_dir),
                        "action": o.action,
                        "detail": o.detail,
                    }
                )
            )
        else:
            print(
                f"{o.action:<12} {o.run.label:<50} {o.run_dir or ''}"
                + (f"\n{'':13}{o.detail}" if o.detail else "")
            )
    actions = {o.action for o in outcomes}
    if actions & {"error", "gave-up"}:
        return ExitCode.INCOMPLETE
    return ExitCode.OK if actions <= {"complete", "collected"} else ExitCode.IN_PROGRESS
