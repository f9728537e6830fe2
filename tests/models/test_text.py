"""Token texts and word labels as reports show them."""

import pytest

import glimpse
from glimpse.models.text import _label, token_texts, words_of_spans


@pytest.fixture(scope="module")
def word_level():
    return glimpse.load(device="cpu").processor.tokenizer  # the shipped model's: 43 words, no spaces in them


def test_tokens_keep_the_tokenizers_spacing(word_level):
    ids = word_level(" there are three objects.", add_special_tokens=False)["input_ids"]
    assert [word_level.decode([i]) for i in ids] == ["there", "are", "three", "objects", "."]  # run together
    assert token_texts(word_level, ids) == ["there", " are", " three", " objects", "."]


def test_token_texts_join_to_the_decoded_text(tiny_llava):
    tokenizer = tiny_llava[1].tokenizer
    text = " a red circle, ¿qué? 猫 é"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = token_texts(tokenizer, ids)
    assert len(texts) == len(ids) and "".join(texts) == tokenizer.decode(ids)


@pytest.mark.parametrize("word, label", [("there?", "there"), ("¿qué?", "qué"), ('"red"', "red"), ("?", "?"),
                                         ("don't", "don't"), ("ما؟", "ما"), ("3.5", "3.5")])
def test_words_are_labelled_without_their_punctuation(word, label):
    assert _label(word) == label


def test_the_punctuations_tokens_still_count_to_the_word():
    words, word_of = words_of_spans("is it there?", [(0, 2), (3, 5), (6, 11), (11, 12)])
    assert words == ("is", "it", "there") and word_of == (0, 1, 2, 2)
