"""nel against NeMo Evaluator 0.3.0 on one trivial benchmark: same server, same requests, one run.

    python benchmarks/bench_nemo_evaluator.py [--nemo-venv DIR] [--requests 2000] \
        [--concurrency 16 64] [--latency 0 0.02] [--rounds 5]

NeMo Evaluator needs Python 3.12, so it lives in its own venv (never one of nel's dependencies):

    python3.12 -m venv /tmp/nemoeval-venv && /tmp/nemoeval-venv/bin/pip install nemo-evaluator==0.3.0

(--nemo-venv or $NEMO_EVALUATOR_VENV; default /tmp/nemoeval-venv). Without it the benchmark prints
a skip line and exits 0.

Per configuration (latency, concurrency) one test model server (`nel.testing.model_server`, its own
process, every reply "The answer is 42.") serves, in interleaved rounds, each a fresh process:
  nel          `run_evaluation` of bench_loop's TrivialEnv on uvloop, as `nel eval run` runs it
               (Parquet store, reduce to metrics.json + merged trajectories).
  nel-asyncio  the same on the stock asyncio loop (NeMo Evaluator's loop), to separate uvloop's share.
  nemo-cli     `nel eval run config.yaml` of NeMo Evaluator (its CLI, in-process): a BYOB benchmark
               with the same prompts and an `"42" in response` scorer, max_concurrent = concurrency;
               its adapter proxy, step logs, progress, bundle and reports, as a user gets them.
  nemo-loop    NeMo Evaluator's `run_evaluation` + `ChatSolver` called directly (no adapter proxy),
               step logs on and the bundle written: its library path, the counterpart of nel's.
Each driver times only the evaluation (imports and interpreter start excluded), and reports
requests/s, its CPU time per request and its peak RSS; the server's own request counter checks that
every run sent exactly N requests. Medians over rounds; ratios nel / NeMo Evaluator.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
ANSWER = "The answer is 42."
SYSTEMS = ("nel", "nel-asyncio", "nemo-cli", "nemo-loop")

# A BYOB benchmark file for NeMo Evaluator's CLI (it loads a .py path given as the benchmark name).
_BYOB = """
from nemo_evaluator.environments.custom import benchmark, scorer


@benchmark(name="trivial", dataset=lambda: [{{"q": f"question {{i}}", "target": "42"}} for i in range({n})],
           prompt="{{q}}", target_field="target")
@scorer
def score(sample):
    return {{"correct": "42" in sample.response}}
