"""The nemo_skills backend: NeMo-Skills' own dataset modules, prompts, preparation and evaluators.

Imported only when the ``nemo_skills`` package is importable (it is not a dependency of
nel). For a benchmark it reads ``nemo_skills.dataset.utils.get_dataset_module(name)``:
METRICS_TYPE, EVAL_SPLIT, and from GENERATION_ARGS the prompt config, ``eval_type``,
``eval_config.*`` and ``generation_key``; from JUDGE_ARGS the judge prompt config. Requests
come from NeMo-Skills' ``get_prompt(...).fill(row)``. Scoring calls NeMo-Skills' evaluator
for the ``eval_type``: class-based ones through their async ``eval_single``, file-based ones
(``multichoice``, ``if``, ``ifbench``) on a one-row temporary file in a worker thread. The
per-row scores are NeMo-Skills' own: its metrics class's ``_get_score_dict`` for the
METRICS_TYPE, under the names its nel scoring type lists (``nel.skills.scoring_types``). Judge-graded types
(SimpleQA, HLE) ask nel's judge client with NeMo-Skills' judge prompt config.

What it cannot do here is said up front by :meth:`NemoSkillsBackend.unsupported_reason`
(e.g. ``evalplus``, which downloads HumanEval+ and grades whole files; the ``if``/``ifbench``
evaluators, which run checkers from ``/opt/benchmarks`` in NeMo-Skills' container).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nel.client import ModelClient
from nel.errors import ConfigError, DataError, ScoringError, UnknownBenchmarkError, suggest
from nel.execution.sandbox import CodeExecutor
from nel.skills.data import read_jsonl, split_path
from nel.skills.judge import ask_judge, judge_details
from nel.skills.prompts import build_messages, render
from nel.skills.scoring_types import ScoringType, find_scoring_type
from nel.types import Message, VerifyResult

Row = dict[str, Any]

# eval_types this adapter can call, and what each needs on this machine.
_FILE_EVALUATORS_NEED = {
    "multichoice": None,
    "if": "/opt/benchmarks/google-research",
    "ifbench": "/opt/benchmarks/IFBench",
}


def parse_args(text: str) -> dict[str, Any]:
    """``"++prompt_config=generic/math ++eval_config.x=1"`` -> ``{"prompt_config": ..., "eval_config": {"x": 1}}``."""
    import yaml

    parsed: dict[str, Any] = {}
    for token in shlex.split(text or ""):
        key, sep, value = token.lstrip("+").partition("=")
        if not sep:
            continue
        target = parsed
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = yaml.safe_load(value) if value else value
    return parsed


def _dataset_module(name: str) -> Any:
    from nemo_skills.dataset.utils import get_dataset_module

    try:
        return get_dataset_module(name)[0]
    except (RuntimeError, ModuleNotFoundError):
        known = [p.name for p in _datasets_dir().iterdir() if (p / "__init__.py").exists()]
        raise UnknownBenchmarkError(f"nemo_skills has no dataset {name!r}{suggest(name, known)}") from None


def _datasets_dir() -> Path:
    import nemo_skills.dataset

    return Path(nemo_skills.dataset.__file__).parent


def nemo_skills_datasets() -> list[str]:
    """Every dataset module NeMo-Skills ships (for ``nel list``)."""
    return sorted(
        p.name for p in _datasets_dir().iterdir() if (p / "__init__.py").exists() and p.name != "__pycache__"
    )


class NemoSkillsBackend:
    kind = "nemo_skills"

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = _dataset_module(name)
        self.metrics_type: str = getattr(self.module, "METRICS_TYPE", "")
        self.scoring: ScoringType | None = find_scoring_type(self.metrics_type)
        self.eval_split: str = getattr(self.module, "EVAL_SPLIT", "test")
        generation = parse_args(getattr(self.module, "GENERATION_ARGS", ""))
        self.prompt_config: str | None = generation.get("prompt_config")
        self.eval_type: str | None = generation.get("eval_type")
        self.eval_config: dict[str, Any] = generation.get("eval_config", {})
        self.generation_key: str = generation.get("generation_key", "generation")
        self.judge_prompt_config: str | None = parse_args(getattr(self.module, "JUDGE_ARGS", "")).get(
            "prompt_config"
        )
        self.required_fields: tuple[str, ...] = ()
        self.num_problems: int | None = None
        self._prompts: dict[str | None, Any] = {}

    @property
    def needs_judge(self) -> bool:
        return self.scoring is not None and self.scoring.needs_judge

    @property
    def score_names(self) -> tuple[str, ...]:
        return self.scoring.score_names if self.scoring is not None else ()

    def unsupported_reason(self) -> str | None:
        if not self.metrics_type:
            return "its nemo_skills module has no METRICS_TYPE (a benchmark group, or data made by its prepare step)"
        if self.scoring is None:
            return f"nel has no metrics for METRICS_TYPE {self.metrics_type!r}"
        if self.prompt_config is None:
            return "its GENERATION_ARGS name no prompt_config (it needs NeMo-Skills' own generation module)"
        if self.scoring.judged_by_scorer:
            return "nel's own scorer makes its judge calls (several per row); use --skills-backend native"
        if self.scoring.needs_judge:
            return None if self.judge_prompt_config else "it has no JUDGE_ARGS prompt_config"
        if self.eval_type == "math":
            return None
        if self.eval_type not in _FILE_EVALUATORS_NEED:
            return f"the nemo_skills adapter does not run eval_type {self.eval_type!r}; try --skills-backend native"
        needs = _FILE_EVALUATORS_NEED[self.eval_type]
        if needs is not None and not Path(needs).is_dir():
            return f"NeMo-Skills' {self.eval_type} evaluator runs checkers from {needs} (its container); not found here"
        return None

    def build_messages(
        self, row: Row, *, where: str, user_template: str | None, system: str | None
    ) -> tuple[Message, ...]:
        if user_template is not None:
            default_system = self._prompt(None).config.system
            return build_messages(
                user_template, system if system is not None else default_system, row, where=where
            )
        try:
            return tuple(self._prompt(system).fill(row))
        except KeyError as exc:
            raise DataError(
                f"prompt config {self.prompt_config} needs field {exc.args[0]!r} that {where} lacks "
                f"(it has: {', '.join(sorted(row))})"
            ) from None

    def _prompt(self, system: str | None) -> Any:
        if system not in self._prompts:
            from nemo_skills.prompt.utils import get_prompt

            self._prompts[system] = get_prompt(self.prompt_config, system_message=system)
        return self._prompts[system]

    def prepare(self, data_dir: Path, *, mirror: str | None, show_progress: bool) -> Path:
        """Run NeMo-Skills' ``prepare.py`` (it writes into its package dir), then copy the split."""
        if mirror:
            raise ConfigError(
                "a download mirror applies to the native backend only: NeMo-Skills' prepare scripts fetch from "
                "their own URLs (use --skills-backend native with --mirror)"
            )
        package_dir = Path(self.module.__file__).parent
        produced = package_dir / f"{self.eval_split}.jsonl"
        if not produced.exists():
            script = package_dir / "prepare.py"
            if not script.exists():
                raise DataError(f"nemo_skills dataset {self.name} has no prepare.py at {script}")
            done = subprocess.run([sys.executable, str(script)], cwd=package_dir, capture_output=not show_progress,
                                  text=True, check=False)  # fmt: skip
            if done.returncode != 0 or not produced.exists():
                tail = (done.stderr or "")[-2000:] if not show_progress else "(see its output above)"
                raise DataError(f"NeMo-Skills' {script} failed (exit {done.returncode}): {tail}")
        read_jsonl(produced)  # a corrupt file fails here, naming file and line
        target = split_path(Path(data_dir), self.name, self.eval_split)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(produced, tmp)
        os.replace(tmp, target)
        return target

    def make_scorer(
        self, *, judge: ModelClient | None, workers: int | None, executor: CodeExecutor | None
    ) -> NemoSkillsScorer:
        reason = self.unsupported_reason()
        if reason is not None:
            raise ConfigError(f"skills://{self.name} (nemo_skills backend): {reason}")
        if self.needs_judge and judge is None:
            raise ConfigError(
                f"skills://{self.name} is graded by an LLM judge ({self.judge_prompt_config}); "
                "pass --judge-url and --judge-model"
            )
        return NemoSkillsScorer(self, judge)


