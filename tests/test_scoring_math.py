"""Math scorer (extraction + equivalence) and the scoring process pool."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from nel.errors import ScoringError
from nel.execution.pool import ScoringPool, ScoringTaskError, ScoringTimeoutError
from nel.scoring import math as nel_math
from nel.scoring.math import (
    MathScorer,
    compare_answers,
    extract_answer,
    extract_boxed,
    math_equal,
)

# ------------------------------------------------------------------ helpers run in workers


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def sleep_forever():
    time.sleep(1000)  # interruptible: the worker's own timer ends it


def hang_ignoring_signals():
    # SIGALRM blocked: the in-worker timer cannot fire, only the parent's kill ends this.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(1000)


def late_by_a_moment():
    # Ignores the timer for 0.7 s (long enough for the pool to take back the items queued
    # behind it), then lets the pending SIGALRM in.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(0.7)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def crash():
    os._exit(7)


def pid():
    return os.getpid()


def unpicklable_result():
    return lambda: None


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"nested \boxed{\frac{\sqrt{2}}{2}} end", r"\frac{\sqrt{2}}{2}"),
        (r"first \boxed{1}, then \boxed{2}, finally \boxed{3}", "3"),
        (r"\fbox{7}", "7"),
        (r"\fbox{7} and later \boxed{8}", "8"),
        (r"\boxed{8} and later \fbox{9}", "9"),
        (r"the answer is \boxed 5$.", "5"),
        (r"the answer is \boxed 12", "12"),
        (r"\boxed {6}", "6"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),  # escaped brace is not a group
        (r"$\boxed{ 5 }$", "5"),
        (r"\boxed{\text{(A)}}", r"\text{(A)}"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    ["no box here", "", r"\boxed{unbalanced", r"\boxed{}", r"ok \boxed{1} then \boxed{2", r"\boxed"],
)
def test_extract_boxed_none(text):
    assert extract_boxed(text) is None


def test_extract_answer_prefers_boxed_then_regex():
    regex = r"The final answer is (.+)$"
    assert extract_answer(r"The final answer is 3. \boxed{4}", regex) == "4"
    assert extract_answer("blah\nThe final answer is 7", regex) == "7"
    assert extract_answer("The final answer is 1\nThe final answer is 2", r"answer is (\d+)") == "2"
    assert extract_answer("Answer: 12", r"Answer: \d+") == "Answer: 12"  # no group: whole match
    assert extract_answer("nothing", regex) is None
    assert extract_answer("The final answer is 7") is None  # no regex given


# ------------------------------------------------------------------ equivalence

EQUAL = [
    (r"\frac12", "0.5"),
    (r"10\%", "10"),
    ("10%", "10"),
    ("016", "16"),
    ("(x+1)^2", "x^2+2x+1"),
    (r"5\text{ cm}", "5"),
    (r"2\text{ m}^2", "2"),
    (r"\{1,2,3\}", r"\{3,2,1\}"),
    ("(1,2)", "(1, 2)"),
    (r"\left(1,2\right)", "(1,2)"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    ("1,000", "1000"),
    (r"1{,}000", "1000"),
    (r"1\,000", "1000"),
    (r"\$1,000.00", "1000"),
    ("-5", "-5.0"),
    ("\u22127", "-7"),
    (r"-\frac{1}{2}", "-0.5"),
    (r"\frac{-1}{2}", "-0.5"),
    ("x=5", "5"),
    ("5", "x=5"),
    (r"\$18", "18"),
    ("18.00", "18"),
    ("18.", "18"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"\tfrac34", "3/4"),
    (r"30^\circ", "30"),
    (r"30^{\circ}", "30"),
    (r"\text{Monday}", "Monday"),
    ("{5}", "5"),
    (r"3\sqrt{2}", r"\sqrt{18}"),
    (r"\frac{1}{3}", "0.333333"),
    (r"\pi r^2", r"\pi r^2"),
    (r"\(\frac{1}{2}\)", "0.5"),
]

NOT_EQUAL = [
    ("2", "3"),
    ("(1,2)", "(2,1)"),
    (r"\frac{1}{3}", "0.33"),
    ("1000001", "1000000"),
    ("1234567.4", "1234567"),
    ("-5", "5"),
    (r"\{1,2\}", r"\{1,3\}"),
    ("(1,2)", "(1,2,3)"),
    ("10%", "0.1"),
    ("ab", "ba"),  # words compare as strings, not as products of symbols
    ("Monday", "Tuesday"),
    ("a", "A"),  # as in NeMo-Skills: words compare as written
    ("(x+1)^2", "x^2+1"),
    (r"\sqrt{3}/2", r"\frac{\sqrt2}{2}"),
    ("", "5"),
    ("5", ""),
]


@pytest.mark.parametrize(("predicted", "expected"), EQUAL)
def test_math_equal_true(predicted, expected):
    assert math_equal(predicted, expected) is True


@pytest.mark.parametrize(("predicted", "expected"), NOT_EQUAL)
def test_math_equal_false(predicted, expected):
    assert math_equal(predicted, expected) is False


# What NeMo-Skills' grader tests check (tests/test_math_equal.py in NVIDIA/NeMo-Skills), both ways
# round, sent as a boxed response: nel agrees on every pair but the one listed under DEPARTURES.
NEMO_SKILLS_EQUAL = [
    ("5", "5"), ("5", "5.0"), ("1/2", "0.5"), (r"\frac{1}{2}", "0.5"), (r"918\frac{1}{2}", "918.5"),
    ("x^2+2x+1", "x^2 + 2*x + 1"), ("x^2+2x+1", "x^2 + 2*x - (-1)"), ("y = x^2+2x+1", "2x+ 1+x^2"),
    ("odd", r"\text{odd}"), ("E", r"\mathrm{E}"), ("A", r"\textbf{A}"), ("f'", "f'"),
    ("185", "185\\"), ("185\\", "185\\"), (".185", "0.185"), (r"\frac {1}{2}", "0.5"), (r"17\text{ any text}", "17"),
    (r"\$10", "10"), ("10%", "10"), (r"10\%", "10"), ("2.5", r"\frac{5}{2}"), (r"\frac{1}{3}", r"\dfrac{1}{3}"),
    ("(r+5)(r+5)", "(r+5)^2"), (r"\frac{\sqrt{3}}{3}", r"\frac{\sqrt{3}}{3} \approx 0.577"),
    (r"\begin{pmatrix}0&0&0\\0&1&0\\0&0&1\end{pmatrix}",
     r"\begin{bmatrix} 0 & 0 & 0 \\ 0 & 1 & 0 \\ 0 & 0 & 1 \end{bmatrix}"),
]  # fmt: skip
NEMO_SKILLS_NOT_EQUAL = [
    ("5", "5.001"), ("x^2+2x+1", "x^3+2x+1"), ("odd", r"\text{oddd}"), ("E", r"\mathrm{E}*2"),
    (r"\sqrt{67},-\sqrt{85}", r"\sqrt{67}"),
]  # fmt: skip
# NeMo-Skills (newer grader) reads "C. x = 42" as the option letter C; nel's math scorer does not
# guess option letters out of a math answer (multichoice benchmarks use the multichoice scorer).
DEPARTURES = [("C", "C. x = 42")]


def _both_ways(pairs):
    return [*pairs, *[(b, a) for a, b in pairs]]


def _boxed_response_matches(answer: str, expected: str) -> bool:
    extracted = extract_answer(f"Working it out.\nThe answer is $\\boxed{{{answer}}}$.")
    return extracted is not None and math_equal(extracted, expected)


@pytest.mark.parametrize(("answer", "expected"), _both_ways(NEMO_SKILLS_EQUAL))
def test_nemo_skills_grader_pairs_equal(answer, expected):
    assert _boxed_response_matches(answer, expected) is True


@pytest.mark.parametrize(("answer", "expected"), _both_ways(NEMO_SKILLS_NOT_EQUAL + DEPARTURES))
def test_nemo_skills_grader_pairs_not_equal(answer, expected):
    assert _boxed_response_matches(answer, expected) is False


def test_a_box_ending_in_a_backslash_is_read_as_nemo_skills_reads_it():
    assert extract_boxed(r"\boxed{185\}") == "185\\"
    assert extract_boxed(r"\boxed{\{1,2\}}") == r"\{1,2\}"  # escaped braces that balance still do not count
    assert extract_boxed(r"\boxed{\{1,2\}") is None  # unbalanced either way


def test_bmatrix_is_pmatrix_but_not_vmatrix():
    assert math_equal(r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}")
    assert not math_equal(r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}")
    assert not math_equal(r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}")


@pytest.mark.parametrize(
    ("predicted", "expected", "path"),
    [
        ("42", "42", "literal"),
        ("41", "42", "literal"),
        (r"\$1,000", "1000", "literal"),
        (r"\frac{3}{4}", "0.75", "literal"),
        ("(2,1)", "(1,2)", "literal"),
        ("(x+1)^2", "x^2+2x+1", "symbolic"),
        (r"\sqrt{8}", r"2\sqrt{2}", "symbolic"),
        (r"\frac{1}{3}", "0.3333333", "symbolic"),  # near-equal decimals: math-verify decides
    ],
)
def test_decision_path(predicted, expected, path):
    assert compare_answers(predicted, expected)[1] == path


def test_literal_path_never_calls_math_verify(monkeypatch):
    def boom(p, e):
        raise AssertionError(f"math-verify called for {p!r} vs {e!r}")

    monkeypatch.setattr(nel_math, "_symbolic_equal", boom)
    for predicted, expected in [("7", "7"), ("1,000", "1000"), (r"\$18.00", "18"), ("12", "13")]:
        compare_answers(predicted, expected)


def test_quick_verdict_is_sound_and_conservative():
    parse, quick = nel_math._parse, nel_math._quick_verdict
    assert quick(parse("x^2+1")[0], parse("(x+1)^2")[0]) is False
    assert quick(parse(r"\sqrt{3}/2")[0], parse(r"\frac{\sqrt{2}}{2}")[0]) is False
    assert quick(parse("x^2+2x+1")[0], parse("(x+1)^2")[0]) is True  # expand proves it
    assert quick(parse(r"\sqrt{18}")[0], parse(r"3\sqrt{2}")[0]) is True
    assert quick(parse(r"\sin^2 x+\cos^2 x")[0], parse("1")[0]) is None  # math-verify's call
    assert quick(parse("0.5")[0], parse("0.6")[0]) is None  # floats: math-verify's rounding rules
    assert quick(parse("x")[0], parse("y")[0]) is None  # lone symbols: math-verify's rules
    assert quick(parse("10^{100}+1")[0], parse("10^{100}")[0]) is None  # too close to call
    assert quick(parse("x=1")[0], parse("x=2")[0]) is None  # relations are not screened
    assert quick(parse("(x+1)^{100}")[0], parse("(x+2)^{100}")[0]) is False
    assert quick(parse("(x+1)^{100}")[0], parse("(1+x)^{100}")[0]) is True  # same canonical form
    assert quick(parse("(x+1)^{100}-x")[0], parse("(x+1)^{100}-x+0")[0]) is True


def test_math_equal_timeout_in_main_thread(monkeypatch):
    monkeypatch.setattr(nel_math, "_symbolic_equal", lambda p, e: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(ScoringTimeoutError):
        math_equal("x^2", "y^3", timeout=0.2)
    assert time.monotonic() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0  # timer disarmed, handler restored
    assert signal.getsignal(signal.SIGALRM) is not nel_math._on_timer


# ------------------------------------------------------------------ pool


@pytest.fixture(scope="module")
def pool():
    with ScoringPool(2, grace=0.5, preload=["nel.scoring.math"]) as p:
        yield p


def run(coro):
    return asyncio.run(coro)


def test_pool_runs_calls(pool):
    async def main():
        return await asyncio.gather(*(pool.run(add, i, 1, timeout=5) for i in range(300)))

    assert run(main()) == [i + 1 for i in range(300)]


def test_pool_reports_exceptions(pool):
    async def main():
        with pytest.raises(ScoringTaskError) as info:
            await pool.run(fail, "bad input", timeout=5)
        assert info.value.exc_type == "ValueError"
        assert "bad input" in str(info.value)
        assert "fail" in info.value.remote_traceback
        with pytest.raises(ScoringTaskError, match="cannot be pickled"):
            await pool.run(unpicklable_result, timeout=5)
        with pytest.raises(ScoringTaskError, match="cannot send"):
            await pool.run(add, lambda: 1, 2)
        return await pool.run(add, 2, 2)

    assert run(main()) == 4


def test_pool_soft_timeout(pool):
    async def main():
        pids = pool.worker_pids
        start = time.monotonic()
        results = await asyncio.gather(
            pool.run(sleep_forever, timeout=0.3),
            *(pool.run(add, i, 0, timeout=5) for i in range(50)),
            return_exceptions=True,
        )
        assert time.monotonic() - start < 3
        assert isinstance(results[0], ScoringTimeoutError) and not results[0].hard
        assert results[1:] == list(range(50))
        assert pool.worker_pids == pids  # the timer sufficed, no worker was killed

    run(main())


def test_pool_hard_timeout_kills_and_replaces_worker(pool):
    async def main():
        start = time.monotonic()
        hung = asyncio.ensure_future(pool.run(hang_ignoring_signals, timeout=0.3))
        others = [pool.run(add, i, 0, timeout=5) for i in range(200)]
        assert await asyncio.gather(*others) == list(range(200))
        assert time.monotonic() - start < 1.0  # not held up by the hung item
        with pytest.raises(ScoringTimeoutError) as info:
            await hung
        assert info.value.hard
        assert time.monotonic() - start < 4  # timeout 0.3 + grace 0.5 + watchdog tick
        assert await pool.run(add, 1, 1, timeout=5) == 2  # the pool keeps working

    run(main())


def test_pool_recovers_when_a_taken_back_item_hangs_its_old_worker():
    # One worker gets the chunk [late, hang] (+ [add] queued). While `late` runs past its
    # timeout the pool takes `hang` and `add` back to run them elsewhere, but the old worker
    # still runs `hang` after `late` and hangs there: the watchdog must replace that worker
    # too, or the pool would stall for good.
    async def main():
        with ScoringPool(1, grace=0.6, preload=["nel.scoring.math"]) as single:
            await single.run(add, 0, 0)
            first_pid = single.worker_pids
            results = await asyncio.wait_for(
                asyncio.gather(
                    single.run(late_by_a_moment, timeout=0.3),
                    single.run(hang_ignoring_signals, timeout=0.3),
                    single.run(add, 2, 3, timeout=5),
                    return_exceptions=True,
                ),
                timeout=15,
            )
            assert isinstance(results[0], ScoringTimeoutError) and not results[0].hard
            assert isinstance(results[1], ScoringTimeoutError) and results[1].hard
            assert results[2] == 5
            assert await asyncio.wait_for(single.run(add, 1, 1, timeout=5), timeout=10) == 2
            assert single.worker_pids != first_pid

    run(main())


def test_pool_worker_crash_fails_only_its_item(pool):
    async def main():
        results = await asyncio.gather(
            pool.run(crash, timeout=5),
            *(pool.run(add, i, 0, timeout=5) for i in range(100)),
            return_exceptions=True,
        )
        assert isinstance(results[0], ScoringTaskError) and results[0].exc_type == "WorkerDied"
        assert results[1:] == list(range(100))
        assert len(pool.worker_pids) == 2

    run(main())


def test_pool_uses_several_processes(pool):
    async def main():
        return set(await asyncio.gather(*(pool.run(pid) for _ in range(400))))

    pids = run(main())
    assert os.getpid() not in pids and len(pids) >= 1


def test_pool_cancelled_awaiter_is_harmless(pool):
    async def main():
        task = asyncio.ensure_future(pool.run(sleep_forever, timeout=0.3))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await pool.run(add, 3, 4)

    assert run(main()) == 7


def test_inline_pool():
    async def main():
        with ScoringPool(0) as inline:
            assert await inline.run(pid) == os.getpid()
            with pytest.raises(ScoringTaskError, match="nope"):
                await inline.run(fail, "nope")

    run(main())


def test_closed_pool_rejects_calls():
    p = ScoringPool(1)
    p.close()
    p.close()

    async def main():
        with pytest.raises(ScoringError):
            await p.run(add, 1, 2)

    run(main())


# ------------------------------------------------------------------ MathScorer end to end


def test_math_scorer_end_to_end(pool):
    scorer = MathScorer(pool, extract_regex=r"The final answer is (.+)$", timeout=5.0)
    cases = [
        (r"2 + 2 = 4, so \boxed{4}.", "4", 1.0, "4", "literal"),
        (r"I get \boxed{5}.", "4", 0.0, "5", "literal"),
        (r"It costs \boxed{\$1,000.00}", "1000", 1.0, r"\$1,000.00", "literal"),
        (r"Expanding, \boxed{(x+1)^2}", "x^2+2x+1", 1.0, "(x+1)^2", "symbolic"),
        ("Hence\nThe final answer is 12", 12, 1.0, "12", "literal"),  # int expected is fine
    ]

    async def main():
        return await asyncio.gather(*(scorer.score(resp, exp) for resp, exp, *_ in cases))

    for result, (_, _, reward, extracted, path) in zip(run(main()), cases):
        assert result.reward == reward
        assert result.extracted_answer == extracted
        assert result.scores == {"symbolic_correct": reward}
        assert result.details == {"path": path}


def test_math_scorer_no_answer(pool):
    result = run(MathScorer(pool).score("I am not sure.", "4"))
    assert result.reward == 0.0 and result.extracted_answer is None
    assert result.details == {"no_answer": True}
    assert result.scores == {"symbolic_correct": 0.0}


def test_math_scorer_timeout(pool):
    # A fresh symbolic pair (no cache hit) cannot be parsed in a millisecond.
    scorer = MathScorer(pool, timeout=0.001)
    result = run(scorer.score(r"\boxed{(x+917)^3}", "x^3+2751x^2+2522667x+771095213"))
    assert result.reward == 0.0
    assert result.details["error"] == "timeout"
    assert result.extracted_answer == "(x+917)^3"
    assert run(MathScorer(pool).score(r"\boxed{3}", "3")).reward == 1.0


def test_math_scorer_reports_failures():
    class BrokenPool:
        async def run(self, fn, *args, timeout=None):
            raise ScoringTaskError("RecursionError: too deep", exc_type="RecursionError")

    result = run(MathScorer(BrokenPool()).score(r"\boxed{1}", "1"))
    assert result.reward == 0.0 and result.extracted_answer == "1"
    assert result.details["error"] == "exception"
    assert result.details["exception_type"] == "RecursionError"
