"""SkillsEnvironment: a NeMo-Skills benchmark as an EvalEnvironment.

It reads NeMo-Skills' prepared layout (preparing the data on first use when it is
missing), builds each request from the benchmark's prompt config, and scores with the
scorer of the benchmark's METRICS_TYPE. Which implementation of all that is used (nel's
native catalog or the nemo_skills package) is the backend's business
(``nel.skills.backends``). There is no fallback scorer: a METRICS_TYPE nel cannot score is
an error at construction, not a quiet zero at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nel.client import ModelClient
from nel.environments.base import EvalEnvironment
from nel.errors import ConfigError, DataError
from nel.execution.sandbox import CodeExecutor
from nel.skills.backends import SkillsBackend, select_backend
from nel.skills.data import read_jsonl, resolve_data_dir, split_path
from nel.skills.prompts import get_prompt_config
from nel.skills.scoring_types import RowScorer
from nel.types import PROBLEM_KEY, PROMPT_KEY, SeedResult, VerifyResult

_ROW_KEY = "nel.row"  # metadata key that carries the row index from seed() to verify()


class SkillsEnvironment(EvalEnvironment):
    """``skills://NAME``: data, prompt and scorer of one NeMo-Skills benchmark.

    ``prompt_template`` / ``system_prompt`` override the prompt config's user template and
    system message. ``backend`` is ``auto``, ``native`` or ``nemo_skills``. ``judge`` is the
    client that grades judge-graded benchmarks (SimpleQA, HLE); the caller owns and closes
    it. ``executor`` runs generated code (default: a local sandbox). ``mirror`` replaces the
    upstream download URLs when the data is prepared on first use.
    """

    def __init__(
        self,
        name: str,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        split: str | None = None,
        data_dir: str | Path | None = None,
        *,
        backend: str = "auto",
        judge: ModelClient | None = None,
        auto_prepare: bool = True,
        scoring_workers: int | None = None,
        executor: CodeExecutor | None = None,
        mirror: str | None = None,
        show_progress: bool = True,
    ) -> None:
        self.backend: SkillsBackend = select_backend(name, backend)
        reason = self.backend.unsupported_reason()
        if reason is not None:
            raise ConfigError(f"skills://{name} cannot run with the {self.backend.kind} backend: {reason}")
        self.name = name
        self.metrics_type = self.backend.metrics_type
        self.solver = getattr(self.backend, "solver", "chat")
        self.score_names = self.backend.score_names
        self.split = split or self.backend.eval_split
        self.data_dir = resolve_data_dir(data_dir)
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.auto_prepare = auto_prepare
        self.mirror = mirror
        self.show_progress = show_progress
        self.scorer: RowScorer = self.backend.make_scorer(
            judge=judge, workers=scoring_workers, executor=executor
        )
        self._rows: list[dict[str, Any]] | None = None

    @property
    def path(self) -> Path:
        return split_path(self.data_dir, self.name, self.split)

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            if not self.path.exists():
                if not self.auto_prepare or self.split != self.backend.eval_split:
                    raise DataError(
                        f"{self.path} does not exist; run `nel prepare {self.name} --data-dir {self.data_dir}`"
                    )
                self.backend.prepare(self.data_dir, mirror=self.mirror, show_progress=self.show_progress)
            self._rows = read_jsonl(self.path, self.backend.required_fields)
            if not self._rows:
                raise DataError(f"{self.path} has no rows")
        return self._rows

    def dataset_size(self) -> int:
        return len(self.rows())

    def data_files(self) -> tuple[Path, ...]:
        return (self.path,)

    def _where(self, idx: int) -> str:
        return f"row {idx} of {self.path}"

    async def seed(self, idx: int) -> SeedResult:
        row = self.rows()[idx]
        if self.solver != "chat":
            return self._multi_step_seed(row, idx)
        messages = self.backend.build_messages(
            row, where=self._where(idx), user_template=self.prompt_template, system=self.system_prompt
        )
        metadata: dict[str, Any] = {_ROW_KEY: idx}
        if row.get("subset_for_metrics") is not None:
            metadata["subset_for_metrics"] = row["subset_for_metrics"]
        if row.get("generation") is not None:  # an answer prefix the model continues (RULER; nel.solvers)
            messages = (*messages, {"role": "assistant", "content": str(row["generation"])})
        if row.get("tokens_to_generate") is not None:  # the row's own generation budget (RULER's, per task)
            metadata["tokens_to_generate"] = row["tokens_to_generate"]
        expected = row.get("expected_answer")
        if len(messages) == 1 and messages[0]["role"] == "user":
            return SeedResult(expected_answer=expected, prompt=messages[0]["content"], metadata=metadata)
        return SeedResult(expected_answer=expected, messages=messages, metadata=metadata)

    def _multi_step_seed(self, row: dict[str, Any], idx: int) -> SeedResult:
        """A problem the solver asks in several requests: it gets the row and the prompt config
        (``--prompt-template`` / ``--system-prompt`` applied) and builds each request itself."""
        prompt: dict[str, Any] | None = None  # None: the row holds its own conversation (BFCL)
        if self.backend.prompt_config is not None:
            config = get_prompt_config(self.backend.prompt_config)
            user = config.user if self.prompt_template is None else self.prompt_template
            system = config.system if self.system_prompt is None else self.system_prompt
            prompt = {"user": user, "system": system}
        metadata: dict[str, Any] = {_ROW_KEY: idx, PROBLEM_KEY: row, PROMPT_KEY: prompt}
        if row.get("subset_for_metrics") is not None:
            metadata["subset_for_metrics"] = row["subset_for_metrics"]
        text = prompt["user"] if prompt is not None else f"skills://{self.name} row {idx}"
        return SeedResult(expected_answer=row.get("expected_answer"), prompt=text, metadata=metadata)

    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        idx = metadata.get(_ROW_KEY)
        if not isinstance(idx, int):
            raise DataError(
                f"skills://{self.name}: verify needs the seed's metadata ({_ROW_KEY!r} is missing)"
            )
        return await self.scorer.score(response, self.rows()[idx], where=self._where(idx))

    def describe(self) -> dict[str, str]:
        return {
            **super().describe(),
            "nel.skills_backend": self.backend.kind,
            "nel.prompt_config": str(self.backend.prompt_config),
            "nel.split": self.split,
        }

    async def aclose(self) -> None:
        await self.scorer.aclose()
