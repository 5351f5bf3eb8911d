"""RunSpec: the one validated description of an evaluation run.

The CLI flags and the Hydra launcher both build a RunSpec; everything downstream reads
only this object. Its *identity* (the fields that change results) is hashed into the run
id, so two invocations with the same identity are the same run and may resume each
other, while operational knobs (URL, concurrency, timeouts, paths) may change freely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nel.deployment import DEPLOY_URL, DeploymentSpec
from nel.errors import ConfigError
from nel.keys import reject_unknown_keys

DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class ModelSpec:
    """An OpenAI-compatible endpoint and how to sample from it.

    The API key itself is never part of a spec (specs are written to run.json); only the
    name of the environment variable that holds it. With a ``deployment`` the endpoint is
    started by nel for each shard (see nel.deployment) and ``url`` may be empty or
    ``deploy://``; the URL is never part of the run's identity either way.
    """

    url: str
    model_id: str
    api_key_env: str = "NEL_API_KEY"
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    timeout: float = 600.0
    max_retries: int = 5
    extra_body: dict[str, Any] = field(default_factory=dict)
    deployment: DeploymentSpec | None = None

    def validate(self, where: str = "model") -> None:
        if self.deployment is not None:
            self.deployment.validate(f"{where}.deployment")
            # http(s): the address a shard's server had, as run.json may record it; replaced again
            if self.url not in ("", DEPLOY_URL) and not self.url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"{where}.url {self.url!r}: a model with a deployment takes its URL from the server "
                    f"nel starts; leave url empty or {DEPLOY_URL}"
                )
        elif not self.url:
            raise ConfigError(f"{where}.url is empty: pass --model-url or set NEL_MODEL_URL")
        elif not self.url.startswith(("http://", "https://", "local://")):
            raise ConfigError(
                f"{where}.url {self.url!r} must start with http://, https:// or local://"
            )
        if not self.model_id:
            raise ConfigError(f"{where}.model_id is empty: pass --model-id or set NEL_MODEL_ID")
        _check(self.temperature is None or self.temperature >= 0, f"{where}.temperature", self.temperature, ">= 0")
        _check(self.top_p is None or 0 < self.top_p <= 1, f"{where}.top_p", self.top_p, "in (0, 1]")
        _check(self.max_tokens is None or self.max_tokens >= 1, f"{where}.max_tokens", self.max_tokens, ">= 1")
        _check(self.timeout > 0, f"{where}.timeout", self.timeout, "> 0")
        _check(self.max_retries >= 0, f"{where}.max_retries", self.max_retries, ">= 0")

    def sampling(self) -> dict[str, Any]:
        """Request-body parameters that change the model's output."""
        params: dict[str, Any] = {
            key: value
            for key, value in (
                ("temperature", self.temperature),
                ("top_p", self.top_p),
                ("max_tokens", self.max_tokens),
                ("seed", self.seed),
            )
            if value is not None
        }
        params.update(self.extra_body)
        return params


@dataclass(frozen=True)
class RunSpec:
    """What to evaluate, against which model, how many times, and where results go."""

    bench: str
    model: ModelSpec
    output_dir: str
    repeats: int = 1
    max_problems: int | None = None
    system_prompt: str | None = None
    prompt_template: str | None = None
    data_dir: str | None = None
    skills_backend: str = "auto"
    judge: ModelSpec | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    def validate(self) -> RunSpec:
        if "://" not in self.bench:
            raise ConfigError(f"bench {self.bench!r} is not a benchmark URI; expected e.g. skills://gsm8k")
        if not self.output_dir:
            raise ConfigError("output_dir is empty: pass --output-dir")
        _check(self.repeats >= 1, "repeats", self.repeats, ">= 1")
        _check(self.max_problems is None or self.max_problems >= 1, "max_problems", self.max_problems, ">= 1")
        _check(self.concurrency >= 1, "concurrency", self.concurrency, ">= 1")
        if self.skills_backend not in ("auto", "native", "nemo_skills"):
            raise ConfigError(
                f"skills_backend {self.skills_backend!r} is not one of auto, native, nemo_skills"
            )
        self.model.validate("model")
        if self.judge is not None:
            self.judge.validate("judge")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that change results; the run id hashes exactly these."""
        ident: dict[str, Any] = {
            "bench": self.bench,
            "model_id": self.model.model_id,
            "sampling": self.model.sampling(),
            "repeats": self.repeats,
            "max_problems": self.max_problems,
            "system_prompt": self.system_prompt,
            "prompt_template": self.prompt_template,
            "skills_backend": self.skills_backend,
        }
        if self.judge is not None:
            ident["judge"] = {"model_id": self.judge.model_id, "sampling": self.judge.sampling()}
        return ident

    def config_hash(self) -> str:
        return identity_hash(self.identity())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Rebuild a spec from ``to_dict`` output (run.json, Hydra), rejecting unknown keys."""
        data = dict(data)
        model = _model_from_dict(data.pop("model", None), "model")
        judge_raw = data.pop("judge", None)
        judge = None if judge_raw is None else _model_from_dict(judge_raw, "judge")
        reject_unknown_keys(cls, data, "run spec")
        return cls(model=model, judge=judge, **data)


def identity_hash(identity: dict[str, Any]) -> str:
    """A short stable hash of a run's identity: its run id."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _model_from_dict(raw: Any, where: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with url and model_id, got {raw!r}")
    reject_unknown_keys(ModelSpec, raw, where)
    raw = dict(raw)
    deployment = raw.pop("deployment", None)
    if deployment is not None:
        raw["deployment"] = DeploymentSpec.from_dict(deployment, f"{where}.deployment")
    return ModelSpec(**raw)


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}, got {value!r}")
