"""BFCL v3 multi-turn ground truth, every row: each turn's ground-truth calls, replayed in the
sandbox and checked by nel's multi-turn verdict, must pass (one step a turn, as the possible answer
lists them). About 0.7 s a row (two sandboxed runs).

    python benchmarks/bfcl_multi_turn_ground_truth.py [concurrency]
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys

from nel.skills.bfcl import v3_rows
from nel.skills.bfcl_multi_turn import check


async def main(concurrency: int = 2) -> int:
    rows = [r for r in v3_rows([]) if r["bfcl_kind"] == "multi_turn"]
    gate = asyncio.Semaphore(concurrency)
    passed: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()

    async def one(row: dict) -> None:
        truth = json.loads(row["expected_answer"])
        async with gate:
            ok, details = await check(row, [[turn] for turn in truth], truth)
        total[row["subset_for_metrics"]] += 1
        passed[row["subset_for_metrics"]] += ok
        if not ok:
            print("  FAIL", row["id"], details.get("error_type"), file=sys.stderr)

    await asyncio.gather(*(one(r) for r in rows))
    for name in total:
        print(f"{name:26s} ground truth {passed[name]}/{total[name]}")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*(int(a) for a in sys.argv[1:]))))
