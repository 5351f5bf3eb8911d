"""``alpaca_eval``: AlpacaEval 2.0, one weighted judge call per row and the length-controlled win rate.

The judge is alpaca-eval's ``weighted_alpaca_eval_gpt4_turbo`` annotator, read from the
installed ``alpaca-eval`` package's own files (its config and prompt; nel does not import the
package, whose ``__init__`` pulls ``datasets`` and the OpenAI SDK): the prompt shows the
baseline's and the model's outputs in alpaca-eval's per-instruction order, asks for one token
(``max_tokens: 1``) with the top 5 logprobs, and the preference is the probability mass of
``M`` against ``m``. Where the judge endpoint cannot give logprobs, the preference is its one
token instead (the hard preference, 1 or 2), and ``judged_by_label`` counts such rows: an
endpoint that sends none is read that way, and one that refuses the request (HTTP 400/422)
is asked once more without them, after which the scorer stops asking. A reply whose logprobs
hold neither token is no preference, as in alpaca-eval.

The row's scores carry everything the run-level fit needs (the preference, both lengths, the
instruction's difficulty and the two length-gamed baselines' rows for the instruction), so
the reducer computes the length-controlled win rate from the trajectory alone. A row without
a judgement (the model gave no answer: ``context_length``, ``unfinished_reasoning``, or a
failed row kept by ``--allow-partial``) counts as a loss in both win rates, as pass@k counts
such a row 0, and ``no_answer`` says how many there were.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nel.client import ModelClient
from nel.errors import ConfigError, ModelCallError, ScoringError
from nel.metrics import MetricInputs, Metrics, run_fields
from nel.scoring.alpaca_eval import (
    FIRST,
    SECOND,
    GamedBaselines,
    NotFitted,
    chat_messages,
    fill_prompt,
    length_controlled,
    preference_from_label,
    preference_from_logprobs,
    switched,
    unswitch,
    win_rate,
)
from nel.skills.judge import ask_judge, judge_failed
from nel.skills.scoring_types.base import InlineScorer, Package, ScoringOptions, ScoringType
from nel.types import Completion, VerifyResult

PACKAGE = "alpaca_eval"
DISTRIBUTION = "alpaca-eval==0.6.6"
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
GAMED_SLOTS = 2
"""Length-gamed baselines per instruction in alpaca-eval's ``df_gamed.csv`` (verbose, concise)."""
GAMED_FIELDS = {"preference": "preference", "std_delta_len": "std_delta_len", "difficulty": "instruction_difficulty",
                "row": "row"}  # fmt: skip
"""Score name part -> the converter's field of one gamed entry (``row``: its line in the file)."""
SCORES = (
    "preference", "length_model", "length_baseline", "instruction_difficulty", "judged_by_label",
    *(f"gamed_{field}_{slot}" for slot in range(1, GAMED_SLOTS + 1) for field in GAMED_FIELDS),
)  # fmt: skip
LOGPROB_PARAMETERS = ("logprobs", "top_logprobs")
COUNTS = ("n_wins", "n_wins_base", "n_draws", "n_total", "no_preference", "no_answer", "judged_by_label")
"""Metrics that are counts: summed over repeats (the rest are averaged)."""


@dataclass(frozen=True)
class Annotator:
    """One alpaca-eval annotator config, as its package ships it."""

    name: str
    template: str
    request: dict[str, Any]
    """Body parameters of every judge request (max_tokens, temperature, top_p, logprobs, top_logprobs)."""
    leaderboard_judge: str
    """The judge model alpaca-eval's leaderboard uses with this config."""


