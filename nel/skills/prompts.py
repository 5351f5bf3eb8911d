"""NeMo-Skills prompt configs by name, and filling them from a dataset row.

The template strings below are data copied from the NeMo-Skills prompt configs of the same
name (``nemo_skills/prompt/config/<name>.yaml``, NVIDIA NeMo-Skills, Apache-2.0), verbatim:
a prompt worded differently would score differently, and nel's numbers must be comparable
with ``ns eval``. ``tests/test_skills_nemo_backend.py`` checks them against the installed
nemo_skills package when it is present. Only the configs nel's catalog uses are here.

Filling follows NeMo-Skills: the user template is ``str.format``-ed with the row's fields
(plus ``examples``, empty: nel runs zero-shot), the system message is sent as written.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from nel.errors import ConfigError, DataError
from nel.types import Message


@dataclass(frozen=True)
class PromptConfig:
    """A user template with ``{field}`` placeholders and an optional system message."""

    user: str
    system: str | None = None


PROMPT_CONFIGS: dict[str, PromptConfig] = {
    "generic/default": PromptConfig(user="{question}"),
    "generic/math": PromptConfig(
        user="Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{examples}{problem}"
    ),
    "generic/codegen": PromptConfig(
        user="""\
Here is a problem for which you need to generate/complete code:
{question}

Please continue to complete the function with python programming language. You are not allowed to modify the given code and do the completion only.

The solution should be in the following format:
```python
# Your code here
```"""
    ),
    "generic/general-boxed": PromptConfig(
        user="Solve the following problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{examples}{problem}"
    ),
    "eval/livecodebench/python_codegen": PromptConfig(
        user="Here is a problem for which you need to generate an executable code in python programming language.\n\n{question}"
    ),
    "eval/scicode/default": PromptConfig(
        user="PROBLEM DESCRIPTION:\nYou will be provided with the main description of the problem, previous steps, and the next step. Your task will be to generate the disciplinary knowledge necessary for solving the next step and then develop a Python solution focused on this step.\n\nPREVIOUS STEPS DESCRIPTION:\n{problem_steps_str}\n\nNEXT STEP - PROBLEM DESCRIPTION AND FUNCTION HEADER:\nThis part will describe the next step in the problem-solving process. First, provide the necessary scientific background knowledge as a comment at the beginning of your response, starting with 'Background: '. Then, a function header will be provided, and your task is to develop the Python code for this next step based on the provided description and function header.\n\n{next_step_str}\n\nDEPENDENCIES:\nUse only the following dependencies in your solution. Do not include these dependencies at the beginning of your code.\n{dependencies}\n\nRESPONSE GUIDELINES:\n1. Start with the scientific background required for the next step, formatted as a comment.\n2. Then write the complete and executable Python program for the next step in a single block.\n3. Your response should focus exclusively on implementing the solution for the next step, adhering closely to the specified function header and the context provided by the initial steps.\n4. DO NOT include previous function code, example usage or test code in your response.\n5. Ensure your response is in the format of ```python``` and includes the necessary background as a comment at the top.\n\nExample:\n```python\n# Background: [Here, insert the necessary scientific knowledge required for the next step.]\n\n[Insert the Python code here based on the provided function header and dependencies.]\n```"
    ),
    "eval/scicode/background": PromptConfig(
        user="PROBLEM DESCRIPTION:\nYou will be provided with problem steps along with background knowledge necessary for solving the problem. Your task will be to develop a Python solution focused on the next step of the problem-solving process.\n\nPROBLEM STEPS AND FUNCTION CODE:\nHere, you'll find the Python code for the initial steps of the problem-solving process. This code is integral to building the solution.\n\n{problem_steps_str}\n\nNEXT STEP - PROBLEM STEP AND FUNCTION HEADER:\nThis part will describe the next step in the problem-solving process. A function header will be provided, and your task is to develop the Python code for this next step based on the provided description and function header.\n\n{next_step_str}\n\nDEPENDENCIES:\nUse only the following dependencies in your solution. Do not include these dependencies at the beginning of your code.\n\n{dependencies}\n\nRESPONSE GUIDELINES:\nNow, based on the instructions and information provided above, write the complete and executable Python program for the next step in a single block.\nYour response should focus exclusively on implementing the solution for the next step, adhering closely to the specified function header and the context provided by the initial steps.\nYour response should NOT include the dependencies and functions of all previous steps. If your next step function calls functions from previous steps, please make sure it uses the headers provided without modification.\nDO NOT generate EXAMPLE USAGE OR TEST CODE in your response. Please make sure your response python code in format of ```python```."
    ),
    "generic/hle": PromptConfig(
        user="{problem}",
        system="Your response should be in the following format:\nExplanation: {{your explanation for your final answer}}\nAnswer: {{your succinct, final answer}}\nConfidence: {{your confidence score between 0% and 100% for your answer}}",
    ),
    "eval/aai/mcq-4choices": PromptConfig(
        user="Answer the following multiple choice question. The last line of your response should be in the following format: 'Answer: A/B/C/D' (e.g. 'Answer: A').\n\n{problem}"
    ),
    "eval/aai/mcq-4choices-boxed": PromptConfig(
        user="Answer the following multiple choice question. The last line of your response should be in the following format: 'Answer: \\boxed{{A/B/C/D}}' (e.g. 'Answer: \\boxed{{A}}').\n\n{problem}"
    ),
    "eval/aai/mcq-10choices": PromptConfig(
        user="Answer the following multiple choice question. The last line of your response should be in the following format: 'Answer: A/B/C/D/E/F/G/H/I/J' (e.g. 'Answer: A').\n\n{problem}"
    ),
    "judge/simpleqa": PromptConfig(
        user="""\
