"""Family-independent text handling: the answer's token ids, the question's place in the prompt, its words.

Plain functions of the tokenizer; `Adapter` calls them, and a family that needs another text rule
overrides the Adapter method, not these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import AnswerError


def answer_ids(tokenizer: Any, prompt_text: str, answer: str) -> list[int]:
    """Token ids of `answer` as they follow `prompt_text`.

    Tokenising prompt and answer together keeps merges at the boundary as the model would produce
    them; if the prompt's tokens are not a prefix of the joint ones, the answer is tokenised alone.
    """
    if not answer.strip():
        raise AnswerError("the answer to explain is empty")
    joiner = "" if (not prompt_text or prompt_text[-1].isspace() or answer[0].isspace()) else " "
    prompt_ids = tokenizer(prompt_text)["input_ids"]
    joint_ids = tokenizer(prompt_text + joiner + answer)["input_ids"]
    if joint_ids[: len(prompt_ids)] == prompt_ids and len(joint_ids) > len(prompt_ids):
        ids = joint_ids[len(prompt_ids):]
    else:
        ids = tokenizer(joiner + answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise AnswerError(f"the answer {answer!r} tokenizes to nothing")
    return list(ids)


def unknown_words(tokenizer: Any, answer: str) -> tuple[list[str], list[str]]:
    """The whitespace-separated words of `answer` the tokenizer does not know (without the punctuation
    around them), each once, in order:
    (unknown, dropped): those that become (at least partly) its unknown token, and those it turns
    into no token at all. A byte-level tokenizer knows every word: both lists are empty."""
    unk = getattr(tokenizer, "unk_token_id", None)
    unknown, dropped = [], []
    for word in dict.fromkeys(answer.split()):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            dropped.append(_label(word))
        elif unk is not None and unk in ids:
            unknown.append(_label(word))  # "holding", not "holding?": the mark is known
    return list(dict.fromkeys(unknown)), list(dict.fromkeys(dropped))


def known_ids(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """The ids that stand for text the tokenizer knows: neither special tokens (end of sequence,
    padding, the image token, ...) nor its unknown token."""
    special = set(tokenizer.all_special_ids)
    unk = getattr(tokenizer, "unk_token_id", None)
    return [i for i in ids if i not in special and i != unk]


def question_span(tokenizer: Any, input_ids: Sequence[int], prompt_text: str,
                  question: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Positions of the question's own tokens in `input_ids`, with each token's character span in `question`.

    The rendered prompt is tokenised with character offsets; the tokens overlapping the LAST occurrence
    of the question (a system prompt may repeat it earlier) are then located as the last run inside
    the processor's ids, which differ only by expanded image tokens. ([], []) when not found.
    """
    start = prompt_text.rfind(question)
    if start < 0:
        return [], []
    end = start + len(question)
    enc = tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
    picked = [(tid, (a - start, b - start)) for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
              if a < end and b > start and b > a]
    positions = _find_last_run(list(input_ids), [tid for tid, _ in picked])
    return positions, ([span for _, span in picked] if positions else [])


def words_of_spans(text: str, spans: Sequence[tuple[int, int]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Merge sub-word tokens into the whitespace-separated words of `text` they fall in (the unit of
    human gaze on a question), each labelled without its surrounding punctuation."""
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    word_of, used = [], []
    for a, b in spans:
        index = next((i for i, (ws, we, _) in enumerate(words) if a < we and b > ws), None)
        if index is None:  # a token of pure whitespace: attach it to the next word
            index = next((i for i, (ws, _, _) in enumerate(words) if ws >= a), len(words) - 1)
        word_of.append(index)
    # Keep only words that own a token, renumbered in order.
    for index in word_of:
        if index not in used:
            used.append(index)
    return tuple(_label(words[i][2]) for i in used), tuple(used.index(i) for i in word_of)


def _label(word: str) -> str:
    """A word as reports name it: without the punctuation around it ("there?" -> "there"), unless
    it is all punctuation. Its tokens, the "?" among them, still count to it."""
    return re.sub(r"^[^\w]+|[^\w]+$", "", word) or word


def fallback_prompt(tokenizer: Any, ids: Sequence[int], excluded: set[int]) -> list[int]:
    """Every position of `ids` outside `excluded` (the image tokens) that holds no special token:
    the method's documented prompt P when the question cannot be located."""
    special = set(tokenizer.all_special_ids)
    return [i for i, t in enumerate(ids) if i not in excluded and t not in special]


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text as it reads in the decoded sequence, with the tokenizer's own spacing
    (SentencePiece's "▁are" and a word-level tokenizer's "are" both read " are" after a word): the
    growth of the decoded prefix, so that the texts join to the decoded sequence. A byte token that
    completes no character (the first bytes of a multi-byte letter) reads "": the token completing
    the letter carries it."""
    texts, before = [], ""
    for end in range(1, len(ids) + 1):
        prefix = tokenizer.decode(list(ids[:end]))
        if prefix.endswith("\ufffd") and end < len(ids):
            texts.append("")
            continue
        texts.append(prefix[len(before):] if prefix.startswith(before) else tokenizer.decode([ids[end - 1]]))
        before = prefix
    return texts


def token_words(tokenizer: Any, ids: Sequence[int], positions: Sequence[int]) -> tuple[str, ...]:
    """Each position's token decoded on its own: the words of a fallback prompt."""
    return tuple(tokenizer.decode([ids[p]]).strip() for p in positions)


def _find_last_run(haystack: list[int], needle: list[int]) -> list[int]:
    if not needle:
        return []
    n = len(needle)
    for start in range(len(haystack) - n, -1, -1):
        if haystack[start:start + n] == needle:
            return list(range(start, start + n))
    return []
