"""AlpacaEval 2.0's preferences and win rates, the length-controlled one included.

The definitions are ``alpaca-eval==0.6.6``'s: its ``weighted_alpaca_eval_gpt4_turbo``
annotator for one preference, ``metrics/winrate.py`` and ``metrics/glm_winrate.py``
(``length_controlled_v1``) for the run. nel computes them itself because those modules import
``datasets``, ``patsy`` and the hub client at the top; ``tests/test_alpaca_eval.py`` runs the
package on the same inputs and compares.

A preference is on alpaca-eval's scale: 1 the baseline's output is better, 2 the model's, 1.5 a
draw, anything between a judge's probability. The judge sees the two outputs in an order fixed
per instruction (the same coin for every model and run), labelled ``m`` (first) and ``M``.

The length-controlled win rate fits a logistic GLM of the preference on three features, the
tanh of the standardised length difference, the instruction's difficulty and an indicator of
"the model, not a length-gamed baseline", regularised towards two length-gamed versions of the
baseline (alpaca-eval's ``df_gamed.csv``, weight 0.1 each), by sklearn's ``LogisticRegressionCV``
(L1, liblinear, 5 group folds), and predicts the model's preference at zero length difference.
"""

from __future__ import annotations

import inspect
import math
import random
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

FIRST, SECOND = "m", "M"
"""The judge's identifiers of the first and the second output in its prompt."""
SWITCH_SEED = 0
"""alpaca-eval's annotator seed, part of the string the order coin is seeded with."""
GAMED_WEIGHT = 0.2 / 2
"""``regularize_to_baseline_lambda`` split over the two gamed baselines."""
CV_SPLITS = 5
FEATURES = ("np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)")
"""The GLM's terms, named as alpaca-eval's formula names them (its saved weights use these names)."""


def switched(instruction: str, seed: int = SWITCH_SEED) -> bool:
    """Whether the model's output is shown first (as ``m``) for this instruction.

    alpaca-eval's coin: ``random.Random`` seeded with a string (hashed by SHA-512, so the same
    on every Python) made of the switch column's name, the instruction and the seed.
    """
    return random.Random(f"is_switched_outputs{instruction}{seed}").choices([False, True], k=1)[0]


_PLACEHOLDER = re.compile(r"{([^ \s]+?)}")


def fill_prompt(template: str, fields: Mapping[str, str]) -> str:
    """The judge prompt: each ``{field}`` replaced once, in the order the fields first appear.

    Not ``str.format``: the template has literal braces, and alpaca-eval replaces the first
    occurrence of each placeholder in turn (so an instruction that contains ``{output_1}``
    is filled the way alpaca-eval fills it). A placeholder without a field is a KeyError.
    """
    for name in dict.fromkeys(_PLACEHOLDER.findall(template)):
        template = template.replace("{" + name + "}", str(fields[name]), 1)
    return template


def chat_messages(prompt: str) -> list[dict[str, str]]:
    """A ChatML prompt (``<|im_start|>role\\n...<|im_end|>``) as chat messages, as alpaca-eval
    sends it to a chat model; ``system name=x`` roles keep their name."""
    messages: list[dict[str, str]] = []
    for part in prompt.strip().split("<|im_start|>")[1:]:
        head, _, rest = part.partition("\n")
        role = head.strip()
        message = {"content": rest.split("<|im_end|>", 1)[0].strip(), "role": role}
        if role.startswith("system") and role != "system":
            message["role"] = "system"
            for pair in role.removeprefix("system").split():
                key, _, value = pair.partition("=")
                message[key] = value
        messages.append(message)
    return messages


def preference_from_logprobs(top: Mapping[str, float]) -> float | None:
    """2 - P(first output is better), from the judge's top logprobs of its one token; None when
    neither identifier is among them (alpaca-eval's NaN: not a preference)."""
    present = [lp for token, lp in top.items() if token in (FIRST, SECOND)]
    if not present:
        return None
    first = top.get(FIRST, -math.inf)
    denominator = float(np.logaddexp.reduce(np.array(present, dtype=float)))
    return 2.0 - math.exp(first - denominator)


def preference_from_label(text: str) -> float | None:
    """The hard preference of a judge reply without logprobs: ``m`` 1, ``M`` 2, else None."""
    token = text.strip()
    return 1.0 if token == FIRST else 2.0 if token == SECOND else None


def unswitch(preference: float, was_switched: bool) -> float:
    """A preference about (first, second) as one about (baseline, model)."""
    return 3.0 - preference if was_switched else preference


@dataclass(frozen=True)
class WinRate:
    """alpaca-eval's ``get_winrate``: the mean preference for the model (percent), its standard
    error, the counts, and the win rate of the rounded preferences."""

    win_rate: float | None
    standard_error: float | None
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    discrete_win_rate: float | None


def win_rate(preferences: np.ndarray) -> WinRate:
    """``preferences`` (1..2, NaN: none) -> :class:`WinRate`; preferences that are not one are dropped."""
    p = np.asarray(preferences, dtype=float)
    valid = p[(p >= 1) & (p <= 2)]
    x = valid - 1
    discrete = np.where(valid == 1.5, 0.5, np.where(valid > 1.5, 1.0, 0.0))
    return WinRate(
        win_rate=_percent(x.mean()) if x.size else None,
        standard_error=_percent(_sem(x)),
        n_wins=int((x > 0.5).sum()),
        n_wins_base=int((x < 0.5).sum()),
        n_draws=int((p == 1.5).sum()),
        n_total=int(x.size),
        discrete_win_rate=_percent(discrete.mean()) if discrete.size else None,
    )