Your job is to look at a question, a gold target, and a predicted answer, and then assign a grade of either ["CORRECT", "INCORRECT", "NOT_ATTEMPTED"].
First, I will give examples of each grade, and then you will grade a new example.


The following are examples of CORRECT predicted answers.
```
Question: What are the names of Barack Obama's children?
Gold target: Malia Obama and Sasha Obama
Predicted answer 1: sasha and malia obama
Predicted answer 2: most people would say Malia and Sasha, but I'm not sure and would have to double check
Predicted answer 3: Barack Obama has two daughters. Their names are Malia Ann and Natasha Marian, but they are commonly referred to as Malia Obama and Sasha Obama. Malia was born on July 4, 1998, and Sasha was born on June 10, 2001.
```
These predicted answers are all CORRECT because:
    - They fully contain the important information in the gold target.
    - They do not contain any information that contradicts the gold target.
    - Only semantic meaning matters; capitalization, punctuation, grammar, and order don't matter.
    - Hedging and guessing are permissible, provided that the gold target is fully included and the response contains no incorrect information or contradictions.


The following are examples of INCORRECT predicted answers.
```
Question: What are the names of Barack Obama's children?
Gold target: Malia and Sasha
Predicted answer 1: Malia.
Predicted answer 2: Malia, Sasha, and Susan.
Predicted answer 3: Barack Obama does not have any children.
Predicted answer 4: I think it's either Malia and Sasha. Or it could be Malia and Jackie. Or it could be Joey and Malia.
Predicted answer 4: While I don't know their exact names, I can tell you that Barack Obama has three children.
Predicted answer 5: It's possible you may mean Betsy and Olivia. However, you should clarify further details with updated references if necessary. Is that the correct answer?
Predicted answer 6: It may be the case that Obama's child is named James. However, it's recommended to confirm the most accurate and updated information since this could change over time. This model may not always reflect the most current information.
```
These predicted answers are all INCORRECT because:
    - A factual statement in the answer contradicts the gold target. Incorrect statements that have some hedging (e.g., "it is possible that", "although i'm not sure, i think") are also considered incorrect.


The following are examples of NOT_ATTEMPTED predicted answers.
```
Question: What are the names of Barack Obama's children?
Gold target: Malia and Sasha
Predicted answer 1: I don't know.
Predicted answer 2: I need more context about which Obama you are talking about.
Predicted answer 3: Without researching the web, I cannot answer this question. However, I can tell you that Barack Obama has two children.
Predicted answer 4: Barack Obama has two children. I know that one of them is Malia, but I'm not sure about the other one.
```
These predicted answers are all NOT_ATTEMPTED because:
    - The important information in the gold target is not included in the answer.
    - No statements in the answer contradict the gold target.


Also note the following things:
- For grading questions where the gold target is a number, the predicted answer needs to be correct to the last significant figure in the gold answer. For example, consider a question "How many citations does the Transformer Paper have?" with gold target "120k".
    - Predicted answers "120k", "124k", and 115k" are all CORRECT.
    - Predicted answers "100k" and "113k" are INCORRECT.
    - Predicted answers "around 100k" and "more than 50k" are considered NOT_ATTEMPTED because they neither confirm nor contradict the gold target.
- The gold target may contain more information than the question. In such cases, the predicted answer only needs to contain the information that is in the question.
    - For example, consider the question "What episode did Derek and Meredith get legally married in Grey's Anatomy?" with gold target "Season 7, Episode 20: White Wedding". Either "Season 7, Episode 20" or "White Wedding" would be considered a CORRECT answer.
- Do not punish predicted answers if they omit information that would be clearly inferred from the question.
    - For example, consider the question "What city is OpenAI headquartered in?" and the gold target "San Francisco, California". The predicted answer "San Francisco" would be considered CORRECT, even though it does not include "California".
    - Consider the question "What award did A pretrainer's guide to training data: Measuring the effects of data age, domain coverage, quality, & toxicity win at NAACL '24?", the gold target is "Outstanding Paper Award". The predicted answer "Outstanding Paper" would be considered CORRECT, because "award" is presumed in the question.
    - For the question "What is the height of Jason Wei in meters?", the gold target is "1.73 m". The predicted answer "1.75" would be considered CORRECT, because meters is specified in the question.
    - For the question "What is the name of Barack Obama's wife?", the gold target is "Michelle Obama". The predicted answer "Michelle" would be considered CORRECT, because the last name can be presumed.