def load_annotator(name: str = ANNOTATOR) -> Annotator:
    """The annotator's prompt and request from the installed package's files; a config this
    scorer does not implement (another parser) is a ConfigError naming it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"skills://alpaca-eval needs the judge configs of {DISTRIBUTION} (pip install --no-deps {DISTRIBUTION})"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "evaluators_configs"
    path = root / name / "configs.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))[name]
        template = (root / config["prompt_template"]).read_text(encoding="utf-8")
        kwargs = dict(config["completions_kwargs"])
        parser = config["fn_completion_parser"], config.get("completion_parser_kwargs", {})
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not an alpaca-eval annotator config nel can read ({exc})") from None
    wanted = (
        "logprob_parser",
        {"numerator_token": FIRST, "denominator_tokens": [FIRST, SECOND], "is_binarize": False},
    )
    if parser != wanted:
        raise ConfigError(f"{path}: nel implements alpaca-eval's weighted logprob parser only, not {parser}")
    judge = str(kwargs.pop("model_name", ""))
    # top_p 1.0: alpaca-eval's OpenAI decoder sends it with every request unless told otherwise.
    return Annotator(name=name, template=template, request={"top_p": 1.0, **kwargs}, leaderboard_judge=judge)


class AlpacaEvalScorer(InlineScorer):
    def __init__(self, options: ScoringOptions) -> None:
        super().__init__(options)
        assert options.judge is not None  # ScoringType.make_scorer refuses a judged type without one
        self.judge: ModelClient = options.judge
        self.annotator = load_annotator()
        self.logprobs_refused: str | None = None
        """Why the judge endpoint refused a request with logprobs; once set, none is asked for."""

    async def score(self, response: str, row: dict[str, Any], *, where: str) -> VerifyResult:
        instruction, baseline = row.get("instruction"), row.get("baseline_answer")
        if not isinstance(instruction, str) or not isinstance(baseline, str):
            raise ScoringError(f"{where} has no instruction and baseline_answer strings")
        details: dict[str, Any] = {
            "judge_model": self.judge.model,
            "judge_prompt_config": self.annotator.name,
        }
        label = 0.0
        if response == baseline:  # alpaca-eval's draw, without asking the judge
            preference: float | None = 1.5
            details["judge_calls"] = []
        else:
            flip = switched(instruction)
            first, second = (response, baseline) if flip else (baseline, response)
            prompt = fill_prompt(
                self.annotator.template, {"instruction": instruction, "output_1": first, "output_2": second}
            )
            completion, refused = await self._ask(chat_messages(prompt), where)
            raw, source = parse_judgement(completion)
            preference = None if raw is None else unswitch(raw, flip)
            label = float(source == "label")
            details["judge_calls"] = [call_record(prompt, completion, flip, source, raw, refused)]
        scores = {
            "preference": math.nan if preference is None else preference,
            "length_model": float(len(response)),
            "length_baseline": float(len(baseline)),
            "instruction_difficulty": float(row.get("instruction_difficulty", math.nan)),
            "judged_by_label": label,
            **gamed_scores(row, where),
        }
        reward = 0.0 if preference is None else preference - 1
        # Never None for a judged row: the metrics tell judged rows from unanswered ones by it.
        extracted = "no preference" if preference is None else f"{preference:.4f}"
        return VerifyResult(reward, extracted, details, scores)

    async def _ask(self, messages: list[dict[str, str]], where: str) -> tuple[Completion, str | None]:
        """The judge's reply, and why logprobs were refused when this call was asked without them."""
        request = self.annotator.request
        if self.logprobs_refused is None:
            try:
                return await self.judge.chat(messages, **request), None
            except ModelCallError as exc:
                if exc.status not in (400, 422):
                    raise judge_failed(self.judge, exc, where) from exc
                self.logprobs_refused = str(exc)
        plain = {k: v for k, v in request.items() if k not in LOGPROB_PARAMETERS}
        return await ask_judge(self.judge, messages, where=where, **plain), self.logprobs_refused


def parse_judgement(completion: Completion) -> tuple[float | None, str]:
    """(preference about the prompt's order, where it came from: ``logprobs`` or ``label``).

    alpaca-eval parses one preference per generated token and wants exactly one; a judge that
    ignored ``max_tokens: 1`` gives no preference. Without logprobs, the token itself decides.
    """
    if completion.top_logprobs:
        if len(completion.top_logprobs) != 1:
            return None, "logprobs"
        return preference_from_logprobs(completion.top_logprobs[0]), "logprobs"
    return preference_from_label(completion.content), "label"


def call_record(
    prompt: str, completion: Completion, flip: bool, source: str, raw: float | None, refused: str | None
) -> dict[str, Any]:
    return {
        "judge_prompt": prompt,
        "judgement": completion.content,
        "top_logprobs": completion.top_logprobs[0] if completion.top_logprobs else None,
        "preference_source": source,
        "model_output_first": flip,
        "preference_as_shown": raw,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": round(completion.latency_s, 3),
        "attempts": completion.attempts,
        "logprobs_refused": refused,
    }


def gamed_scores(row: dict[str, Any], where: str) -> dict[str, float]:
    gamed = row.get("gamed")
    if not isinstance(gamed, list) or len(gamed) != GAMED_SLOTS:
        raise ScoringError(
            f"{where} has no {GAMED_SLOTS} gamed-baseline entries (field 'gamed'); prepare the data again"
        )
    try:
        return {f"gamed_{name}_{slot}": float(entry[field])
                for slot, entry in enumerate(gamed, start=1) for name, field in GAMED_FIELDS.items()}  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ScoringError(f"{where}: a gamed-baseline entry lacks {exc}; prepare the data again") from None


