"""``nel status`` and ``nel resume``: where a run's shards stand, and finishing it.

Both read the run directory only (run.json, progress files, launch/ records) and ask the
backend that made each submission about its jobs (nel.reconcile), so any machine that sees
the shared filesystem can follow or finish a run. Shards are numbered from 0.

Exit codes (nel.errors.ExitCode): 0 complete (metrics written), 5 in progress, 1 needs
``nel resume`` (something failed or is missing, nothing is active), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from nel.backends import get_backend
from nel.backends.base import ClusterSettings, Submission, ranges, read_launch_record
from nel.errors import ConfigError, ExitCode, NelError, exit_code_for
from nel.reconcile import RunStatus, Step, Target, advance, run_status
from nel.rundir import RunDir, read_run
from nel.spec import RunSpec

EXIT_COMPLETE, EXIT_NEEDS_RESUME, EXIT_BAD_INPUT, EXIT_IN_PROGRESS = (
    ExitCode.OK,
    ExitCode.INCOMPLETE,
    ExitCode.USAGE,
    ExitCode.IN_PROGRESS,
)


def format_status(status: RunStatus, *, details: bool = True) -> str:
    lines = [f"run {status.run_dir} ({status.total_shards} shards, numbered from 0)", status.headline(), ""]
    lines.append(f"{'shard':>6}  {'state':<8} {'rows':>13}  {'failed':>6}  {'job':<12} job state")
    for s in status.shards:
        rows = f"{s.done}/{s.total}" if s.total is not None else "-"
        lines.append(
            f"{s.idx:>6}  {s.state:<8} {rows:>13}  {s.failed_rows:>6}  {s.job or '-':<12} {s.job_state or '-'}"
        )
    if details:
        for s in status.shards:
            if s.detail and s.state in ("failed", "running"):
                lines.append(f"\nshard {s.idx} ({s.state}): " + s.detail)
        if status.reducer_detail:
            lines.append(f"\nreducer {status.reducer_job} {status.reducer_state}: {status.reducer_detail}")
    hint = _next_step(status)
    if hint:
        lines.append("\n" + hint)
    return "\n".join(lines)


def _next_step(status: RunStatus) -> str | None:
    if status.complete and not status.active:
        return f"complete: {RunDir(status.run_dir).report}"
    if status.active:
        return f"in progress; follow with: nel status {status.run_dir} --wait"
    return f"to finish it: nel resume {status.run_dir}"


# --------------------------------------------------------------------------------------------
# Following a submitted run


def watch(run_dir: Path, *, poll_s: float = 10.0, out: TextIO | None = None) -> RunStatus:
    """Print a line whenever the run's state changes, until nothing is active; return the end state."""
    out = out or sys.stdout
    started = time.monotonic()
    last = None
    while True:
        status = run_status(run_dir)
        line = status.headline()
        if line != last:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", file=out, flush=True)
            last = line
        if not status.active:
            return status
        time.sleep(poll_s)


def finish_wait(run_dir: Path, poll_s: float, out: TextIO | None = None) -> int:
    """Follow the run until nothing is active; print the shard table, then the report itself."""
    out = out or sys.stdout
    final = watch(run_dir, poll_s=poll_s, out=out)
    print(format_status(final), file=out)
    report = RunDir(run_dir).report
    if final.complete and report.exists():
        print("\n" + report.read_text(), file=out)
    return final.exit_code()


def describe_submitted(run_dir: Path, submission: Submission) -> str:
    jobs = ",".join(submission.job_ids())
    lines = [f"nel: run dir  {run_dir}"]
    if submission.array_job:
        lines.append(
            f"nel: submitted array job {submission.array_job} (shards {ranges(submission.shards)} "
            f"of {submission.total_shards}) and reducer job {submission.reducer_job} "
            f"(afterany:{submission.array_job}) to {submission.backend}"
        )
    else:
        lines.append(f"nel: every shard is done; submitted reducer job {submission.reducer_job}")
    slurm = submission.backend == "slurm"
    lines.append(
        f"nel: watch    nel status {run_dir} --wait"
        + (f"   (or: squeue -j {jobs}; sacct -j {jobs})" if slurm else "")
    )
    if slurm:
        lines.append(f"nel: logs     {run_dir / 'slurm'}/")
    lines.append(
        f"nel: results  {run_dir / 'report.txt'} and metrics.json once job {submission.reducer_job} is done"
    )
    return "\n".join(lines)


def report_step(step: Step, target: Target, *, wait: bool, poll_s: float, prog: str) -> int:
    """Print what :func:`nel.reconcile.advance` did, the way launch and resume both say it; exit code."""
    run_dir = target.run_dir
    if step.action == "complete":
        print(f"{prog}: {run_dir} is already complete; nothing submitted")
        report = RunDir(run_dir).report
        print(report.read_text() if report.exists() else "")
        return EXIT_COMPLETE
    if step.action == "active":
        print(f"{prog}: {run_dir} still has active jobs; nothing submitted\n{step.detail}")
        return finish_wait(run_dir, poll_s) if wait else EXIT_IN_PROGRESS
    if step.action == "would-submit":
        print(f"{prog}: dry run; nothing is created or submitted\n{step.detail}")
        return EXIT_COMPLETE
    if step.action == "submitted" and step.submission is not None:
        print(describe_submitted(run_dir, step.submission), flush=True)
        return finish_wait(run_dir, poll_s) if wait else EXIT_COMPLETE
    assert step.status is not None  # "ran": the local backend ran the shards and the reducer
    return step.status.exit_code()