- Do not punish for typos in people's name if it's clearly the same name.
    - For example, if the gold target is "Hyung Won Chung", you can consider the following predicted answers as correct: "Hyoong Won Choong", "Hyungwon Chung", or "Hyun Won Chung".


Here is a new example. Simply reply with either CORRECT, INCORRECT, NOT ATTEMPTED. Don't apologize or correct yourself if there was a mistake; we are just trying to grade the answer.
```
Question: {question}
Gold target: {expected_answer}
Predicted answer: {generation}
```

Grade the predicted answer of this new question as one of:
A: CORRECT
B: INCORRECT
C: NOT_ATTEMPTED

Just return the letters "A", "B", or "C", with no text around it."""
    ),
    "judge/arena": PromptConfig(
        system='Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user prompt displayed below. You will be given assistant A\'s answer and assistant B\'s answer. Your job is to evaluate which assistant\'s answer is better.\n\nBegin your evaluation by generating your own answer to the prompt. You must provide your answers before judging any answers.\n\nWhen evaluating the assistants\' answers, compare both assistants\' answers with your answer. You must identify and correct any mistakes or inaccurate information.\n\nThen consider if the assistant\'s answers are helpful, relevant, and concise. Helpful means the answer correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or more than one interpretation, it is more helpful and appropriate to ask for clarifications or more information from the user than providing an answer based on assumptions. Relevant means all parts of the response closely connect or are appropriate to what is being asked. Concise means the response is clear and not verbose or excessive.\n\nThen consider the creativity and novelty of the assistant\'s answers when needed. Finally, identify any missing important information in the assistants\' answers that would be beneficial to include when responding to the user prompt.\n\nAfter providing your explanation, you must output only one of the following choices as your final verdict with a label:\n\n1. Assistant A is significantly better: [[A>>B]]\n2. Assistant A is slightly better: [[A>B]]\n3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: [[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\nExample output: "My final verdict is tie: [[A=B]]".',
        user="<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of Assistant B's Answer|>",
    ),
    "judge/hle": PromptConfig(
        user=r"""Judge whether the following [response] to [question] is correct or not based on the precise and unambiguous [correct_answer] below.

[question]: {problem}

[response]: {generation}

Your judgement must be in the format and criteria specified below:

extracted_final_answer: The final exact answer extracted from the [response]. Put the extracted answer as 'None' if there is no exact, final answer to extract from the response.

[correct_answer]: {expected_answer}

Reasoning: Explain why the extracted_final_answer is correct or incorrect based on [correct_answer], focusing only on if there are meaningful differences between [correct_answer] and the extracted_final_answer. Do not comment on any background to the problem, do not attempt to solve the problem, do not argue for any answer different than [correct_answer], focus only on whether the answers match.

Judgement: Answer 'yes' if extracted_final_answer matches the [correct_answer] given above, or is within a small margin of error for numerical problems. Answer 'no' otherwise, i.e. if there if there is any inconsistency, ambiguity, non-equivalency, or if the extracted answer is incorrect.

Confidence: The extracted confidence score between 0|\%| and 100|\%| from [response]. Put 100 if there is no confidence score available."""
    ),
    "judge/aalcr": PromptConfig(
        user="""\
Assess whether the following CANDIDATE ANSWER is CORRECT or INCORRECT. For the CANDIDATE ANSWER to be correct, it must be consistent with the OFFICIAL ANSWER.

The question, for reference only: {original_question}
The OFFICIAL ANSWER: {expected_answer}
CANDIDATE ANSWER TO ASSESS: {generation}

Reply only with CORRECT or INCORRECT."""
    ),
}


def get_prompt_config(name: str) -> PromptConfig:
    try:
        return PROMPT_CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown prompt config {name!r}; known: {', '.join(sorted(PROMPT_CONFIGS))}"
        ) from None


def template_fields(template: str) -> set[str]:
    """The top-level field names a ``str.format`` template refers to (``{a[0]}`` -> ``a``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"prompt template is not a valid format string: {exc}") from exc
    names = set()
    for _, name, _, _ in parsed:
        if name:
            names.add(name.split(".", 1)[0].split("[", 1)[0])
    return names


def render(template: str, row: dict[str, Any], *, where: str) -> str:
    """Fill ``template`` from ``row``; a missing field names the field and the row."""
    values = {"examples": "", **row}
    missing = sorted(template_fields(template) - set(values))
    if missing:
        raise DataError(
            f"prompt template needs field(s) {', '.join(missing)} that {where} lacks "
            f"(it has: {', '.join(sorted(row))})"
        )
    try:
        return template.format(**values)
    except (IndexError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"prompt template cannot be filled for {where}: {exc!r}") from exc


def build_messages(
    user_template: str, system: str | None, row: dict[str, Any], *, where: str
) -> tuple[Message, ...]:
    """The chat request NeMo-Skills' ``Prompt.fill`` would build: [system,] user."""
    user = render(user_template, row, where=where)
    if system is None:
        return ({"role": "user", "content": user},)
    return ({"role": "system", "content": system}, {"role": "user", "content": user})
