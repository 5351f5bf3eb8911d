"""A tiny deterministic environment and answer function for loop tests."""

from __future__ import annotations

from typing import Any

from nel import EvalEnvironment, SeedResult, VerifyResult
from nel.testing.model_server import Rule


class ToyEnv(EvalEnvironment):
    """Problem i asks for i; the answer is the last word of the response."""

    name = "toy"
    score_names = ("correct",)

    def __init__(self, size: int = 20, fail_verify_on: int | None = None) -> None:
        self.size = size
        self.fail_verify_on = fail_verify_on

    def dataset_size(self) -> int:
        return self.size

    async def seed(self, idx: int) -> SeedResult:
        subset = "even" if idx % 2 == 0 else "odd"
        return SeedResult(expected_answer=str(idx), prompt=f"question {idx}", metadata={"subset_for_metrics": subset})

    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        answer = response.split()[-1] if response.split() else None
        if self.fail_verify_on is not None and answer == str(self.fail_verify_on):
            raise RuntimeError("scorer exploded")
        return VerifyResult(reward=float(answer == expected), extracted_answer=answer)


def answer_right_below(limit: int):
    """Answer problems < limit correctly, the rest with a wrong answer."""

    def answer(body: dict) -> Rule:
        idx = int(body["messages"][-1]["content"].split()[-1])
        return Rule(content=f"the answer is {idx if idx < limit else 'wrong'}")

    return answer
