"""BFCL ground truth, every single-turn row: the possible answer sent back as OpenAI tool
calls must pass BFCL's AST checker (and a wrong call must fail it). Pure functions, no server.

    python benchmarks/bfcl_ground_truth.py [v3|v4]
"""

from __future__ import annotations

import sys
import time

from nel.scoring.bfcl import (
    V3_CATEGORIES,
    V4_CATEGORIES,
    category_rows,
    ground_truth_calls,
    single_turn_verdict,
)
from nel.skills.bfcl import package_data


def _openai(calls: list[dict]) -> list[dict]:
    import json

    return [{"type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in calls]  # fmt: skip


def main(version: str = "v3") -> int:
    data, prefix = package_data(version)
    categories = V3_CATEGORIES if version == "v3" else V4_CATEGORIES
    failed = 0
    for category in categories:
        if category.kind == "multi_turn":
            continue
        t0 = time.perf_counter()
        rows = list(category_rows(data, prefix, category))
        good = wrong_fails = 0
        for row in rows:
            import json

            expected = json.loads(row["expected_answer"])
            if category.kind == "irrelevance":
                calls = []
            elif category.kind == "relevance":
                fn = row["tools"][0]["function"]["name"]
                calls = [{"name": fn, "arguments": {}}]
            else:
                calls = ground_truth_calls(expected, row["function"], category.language)
            ok, details = single_turn_verdict(row, _openai(calls))
            good += ok
            if not ok and failed < 5:
                print("  FAIL", row["id"], details.get("error"), file=sys.stderr)
            failed += not ok
            wrong = [] if category.kind == "relevance" else [{"name": "no_such_function", "arguments": {}}]
            wrong_fails += not single_turn_verdict(row, _openai(wrong))[0]
        print(f"{category.name:26s} ground truth {good}/{len(rows)}  wrong call fails {wrong_fails}/{len(rows)}"
              f"  ({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
