"""Arena-Hard's verdicts and score: pairwise judge labels -> Bradley-Terry win rate vs the baseline.

The definition is lm-sys arena-hard-auto's ``show_result.py`` as NeMo-Skills adapts it
(``nemo_skills/evaluation/evaluator/arena.py``): each question is judged twice (the model's
answer as A, then as B); a verdict is the one distinct ``[[...]]`` label in the judge's reply
(none, or several different ones: invalid, dropped); a strong verdict (``>>``) counts as 3
battles; ties count half. Bradley-Terry is a logistic regression on the battles; with two
players (the model and the baseline, anchored) its fit has a closed form, the model's share
of battle points, so nel computes that instead of running sklearn. The 95% interval is
NeMo-Skills' bootstrap: 100 resamples of the battles (numpy seed 42, the same draws pandas'
``sample(frac=1, replace=True)`` makes), percentiles of the Elo, turned back into win rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
MARGIN = {"A>>B": 2, "A>B": 1, "A=B": 0, "B>A": -1, "B>>A": -2}
"""Assistant A's margin over B per label; a game with the model as B negates it."""
STRONG_WEIGHT = 3
BOOTSTRAP_ROUNDS = 100
BOOTSTRAP_SEED = 42
_LABEL = re.compile(r"\[\[([AB<>=]+)\]\]")
_EDGE = 1e-12  # keeps the Elo finite when one side wins every battle


def parse_verdict(judgement: str) -> str | None:
    """The judge's label, or None when it gave none or several different ones."""
    found = set(_LABEL.findall(judgement))
    if len(found) != 1:
        return None
    label = found.pop()
    return label if label in MARGIN else None


def model_margin(label: str | None, model_is_a: bool) -> int | None:
    """The model's margin over the baseline in one game (+2 strong win ... -2 strong loss)."""
    if label is None:
        return None
    return MARGIN[label] if model_is_a else -MARGIN[label]


def battles(margins: list[int | None]) -> np.ndarray:
    """The model's points per battle (1 win, 0.5 tie, 0 loss), strong games repeated 3 times,
    in the order NeMo-Skills builds its battle table; invalid games (None) add none."""
    points: list[float] = []
    for margin in margins:
        if margin is None:
            continue
        point = 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5
        points.extend([point] * (STRONG_WEIGHT if abs(margin) == 2 else 1))
    return np.array(points, dtype=float)


def _elo(share: np.ndarray) -> np.ndarray:
    share = np.clip(share, _EDGE, 1 - _EDGE)
    return 400.0 * np.log10(share / (1 - share))


def _win_rate(elo: float) -> float:
    return 100.0 / (1.0 + 10.0 ** (-elo / 400.0))


@dataclass(frozen=True)
class ArenaScore:
    score: float
    ci95: tuple[float, float]
    """(lower - score, upper - score), as NeMo-Skills reports ``95_CI``."""
    battles: int


def arena_score(points: np.ndarray) -> ArenaScore | None:
    """Win rate against the baseline (percent) and its bootstrap interval; None without battles."""
    n = points.size
    if n == 0:
        return None
    score = round(_win_rate(float(_elo(np.array([points.mean()]))[0])), 2)
    rng = np.random.RandomState(BOOTSTRAP_SEED)
    shares = np.array([points[rng.choice(n, size=n, replace=True)].mean() for _ in range(BOOTSTRAP_ROUNDS)])
    elos = _elo(shares)
    lower = round(_win_rate(float(np.percentile(elos, 2.5))), 2)
    upper = round(_win_rate(float(np.percentile(elos, 97.5))), 2)
    return ArenaScore(score, (round(lower - score, 2), round(upper - score, 2)), n)
