"""Makes the README's pictures of the shipped model's explanation of one scene: docs/demo.png (the
publication figure) and docs/tokens.png (the filmstrip `glimpse explain` writes as tokens.png).

    python docs/make_demo_figure.py [--seed 11]
"""

import argparse
from pathlib import Path

import glimpse
from glimpse.summary import filmstrip
from glimpse.toy import world
from glimpse.toy.localisation import answer_word_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "demo.png")
    args = parser.parse_args()
    sample = world.make_sample(args.seed)
    model, processor = glimpse.load(None, device="cpu")
    explanation = glimpse.explain(model, processor, sample.image, sample.question)
    # The method's two highest-ranked tokens and the answer word (the colour, the shape...), in answer order.
    word = answer_word_token(sample, explanation.answer_tokens)
    tokens = sorted(set(explanation.top_tokens(2)) | ({word} if word is not None else set()))
    explanation.figure(tokens=tokens).savefig(args.out, dpi=110, bbox_inches="tight")
    strip = args.out.with_name("tokens.png")
    filmstrip(explanation).save(strip)
    print(f"scene {args.seed}: {sample.question} -> {explanation.answer} (truth: {sample.answer}); wrote {args.out}, "
          f"{strip}")


if __name__ == "__main__":
    main()