"""


# ----------------------------------------------------------------------------- drivers
# Each runs in a fresh interpreter (nel's venv or NeMo Evaluator's) and prints one JSON line.


def _usage() -> tuple[float, float]:
    """CPU seconds so far, and peak RSS in MB.

    The peak is VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a small
    driver started by a large parent would report the parent's size.
    """
    ru = resource.getrusage(resource.RUSAGE_SELF)
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return ru.ru_utime + ru.ru_stime, hwm / 1024


def _drive_nel(url: str, n: int, concurrency: int, out: Path, loop: str) -> dict[str, Any]:
    import asyncio

    import uvloop

    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from bench_loop import TrivialEnv

    from nel import ChatSolver, ModelClient, run_evaluation

    client = ModelClient(url, "m", concurrency=concurrency)
    coro = run_evaluation(TrivialEnv(n), ChatSolver(client), output_dir=out, concurrency=concurrency,
                          progress="none")  # fmt: skip
    cpu0, t0 = _usage()[0], time.perf_counter()
    result = uvloop.run(coro) if loop == "uvloop" else asyncio.run(coro)
    elapsed = time.perf_counter() - t0
    cpu, rss = _usage()
    assert result.done == n and result.failed == 0 and result.metrics, result
    return {
        "elapsed": elapsed,
        "cpu": cpu - cpu0,
        "rss_mb": rss,
        "rows": result.done,
        "metrics": result.metrics,
    }


def _nemo_config(url: str, n: int, concurrency: int, out: Path) -> Path:
    bench = out / "trivial_bench.py"
    bench.write_text(_BYOB.format(n=n))
    config = {
        "services": {
            "model": {
                "type": "api",
                "url": f"{url}/chat/completions",
                "protocol": "chat_completions",
                "model": "m",
            }
        },  # fmt: skip
        "benchmarks": [
            {
                "name": str(bench),
                "solver": {"type": "simple", "service": "model"},
                "max_concurrent": concurrency,
            }
        ],  # fmt: skip
        "output": {"dir": str(out / "results")},
    }
    path = out / "config.json"  # YAML is a superset of JSON: the CLI reads it as its YAML config
    path.write_text(json.dumps(config))
    return path


def _results_rows(out: Path) -> list[dict[str, Any]]:
    files = list(out.rglob("results.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def _drive_nemo_cli(url: str, n: int, concurrency: int, out: Path) -> dict[str, Any]:
    from nemo_evaluator.cli.main import cli

    config = _nemo_config(url, n, concurrency, out)
    cpu0, t0 = _usage()[0], time.perf_counter()
    try:
        cli.main(["eval", "run", str(config)], prog_name="nel", standalone_mode=False)
    except SystemExit as exc:  # the local executor exits 1 when a benchmark failed
        if exc.code:
            raise
    elapsed = time.perf_counter() - t0
    cpu, rss = _usage()
    rows = _results_rows(out / "results")
    assert len(rows) == n and all(r["reward"] == 1.0 for r in rows), (len(rows), rows[:1])
    return {"elapsed": elapsed, "cpu": cpu - cpu0, "rss_mb": rss, "rows": len(rows)}


def _drive_nemo_loop(url: str, n: int, concurrency: int, out: Path) -> dict[str, Any]:
    import asyncio

    from nemo_evaluator.engine.artifacts import write_all
    from nemo_evaluator.engine.eval_loop import run_evaluation
    from nemo_evaluator.engine.model_client import ModelClient
    from nemo_evaluator.environments.registry import get_environment
    from nemo_evaluator.solvers import ChatSolver

    config = json.loads(_nemo_config(url, n, concurrency, out).read_text())
    env = get_environment(config["benchmarks"][0]["name"])
    solver = ChatSolver(ModelClient(base_url=url, model="m", max_concurrent=concurrency))
    task_dir = out / "results" / "trivial"
    task_dir.mkdir(parents=True)

    async def run() -> dict[str, Any]:
        bundle = await run_evaluation(env, solver, max_concurrent=concurrency, step_log_dir=task_dir,
                                      config={"benchmark": "trivial", "model": "m", "base_url": url})  # fmt: skip
        write_all(bundle, task_dir)
        return bundle

    cpu0, t0 = _usage()[0], time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - t0
    cpu, rss = _usage()
    rows = _results_rows(task_dir)
    assert len(rows) == n and all(r["reward"] == 1.0 for r in rows), (len(rows), rows[:1])
    return {"elapsed": elapsed, "cpu": cpu - cpu0, "rss_mb": rss, "rows": len(rows)}


def _driver(argv: list[str]) -> None:
    system, url, n, concurrency, out = argv[0], argv[1], int(argv[2]), int(argv[3]), Path(argv[4])
    if system in ("nel", "nel-asyncio"):
        res = _drive_nel(url, n, concurrency, out, "uvloop" if system == "nel" else "asyncio")
    elif system == "nemo-cli":
        res = _drive_nemo_cli(url, n, concurrency, out)
    else:
        res = _drive_nemo_loop(url, n, concurrency, out)
    print("RESULT " + json.dumps(res), flush=True)


# ----------------------------------------------------------------------------- the benchmark


def _server_count(url: str) -> int:
    root = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_stats", timeout=10) as resp:
        return int(json.loads(resp.read())["requests"])


def _run_one(system: str, python: str, url: str, n: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=tmp))
    env = dict(os.environ, XDG_DATA_HOME=str(out / "xdg"))  # NeMo Evaluator's run store, not ~/.local
    if system.startswith("nel"):
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    else:
        env.pop("PYTHONPATH", None)  # nothing of nel's on NeMo Evaluator's path
    before = _server_count(url)
    with open(out / "driver.log", "wb") as log:  # the CLI logs every request at INFO: a file, not a tty
        proc = subprocess.run([python, str(HERE), "--driver", system, url, str(n), str(concurrency), str(out)],
                              stdout=subprocess.PIPE, stderr=log, env=env, cwd=out)  # fmt: skip
    sent = _server_count(url) - before
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (out / "driver.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{system} driver failed (exit {proc.returncode}); log {out / 'driver.log'}:\n{tail}"
        )
    res = json.loads(lines[-1].removeprefix("RESULT "))
    if sent != n:
        raise RuntimeError(f"{system}: the server counted {sent} requests, expected {n}")
    res["rps"] = n / res["elapsed"]
    res["cpu_us_per_req"] = res["cpu"] / n * 1e6
    return res


def _configuration(pythons: dict[str, str], n: int, concurrency: int, latency: float, rounds: int,
                   tmp: Path) -> dict[str, dict[str, float]]:  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from nel.testing.model_server import start_server_process, stop_server_process

    rules = tmp / "rules.json"
    rules.write_text(json.dumps({"default": {"content": ANSWER}}))
    proc, url = start_server_process(
        ["--port", "0", "--no-record", "--latency", str(latency), "--rules", str(rules)]
    )
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in pythons}
    order = list(pythons)
    try:
        for r in range(rounds):
            for system in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
                runs[system].append(_run_one(system, pythons[system], url, n, concurrency, tmp))
    finally:
        stop_server_process(proc)
    return {s: {k: statistics.median(x[k] for x in v) for k in ("rps", "cpu_us_per_req", "rss_mb")}
            for s, v in runs.items()}  # fmt: skip


def _nemo_python(venv: str) -> str | None:
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        return None
    check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('nemo-evaluator'))"],
                           capture_output=True, text=True)  # fmt: skip
    return str(python) if check.returncode == 0 and check.stdout.strip() == "0.3.0" else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nemo-venv", default=os.environ.get("NEMO_EVALUATOR_VENV", "/tmp/nemoeval-venv"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.02], help="seconds per reply")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--workdir", help="where both systems write their runs (default: the temp dir); "
                        "/dev/shm takes fsync out of the picture")  # fmt: skip
    args = parser.parse_args()
    nemo = _nemo_python(args.nemo_venv)
    if nemo is None:
        print(f"skip: no nemo-evaluator 0.3.0 venv at {args.nemo_venv}; make one with\n"
              f"  python3.12 -m venv {args.nemo_venv} && {args.nemo_venv}/bin/pip install nemo-evaluator==0.3.0\n"
              "(or point --nemo-venv / $NEMO_EVALUATOR_VENV at one)")  # fmt: skip
        return
    pythons = {s: (sys.executable if s.startswith("nel") else nemo) for s in args.systems}
    names = list(pythons)
    print(
        f"{args.requests} requests a run, {args.rounds} interleaved rounds, medians; load {os.getloadavg()[0]:.1f}"
    )
    print("| latency ms | conc. | ideal req/s | " + " | ".join(f"{s} req/s" for s in names)
          + " | nel / nemo-cli | nel / nemo-loop | " + " | ".join(f"{s} CPU µs/req" for s in names)
          + " | " + " | ".join(f"{s} RSS MB" for s in names) + " | load |")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-nemo-", dir=args.workdir) as tmp:
        for latency in args.latency:
            for concurrency in args.concurrency:
                med = _configuration(pythons, args.requests, concurrency, latency, args.rounds, Path(tmp))
                ratios = [f"{med['nel']['rps'] / med[s]['rps']:.2f}" if "nel" in med and s in med else "-"
                          for s in ("nemo-cli", "nemo-loop")]  # fmt: skip
                ideal = f"{concurrency / latency:,.0f}" if latency else "-"
                cells = [f"{latency * 1000:g}", str(concurrency), ideal]
                cells += [f"{med[s]['rps']:,.0f}" for s in names] + ratios
                cells += [f"{med[s]['cpu_us_per_req']:,.0f}" for s in names]
                cells += [f"{med[s]['rss_mb']:.0f}" for s in names] + [f"{os.getloadavg()[0]:.1f}"]
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--driver"]:
        _driver(sys.argv[2:])
    else:
        main()
