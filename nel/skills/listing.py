"""What ``nel list`` shows: every benchmark, the backend that serves it, and whether it runs.

One row per catalog entry, plus (when the nemo_skills package is importable and the backend
is not forced to native) every other dataset NeMo-Skills ships. Nothing here raises for one
bad row: a benchmark that cannot even be resolved shows the reason in its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nel.errors import NelError
from nel.skills.backends import nemo_skills_available, select_backend
from nel.skills.catalog import CATALOG, Benchmark
from nel.skills.data import split_path


@dataclass(frozen=True)
class ListedBenchmark:
    name: str
    title: str
    metrics_type: str
    problems: str
    backend: str
    prepared: bool
    status: str

    @property
    def runnable(self) -> bool:
        return self.status.startswith("runnable")


def list_benchmarks(data_dir: Path, backend: str = "auto") -> list[ListedBenchmark]:
    names = list(CATALOG)
    if backend != "native" and nemo_skills_available():
        from nel.skills.nemo_backend import nemo_skills_datasets

        names += [n for n in nemo_skills_datasets() if n not in CATALOG]
    return [_describe(name, data_dir, backend) for name in names]


def _describe(name: str, data_dir: Path, choice: str) -> ListedBenchmark:
    bench = CATALOG.get(name)
    title = bench.title if bench else name
    try:
        served = select_backend(name, choice)
    except NelError as exc:
        return ListedBenchmark(
            name, title, bench.metrics_type if bench else "?", "?", choice, False, str(exc)
        )
    path = split_path(data_dir, name, served.eval_split)
    prepared = path.exists()
    if prepared:
        with path.open("rb") as handle:
            problems = str(sum(1 for line in handle if line.strip()))
    else:
        count = bench.num_problems if bench else served.num_problems
        problems = str(count) if count else "?"
    status = served.unsupported_reason() or _runnable(served.needs_judge, None if prepared else bench)
    return ListedBenchmark(name, title, served.metrics_type or "-", problems, served.kind, prepared, status)


def _runnable(needs_judge: bool, to_download: Benchmark | None) -> str:
    """``runnable``, with what a run needs beyond the model: a judge, the network, a token."""
    needs = ["LLM judge: --judge-url"] if needs_judge else []
    sources = to_download.sources if to_download is not None else ()
    if any(source.package is None for source in sources):
        needs.append("network to download (or --mirror)")
    if any(source.gated for source in sources):
        needs.append("HF_TOKEN (gated on the HF hub)")
    needs += to_download.needs if to_download is not None else ()
    return f"runnable ({'; '.join(needs)})" if needs else "runnable"
