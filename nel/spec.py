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
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from nel.concurrency import parse_concurrency
from nel.deployment import DEPLOY_URL, DeploymentSpec
from nel.errors import ConfigError
from nel.keys import reject_unknown_keys
from nel.reasoning import DEFAULT_REASONING_TAGS, parse_tags

DEFAULT_CONCURRENCY = 64
DEFAULT_TEMPERATURE = 0.0
"""Greedy unless told otherwise: servers default to different temperatures (OpenAI 1.0, vLLM the
checkpoint's generation config), so leaving it unset would make the result depend on the server."""

# Upper bounds: far above any real run, low enough that a typo fails here, not 38 s later in the loop.
MAX_REPEATS = 10_000
MAX_CONCURRENCY = 10_000
MAX_PROBLEMS = 10**9
MAX_RETRIES = 100
MAX_TOKENS = 10**7
MAX_TEMPERATURE = 100.0
MAX_SECONDS = 7 * 24 * 3600.0
MAX_FLUSH_ROWS = 10**7


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
    temperature: float | None = DEFAULT_TEMPERATURE
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
                    f"{where}.url {redact_url(self.url)!r}: a model with a deployment takes its URL from the "
                    f"server nel starts; leave url empty or {DEPLOY_URL}"
                )
        elif not self.url:
            raise ConfigError(f"{where}.url is empty: pass {_flag(where + '.url')} or set NEL_MODEL_URL")
        elif not self.url.startswith("local://"):
            check_url(self.url, f"{where}.url")
        if not self.model_id:
            raise ConfigError(f"{where}.model_id is empty: pass {_flag(where + '.model_id')} or set NEL_MODEL_ID")
        _number(self.temperature, f"{where}.temperature", 0, MAX_TEMPERATURE, optional=True)
        _number(self.top_p, f"{where}.top_p", 0, 1, optional=True, low_open=True)
        _number(self.max_tokens, f"{where}.max_tokens", 1, MAX_TOKENS, optional=True, integer=True)
        _number(self.seed, f"{where}.seed", -(2**63), 2**63 - 1, optional=True, integer=True)
        _number(self.timeout, f"{where}.timeout", 0, MAX_SECONDS, low_open=True)
        _number(self.max_retries, f"{where}.max_retries", 0, MAX_RETRIES, integer=True)

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
    # requests in flight: N, "auto" or "auto:MAX" (nel.concurrency); None: DEFAULT_CONCURRENCY,
    # or the batch size of the server nel starts for a local:// model
    concurrency: int | str | None = None
    # the response cache's directory (nel.cache); operational, so not part of the identity:
    # a run with and without it is the same run
    cache_dir: str | None = None
    # inline reasoning tags "OPEN,CLOSE" (nel.reasoning), or "none"; changes what is scored
    reasoning_tags: str | None = DEFAULT_REASONING_TAGS
    # how a prompt that ends with an answer prefix is sent (nel.solvers.ANSWER_PREFIX_MODES)
    answer_prefix: str = "text"

    def __post_init__(self) -> None:
        if self.concurrency is None:
            object.__setattr__(self, "concurrency", default_concurrency(self.model.url))
        elif isinstance(self.concurrency, str) and self.concurrency.strip().isdigit():
            object.__setattr__(self, "concurrency", int(self.concurrency))  # a flag or override

    def validate(self) -> RunSpec:
        if "://" not in self.bench:
            raise ConfigError(f"bench {self.bench!r} is not a benchmark URI; expected e.g. skills://gsm8k")
        if not self.output_dir:
            raise ConfigError("output_dir is empty: pass --output-dir")
        _number(self.repeats, "repeats", 1, MAX_REPEATS, integer=True)
        _number(self.max_problems, "max_problems", 1, MAX_PROBLEMS, optional=True, integer=True)
        plan = parse_concurrency(self.concurrency or 0)  # N, auto or auto:MAX
        _number(plan.max_in_flight, "concurrency", 1, MAX_CONCURRENCY, integer=True)
        if self.skills_backend not in ("auto", "native", "nemo_skills"):
            raise ConfigError(
                f"skills_backend {self.skills_backend!r} is not one of auto, native, nemo_skills"
            )
        parse_tags(self.reasoning_tags)
        if self.answer_prefix not in ("text", "chat"):
            raise ConfigError(f"answer_prefix {self.answer_prefix!r} is not one of text, chat (--answer-prefix)")
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
        if self.answer_prefix != "text":  # only then: run ids from before the option stay the same
            ident["answer_prefix"] = self.answer_prefix
        if self.judge is not None:
            ident["judge"] = {"model_id": self.judge.model_id, "sampling": self.judge.sampling()}
        tags = parse_tags(self.reasoning_tags)
        if tags != parse_tags(DEFAULT_REASONING_TAGS):  # only then: the run ids of earlier runs stay valid
            ident["reasoning_tags"] = "none" if tags is None else f"{tags.open},{tags.close}"
        return ident

    def config_hash(self) -> str:
        return identity_hash(self.identity())

    def to_dict(self) -> dict[str, Any]:
        """The spec as run.json (and a SLURM job) records it: URL credentials stripped, never written."""
        data = dataclasses.asdict(self)
        for role in ("model", "judge"):
            if data.get(role) is not None:
                data[role]["url"] = redact_url(data[role]["url"])
        return data

    def sampling_warning(self) -> str | None:
        """Why repeats would be identical samples (greedy decoding), or None."""
        if self.repeats < 2 or (self.model.temperature or 0) > 0 or "temperature" in self.model.extra_body:
            return None
        how = ("at temperature 0 (greedy)" if self.model.temperature is not None else
               "with no temperature sent (servers such as nel serve then decode greedily)")  # fmt: skip
        return (
            f"repeats={self.repeats} {how}: the repeats will be identical samples, so pass@k and majority@k "
            "add nothing to pass@1; set a temperature (--temperature 0.7, model.temperature=0.7) to sample"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Rebuild a spec from ``to_dict`` output (run.json, Hydra), rejecting unknown keys."""
        data = dict(data)
        model = _model_from_dict(data.pop("model", None), "model")
        judge_raw = data.pop("judge", None)
        judge = None if judge_raw is None else _model_from_dict(judge_raw, "judge")
        reject_unknown_keys(cls, data, "run spec")
        return cls(model=model, judge=judge, **data)


def default_concurrency(url: str) -> int:
    """Requests in flight when none is given: 64, or a ``local://`` server's batch size.

    A local server decodes at most its batch size at once; more requests only queue in it, and
    a queued request's timeout runs while it waits, so at 64 against a batch of 16 queued
    requests timed out and were sent again while the first copy was still being generated.
    At the batch size nothing waits in the server; a slot idles only for one loopback round
    trip (and scoring) between two requests, small against a generation of seconds.
    """
    if url.startswith("local://"):
        from nel.serving.engine import DEFAULT_MAX_BATCH_SIZE

        return DEFAULT_MAX_BATCH_SIZE
    return DEFAULT_CONCURRENCY


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


def check_flush(flush_rows: int, flush_seconds: float) -> None:
    """The Parquet flush settings (operational, so not part of RunSpec): how much a crash may lose."""
    _number(flush_rows, "flush_rows", 1, MAX_FLUSH_ROWS, integer=True)
    _number(flush_seconds, "flush_seconds", 0, MAX_SECONDS, low_open=True)


def check_url(url: str, where: str) -> None:
    """An http(s) URL with a host and a port in 1-65535, checked before any request is sent."""
    shown = redact_url(url)
    flag = _flag(where)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where} {shown!r} ({flag}) is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        schemes = "http://, https:// or local://" if where.startswith("model") else "http:// or https://"
        raise ConfigError(f"{where} {shown!r} ({flag}) must start with {schemes}")
    host = parts.hostname or ""
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        raise ConfigError(f"{where} {shown!r} ({flag}) has no valid host; expected e.g. http://127.0.0.1:8000/v1")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{where} {shown!r} ({flag}): port {port} is not in 1-65535")


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part, which is a credential and never written."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


# Flags whose name is not the spec key with "_" as "-" (judge.* take the model's flags).
_FLAGS = {"model.url": "--model-url", "model.model_id": "--model-id", "judge.url": "--judge-url",
          "judge.model_id": "--judge-model"}  # fmt: skip


def _flag(name: str) -> str:
    """The ``nel eval run`` flag that sets spec key ``name``, so a message names both."""
    return _FLAGS.get(name) or "--" + name.split(".")[-1].replace("_", "-")


def _number(
    value: Any,
    name: str,
    low: float,
    high: float,
    *,
    optional: bool = False,
    integer: bool = False,
    low_open: bool = False,
) -> None:
    """``value`` is a (finite) number in its range, else one line naming the key and its flag."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a finite number"
    types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value):
        raise ConfigError(f"{name} must be {kind}, got {value!r} ({_flag(name)})")
    if value < low or (low_open and value == low) or value > high:
        rule = f"{'>' if low_open else '>='} {_show(low)} and <= {_show(high)}"
        raise ConfigError(f"{name} must be {rule}, got {value!r} ({_flag(name)})")