class NemoSkillsScorer:
    """Scores one response with NeMo-Skills' evaluator and metrics definitions."""

    def __init__(self, backend: NemoSkillsBackend, judge: ModelClient | None) -> None:
        from nemo_skills.evaluation.metrics.map_metrics import get_metrics

        assert backend.scoring is not None  # make_scorer checked unsupported_reason
        self.backend = backend
        self.scoring = backend.scoring
        self.judge = judge
        self.metrics = get_metrics(backend.metrics_type)
        self._evaluator: Any = None
        self._judge_template: str | None = None
        if self.scoring.needs_judge:
            from nemo_skills.prompt.utils import load_config

            self._judge_template = load_config(backend.judge_prompt_config)["user"]
        elif backend.eval_type == "math":
            from nemo_skills.evaluation.evaluator import get_evaluator_class

            self._evaluator = get_evaluator_class("math", dict(backend.eval_config))

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        point = {**row, self.backend.generation_key: response}
        details: dict[str, Any] = {"backend": "nemo_skills", "eval_type": self.backend.eval_type}
        if self._judge_template is not None:
            assert self.judge is not None
            prompt = render(self._judge_template, {**row, "generation": response}, where=where)
            completion = await ask_judge(self.judge, prompt, where=where)
            point["judgement"] = completion.content
            details.update(
                judge_details(self.judge, str(self.backend.judge_prompt_config), prompt, completion)
            )
        elif self._evaluator is not None:
            point.update(await self._evaluator.eval_single(dict(point)))
        else:
            point = await asyncio.to_thread(
                _evaluate_file, str(self.backend.eval_type), self.backend.eval_config, point
            )
        added = {k: v for k, v in point.items() if k not in row and k != self.backend.generation_key}
        details.update(added)
        scores = self._scores(point, where)
        names = self.scoring.score_names
        return VerifyResult(scores[names[0]], self._answer(point, response), details, scores)

    def _scores(self, point: Row, where: str) -> dict[str, float]:
        if self.scoring.row_scores is not None:  # nel defines them (counts, not NeMo-Skills' ratios)
            return self.scoring.row_scores(point)
        got = self.metrics._get_score_dict(point)  # NeMo-Skills' per-row score definition
        missing = [name for name in self.scoring.score_names if name not in got]
        if missing:
            raise ScoringError(
                f"{where}: NeMo-Skills' {self.backend.metrics_type} metrics gave no {missing}: {got}"
            )
        return {name: float(got[name]) for name in self.scoring.score_names}

    def _answer(self, point: Row, response: str) -> str | None:
        """The answer majority@k votes on, as NeMo-Skills' metrics class picks it."""
        key = self.scoring.answer_key
        value = response if key == "generation" else point.get(key)
        return None if value is None else str(value)

    async def aclose(self) -> None:
        """Nothing to release: the judge client belongs to the runner."""


def _evaluate_file(eval_type: str, eval_config: dict[str, Any], point: Row) -> Row:
    """Run a file-based NeMo-Skills evaluator on a one-row JSONL file and read the row back."""
    evaluator = importlib.import_module("nemo_skills.evaluation.evaluator")
    with tempfile.TemporaryDirectory(prefix="nel-ns-eval-") as tmp:
        path = Path(tmp) / "output.jsonl"
        path.write_text(json.dumps(point) + "\n", encoding="utf-8")
        evaluator.EVALUATOR_MAP[eval_type]({**eval_config, "input_file": str(path)})
        rows = read_jsonl(path)
    if len(rows) != 1:
        raise ScoringError(f"NeMo-Skills' {eval_type} evaluator returned {len(rows)} rows for one")
    return rows[0]