def alpaca_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """alpaca-eval's leaderboard numbers, per repeat (each repeat is one full evaluation); with
    repeats, rates are the mean over repeats and counts their sum (``pass@1[avg-of-k]``)."""
    repeats = data.scores["preference"].shape[1]
    judged = data.answers >= 0  # a scored row always has an extracted answer; a failed one never
    runs = [_one_repeat(data.scores, judged[:, r], r) for r in range(repeats)]
    common = run_fields(out)
    if repeats == 1:
        return {"pass@1": _with_intervals({**common, **runs[0]})}
    merged: dict[str, object] = dict(common)
    for key in runs[0]:
        values = [run[key] for run in runs]
        if key == "glm_weights" or any(isinstance(v, str) for v in values):
            merged[key] = values  # one per repeat
        elif any(v is None for v in values):
            merged[key] = None
        elif key in COUNTS:
            merged[key] = int(sum(values))  # type: ignore[arg-type]
        else:
            merged[key] = float(np.mean(values))  # type: ignore[arg-type]
    return {f"pass@1[avg-of-{repeats}]": _with_intervals(merged)}


def _with_intervals(bucket: dict[str, object]) -> dict[str, object]:
    """``<rate>_ci95``, nel's interval key (the summary table quotes the keys that have one): the
    normal approximation around alpaca-eval's own standard errors, ±1.96 of them."""
    for rate, error in (("length_controlled_winrate", "lc_standard_error"), ("win_rate", "standard_error")):
        value, se = bucket.get(rate), bucket.get(error)
        if isinstance(value, float) and isinstance(se, float):
            bucket[f"{rate}_ci95"] = [value - 1.96 * se, value + 1.96 * se]
    return bucket


def _one_repeat(scores: dict[str, np.ndarray], judged: np.ndarray, r: int) -> dict[str, object]:
    """One evaluation's numbers; rows without a judgement count as losses (preference 1)."""
    pick = {name: values[judged, r] for name, values in scores.items()}
    no_answer = int((~judged).sum())
    rate = win_rate(np.concatenate([pick["preference"], np.ones(no_answer)]))
    return {
        **_length_controlled(pick, no_answer),
        "win_rate": rate.win_rate,
        "standard_error": rate.standard_error,
        "discrete_win_rate": rate.discrete_win_rate,
        "n_wins": rate.n_wins,
        "n_wins_base": rate.n_wins_base,
        "n_draws": rate.n_draws,
        "n_total": rate.n_total,
        "no_preference": int(judged.sum()) - (rate.n_total - no_answer),
        "no_answer": no_answer,
        "judged_by_label": int(pick["judged_by_label"].sum()),
        "avg_length": int(pick["length_model"].mean()) if judged.any() else None,
    }


def _length_controlled(pick: dict[str, np.ndarray], no_answer: int) -> dict[str, object]:
    """The GLM fitted on the judged rows, its gamed baselines in the file's order; rows without
    a judgement are predicted 0, as they count 0 in the raw win rate."""
    slots = range(1, GAMED_SLOTS + 1)
    order = np.argsort(np.concatenate([pick[f"gamed_row_{s}"] for s in slots]), kind="stable")

    def gamed(name: str) -> np.ndarray:
        return np.concatenate([pick[f"gamed_{name}_{s}"] for s in slots])[order]

    baselines = GamedBaselines(gamed("preference"), gamed("std_delta_len"), gamed("difficulty"))
    lengths = pick["length_baseline"], pick["length_model"]
    try:
        lc = length_controlled(pick["preference"], *lengths, pick["instruction_difficulty"], baselines)
    except NotFitted as exc:
        none = {"length_controlled_winrate": None, "lc_standard_error": None, "glm_weights": None}
        return {**none, "lc_not_fitted": str(exc)}
    lc = dataclasses.replace(lc, predicted=np.concatenate([lc.predicted, np.zeros(no_answer)]))
    return {"length_controlled_winrate": lc.win_rate, "lc_standard_error": lc.standard_error, "glm_weights": lc.weights}


ALPACA_EVAL = ScoringType(
    name="alpaca_eval",
    score_names=SCORES,
    scorer=AlpacaEvalScorer,
    extra_metrics=alpaca_metrics,
    answer_key="generation",
    packages=(
        Package(PACKAGE, f"alpaca-eval's judge configs ({DISTRIBUTION}, installed --no-deps)"),
        Package("sklearn", "scikit-learn, for the length-controlled fit"),
    ),
    judged_by_scorer=True,
)
