"""AlpacaEval 2.0 as alpaca-eval 0.6.6's own code computes it: the reference of tests/test_alpaca_eval.py.

Run as a script (``python tests/alpaca_eval_reference.py < cases.json``), never imported by the
suite: importing alpaca_eval loads a ``.env`` file, and its length-controlled fit switches on
sklearn's metadata routing for the whole process. It needs alpaca-eval's import-time packages
(the ``test`` extra) and reads ``df_gamed.csv`` from the Hugging Face cache that the caller
names in ``HF_HUB_CACHE`` (with ``HF_HUB_OFFLINE=1``), as alpaca-eval itself downloads it.

Input, one JSON object: ``{"cases": [{"rows": [...]}, ...]}``; a row has ``instruction``,
``baseline``, ``response`` and, for a judged row, ``top_logprobs`` ({token: logprob} of the
judge's one token). Output: per case, the judge messages alpaca-eval would send (None for a
draw it does not send), whether it shows the model's output first, the preference it parses,
and its leaderboard metrics.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

import pandas as pd  # noqa: E402
from alpaca_eval import completion_parsers, processors, utils  # noqa: E402
from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate  # noqa: E402

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
TEMPLATE = utils.constants.EVALUATORS_CONFIG_DIR / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt"


def _switch(df: pd.DataFrame) -> pd.DataFrame:
    """The order coin and swap of alpaca-eval's pairwise annotator, with its default seed (0)."""
    swap = processors.RandomSwitchTwoColumnsProcessor(
        two_columns_to_switch=["output_1", "output_2"],
        random_seed_columns=["instruction"],
        _switch_column="is_switched_outputs",
        seed=0,
        annotation_column="preference",
    )
    return swap.preprocess(df)


def _completion(top: dict[str, float]) -> dict:
    """The judge's reply as alpaca-eval's OpenAI decoder hands it to the parser."""
    alternatives = [{"token": t, "logprob": lp} for t, lp in top.items()]
    return {"logprobs": {"content": [{**alternatives[0], "top_logprobs": alternatives}]}}


def run_case(rows: list[dict]) -> dict:
    df = pd.DataFrame(
        {
            "instruction": [r["instruction"] for r in rows],
            "output_1": [r["baseline"] for r in rows],
            "output_2": [r["response"] for r in rows],
        }
    )
    shown = _switch(df)
    prompts, _ = utils.make_prompts(shown, TEMPLATE.read_text())
    messages, preferences = [], []
    for i, row in enumerate(rows):
        if row["baseline"] == row["response"]:
            messages.append(None)
            preferences.append(1.5)
            continue
        messages.append(utils.prompt_to_chatml(prompts[i]))
        parsed = completion_parsers.logprob_parser(
            _completion(row["top_logprobs"]), numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False
        )[0]
        preferences.append(None if pd.isna(parsed) else (3 - parsed if shown["is_switched_outputs"][i] else parsed))
    annotations = [
        {"instruction": r["instruction"], "output_1": r["baseline"], "output_2": r["response"],
         "generator_1": "baseline", "generator_2": "model", "annotator": ANNOTATOR, "preference": p}
        for r, p in zip(rows, preferences)
    ]  # fmt: skip
    metrics = get_length_controlled_winrate(annotations, save_weights_dir=None, is_warn_extreme_changes=False)
    return {
        "messages": messages,
        "switched": [bool(s) for s in shown["is_switched_outputs"]],
        "preferences": preferences,
        "metrics": {k: None if pd.isna(v) else float(v) for k, v in metrics.items()},
    }


if __name__ == "__main__":
    cases = json.load(sys.stdin)["cases"]
    json.dump({"results": [run_case(case["rows"]) for case in cases]}, sys.stdout)
