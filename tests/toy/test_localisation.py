"""The answer word whose token map the toy benchmark scores."""

from glimpse.toy import world
from glimpse.toy.localisation import answer_word_token


def _tokens(answer: str) -> list[str]:
    return [" " + w for w in answer.replace(".", " .").split()]


def test_answer_word_is_the_asked_attribute() -> None:
    samples = [s for s in world.make_dataset(60, 5) if s.qtype in (1, 2, 3)]
    for s in samples:
        obj = s.objects[s.target]
        tokens = _tokens(s.answer)
        k = answer_word_token(s, tokens)
        expected = {1: obj.color, 2: obj.shape, 3: obj.quadrant.split()[0]}[s.qtype]
        assert tokens[k].strip() == expected
        # the attribute word, not the same word where the answer repeats the question's subject
        assert k == len(tokens) - (3 if s.qtype == 3 else 2)
    assert {s.qtype for s in samples} == {1, 2, 3}


def test_answer_without_the_attribute_has_no_answer_word() -> None:
    s = next(s for s in world.make_dataset(40, 6) if s.qtype == 1)
    wrong = next(c for c in world.COLORS if c != s.objects[s.target].color)
    assert answer_word_token(s, _tokens(f"the {s.objects[s.target].shape} is {wrong}.")) is None


def test_counting_question_has_no_answer_word() -> None:
    s = next(s for s in world.make_dataset(40, 7) if s.qtype == 4)
    assert answer_word_token(s, _tokens(s.answer)) is None