# --------------------------------------------------------------------------------------------
# nel status / nel resume


def status_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nel status",
        description="Show where every shard of a run stands (shards numbered from 0): done, running, "
        "pending, failed (with the tail of its log) or missing. Exit 0 complete, 5 in progress, 1 needs "
        "`nel resume`, 2 bad input (docs/cli.md).",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--wait", action="store_true", help="follow the run until nothing is active, then print the report"
    )
    parser.add_argument(
        "--poll", type=float, default=10.0, metavar="S", help="seconds between polls (--wait)"
    )
    args = parser.parse_args(argv)
    try:
        _check_run_dir(args.run_dir)
        if args.wait and not args.json:
            return finish_wait(args.run_dir, args.poll)
        status = watch(args.run_dir, poll_s=args.poll) if args.wait else run_status(args.run_dir)
    except NelError as exc:
        print(f"nel: error: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    if args.json:
        print(json.dumps(status_json(status), indent=2))
    else:
        print(format_status(status))
    return status.exit_code()


def status_json(status: RunStatus) -> dict[str, Any]:
    return {
        "run_dir": str(status.run_dir),
        "total_shards": status.total_shards,
        "complete": status.complete,
        "active": status.active,
        "reducer": {
            "job": status.reducer_job,
            "state": status.reducer_state,
            "active": status.reducer_active,
            "detail": status.reducer_detail,
        },
        "shards": [s.__dict__ for s in status.shards],
    }


def resume_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nel resume",
        description="Finish a run: resubmit only the shards that are not done (they resume from their "
        "Parquet parts) plus a new reducer, to the run's own backend. Cluster settings are the run's own "
        "(launch/launch.json) with any KEY=VALUE overrides applied, e.g. cluster.time_min=600.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="cluster.KEY=VALUE")
    parser.add_argument("--wait", action="store_true", help="follow the run until it is reduced")
    parser.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    parser.add_argument(
        "--local", action="store_true", help="run the shards in this process (--backend local)"
    )
    parser.add_argument(
        "--backend", metavar="NAME", help="where to run them (default: the run's own backend)"
    )
    parser.add_argument("--allow-partial", action="store_true", help="let the reducer write partial metrics")
    parser.add_argument("--poll", type=float, default=10.0, metavar="S")
    args = parser.parse_args(argv)
    try:
        return _resume(args)
    except NelError as exc:
        print(f"nel: error: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))


def _check_run_dir(run_dir: Path) -> None:
    """A path that is no run dir at all is a wrong argument (exit 2); a broken run.json is data (3)."""
    if not RunDir(run_dir).run_file.exists():
        raise ConfigError(f"{run_dir} is not a nel run directory (no run.json): give a run's output_dir")


def _resume(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir.resolve()
    _check_run_dir(run_dir)
    run = read_run(run_dir)
    spec = RunSpec.from_dict(run["spec"]).validate()
    if Path(spec.output_dir).resolve() != run_dir:  # the run dir was moved: follow it
        spec = RunSpec.from_dict({**run["spec"], "output_dir": str(run_dir)}).validate()
    record = read_launch_record(run_dir) or {}
    if args.local and args.backend not in (None, "local"):
        raise ConfigError(f"--local and --backend {args.backend} disagree; give one of them")
    backend = get_backend("local" if args.local else (args.backend or _recorded_backend(record)))
    target = Target(
        spec=spec,
        total_shards=int(run["total_shards"]),
        settings=cluster_settings(record.get("cluster", {}), args.overrides),
        allow_partial=bool(args.allow_partial or record.get("shards", {}).get("allow_partial", False)),
        record={k: v for k, v in record.items() if k not in ("backend", "mode")},
    )
    step = advance(target, backend, dry_run=args.dry_run)
    if step.action == "active":
        status = step.status
        assert status is not None
        jobs = sorted({s.job for s in status.shards if s.state in ("running", "pending") and s.job})
        print(
            f"nel: error: {run_dir} still has active jobs ({', '.join(jobs) or status.reducer_job}); "
            "wait for them (nel status --wait) or cancel them first",
            file=sys.stderr,
        )
        return EXIT_IN_PROGRESS
    if step.action == "complete":
        print(f"nel resume: {run_dir} is complete; nothing to do")
        return EXIT_COMPLETE
    return report_step(step, target, wait=args.wait, poll_s=args.poll, prog="nel resume")


def _recorded_backend(record: dict[str, Any]) -> str:
    """The backend the run was launched with (records from before backends say "mode")."""
    return str(record.get("backend") or record.get("mode") or "slurm")


def cluster_settings(base: dict[str, Any], overrides: Sequence[str]) -> ClusterSettings:
    """``base`` (a run's recorded cluster section) with ``cluster.KEY=VALUE`` overrides applied."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg: Any = OmegaConf.create({"cluster": base})
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith("cluster."):
            raise ConfigError(
                f"override {item!r} must look like cluster.KEY=VALUE (e.g. cluster.time_min=600)"
            )
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {exc}") from exc
    return ClusterSettings.from_dict(OmegaConf.to_container(cfg.cluster, resolve=True))  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nel.cluster status|resume ...`` (the same as ``nel status|resume``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"status": status_main, "resume": resume_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m nel.cluster {status,resume} ... (nel sweep is `nel sweep`)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