@dataclass(frozen=True)
class GamedBaselines:
    """The GLM's regularisation rows (alpaca-eval's ``df_gamed.csv``), in the file's order
    (the order decides the cross-validation folds, so it decides the fit).

    ``preference`` is on the 0..1 scale (1: the gamed baseline is better than the baseline);
    ``std_delta_len`` is already standardised.
    """

    preference: np.ndarray
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray


@dataclass(frozen=True)
class LengthControlled:
    predicted: np.ndarray
    """Each row's predicted preference for the model (0..1) at zero length difference."""
    weights: dict[str, float]
    """The fitted GLM's coefficients by alpaca-eval's term names."""

    @property
    def win_rate(self) -> float | None:
        return _percent(self.predicted.mean())

    @property
    def standard_error(self) -> float | None:
        return _percent(_sem(self.predicted))


class NotFitted(ValueError):
    """The length-controlled GLM cannot be fitted on these rows; the message says why."""


def length_controlled(
    preferences: np.ndarray,
    baseline_lengths: np.ndarray,
    model_lengths: np.ndarray,
    difficulty: np.ndarray,
    gamed: GamedBaselines,
) -> LengthControlled:
    """alpaca-eval's ``length_controlled_v1`` fit and its predictions.

    ``preferences`` are 1..2 (NaN: none; such rows are left out of the fit but predicted, as
    alpaca-eval does); lengths are in characters, as ``str.len`` counts them. Raises
    :class:`NotFitted` where alpaca-eval would divide by zero or sklearn refuse the data.
    """
    preferences = np.asarray(preferences, dtype=float)
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    spread = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    if not spread or not math.isfinite(spread):
        raise NotFitted("the length differences need at least two distinct values to be standardised")
    difficulty = np.asarray(difficulty, dtype=float)
    model_x = np.column_stack([np.tanh(delta / spread), difficulty, np.ones(delta.size)])
    gamed_x = np.column_stack(
        [np.tanh(gamed.std_delta_len), gamed.instruction_difficulty, np.zeros(gamed.preference.size)]
    )
    x = np.vstack([gamed_x, model_x])
    y = np.concatenate([gamed.preference, preferences - 1])
    weight = np.concatenate([np.full(gamed.preference.size, GAMED_WEIGHT), np.ones(delta.size)])
    keep = ~np.isnan(y) & ~np.isnan(x).any(axis=1)
    if not keep[gamed.preference.size :].any():
        raise NotFitted("no row has a preference")
    if keep.sum() < CV_SPLITS:
        raise NotFitted(f"{int(keep.sum())} rows (with the gamed baselines') are fewer than {CV_SPLITS} folds")
    try:
        model = _fit(x[keep], y[keep], weight[keep])
    except ValueError as exc:  # sklearn's refusal of degenerate data, in its words
        raise NotFitted(f"sklearn cannot fit it: {exc}") from None
    test_x = np.column_stack([np.zeros(delta.size), difficulty, np.ones(delta.size)])
    return LengthControlled(
        predicted=model.predict_proba(test_x)[:, 1],
        weights={name: float(w) for name, w in zip(FEATURES, model.coef_[0])},
    )


def _fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray):  # -> LogisticRegressionCV
    """A logistic regression on soft labels: every row twice, as label 1 weighted by its
    preference and as label 0 weighted by the rest; cross-validated over the row pairs with
    alpaca-eval's soft log loss, which needs sklearn's metadata routing (switched on here only)."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = y.size
    true_prob = np.concatenate([y, 1 - y])
    true_weight = np.concatenate([weight, weight])
    # alpaca-eval's arguments; sklearn 1.8 spells an L1 penalty `l1_ratios=(1,)` (and drops `penalty` in 1.10).
    new_api = "l1_ratios" in inspect.signature(LogisticRegressionCV).parameters
    l1 = {"l1_ratios": (1.0,)} if new_api else {"penalty": "l1"}
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        # sklearn's notices about defaults that alpaca-eval relies on
        warnings.simplefilter("ignore", FutureWarning)
        scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(
            cv=GroupKFold(n_splits=CV_SPLITS), scoring=scorer, random_state=123, dual=False,
            solver="liblinear", n_jobs=None, fit_intercept=False, **l1,
        )  # fmt: skip
        model.set_fit_request(sample_weight=True)
        model.fit(
            np.vstack([x, x]), np.concatenate([np.ones(n), np.zeros(n)]), sample_weight=true_prob * true_weight,
            groups=np.concatenate([np.arange(n), np.arange(n)]), true_sample_weight=true_weight, true_prob=true_prob,
        )  # fmt: skip
    return model


def _soft_log_loss(y_true, y_pred, true_prob, true_sample_weight=None) -> float:
    """The log loss against the soft label each duplicated row stands for (weighted, averaged)."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(y_pred) + (1 - target) * np.log(1 - y_pred)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return float(-np.mean(losses))


def _sem(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None


def _percent(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value) * 100
