"""The answer word whose token map the toy benchmark scores."""
import numpy as np

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


def test_variants_compare_options_of_one_method_on_the_same_answers() -> None:
    import glimpse
    from glimpse.toy.localisation import evaluate_localisation

    model, processor = glimpse.load(None, device="cpu")
    variants = {"defaults": {"method": "glimpse"}, "uniform": {"method": "glimpse", "token_weighting": "uniform"}}
    done: list[int] = []
    result = evaluate_localisation(model, processor, 6, 0, variants=variants, progress=done.append)
    assert list(result["methods"]) == ["defaults", "uniform"] and result["n_questions"] > 0
    assert done == list(range(1, 2 * result["n_questions"] + 1))  # once per explanation: questions x variants
    a, b = result["methods"]["defaults"], result["methods"]["uniform"]
    # token weighting changes only the holistic map: the answer word's own map is the same
    assert np.isfinite(a["answer_word_energy"])  # scenes 0-5 hold correctly answered single-object questions
    assert (a["answer_word_pointing"], a["answer_word_energy"]) == (b["answer_word_pointing"], b["answer_word_energy"])


def test_pointing_by_type_splits_the_overall_pointing() -> None:
    import glimpse
    from glimpse.toy.localisation import evaluate_localisation

    model, processor = glimpse.load(None, device="cpu")
    result = evaluate_localisation(model, processor, 12, 1, methods=("raw_attention",))
    row, counts = result["methods"]["raw_attention"], result["n_by_type"]
    assert set(row["pointing_by_type"]) == set(counts) and sum(counts.values()) == result["n_questions"]
    weighted = sum(row["pointing_by_type"][q] * n for q, n in counts.items()) / result["n_questions"]
    assert abs(weighted - row["pointing"]) < 1e-9
