"""Deterministic generated text with learnable structure (the "generated" GPT-2 dataset).

A language model trained on it should visibly learn: the text is English-like but drawn
from a tiny grammar, so a small GPT first picks up the spelling of a few dozen words,
then which word class follows which, then the long-range rules:

- subject-verb agreement: "the red cat sees ..." but "the red cats see ...";
- arithmetic facts: "three plus four is seven." (the answer is fixed by the question);
- counting runs: "five six seven eight." (each word fixed by the one before);
- a paragraph's topic word repeats in its closing sentence ("that was all about the fox.").

Everything comes from random.Random(seed): the same seed gives the same documents on
every machine and Python version (random.Random's integer methods are stable).
"""
from __future__ import annotations

import random
from typing import Iterator

ADJECTIVES = ("red", "small", "old", "quiet", "bright", "green", "heavy", "quick", "lazy", "happy")
# (singular, plural)
NOUNS = (("cat", "cats"), ("dog", "dogs"), ("fox", "foxes"), ("bird", "birds"), ("child", "children"),
         ("teacher", "teachers"), ("river", "rivers"), ("house", "houses"), ("tree", "trees"),
         ("robot", "robots"))
# (third person singular, plural)
VERBS = (("sees", "see"), ("likes", "like"), ("follows", "follow"), ("finds", "find"),
         ("helps", "help"), ("watches", "watch"), ("carries", "carry"), ("hears", "hear"))
PLACES = ("in the garden", "near the river", "on the hill", "under the bridge", "at school", "in the forest")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
           "nineteen", "twenty")


def _noun_phrase(rng: random.Random, plural: bool, noun: tuple[str, str] | None = None) -> str:
    noun = noun or rng.choice(NOUNS)
    words = ["the"]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(noun[1] if plural else noun[0])
    return " ".join(words)


def _clause(rng: random.Random, topic: tuple[str, str]) -> str:
    plural = rng.random() < 0.4
    subject = _noun_phrase(rng, plural, topic if rng.random() < 0.5 else None)
    verb = rng.choice(VERBS)[1 if plural else 0]
    obj = _noun_phrase(rng, rng.random() < 0.4)
    tail = f" {rng.choice(PLACES)}" if rng.random() < 0.3 else ""
    return f"{subject} {verb} {obj}{tail}"


def _sentence(rng: random.Random, topic: tuple[str, str]) -> str:
    kind = rng.random()
    if kind < 0.6:
        text = _clause(rng, topic)
        if rng.random() < 0.25:
            text += f" and {_clause(rng, topic)}"
        return text[0].upper() + text[1:] + "."
    if kind < 0.8:
        a, b = rng.randrange(11), rng.randrange(11)
        return f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}."
    start = rng.randrange(len(NUMBERS) - 4)
    length = rng.randrange(3, min(8, len(NUMBERS) - start) + 1)
    return " ".join(NUMBERS[start:start + length]).capitalize() + "."


def document(rng: random.Random) -> str:
    """One document: a few paragraphs, each about one topic noun."""
    paragraphs = []
    for _ in range(rng.randrange(1, 4)):
        topic = rng.choice(NOUNS)
        sentences = [_sentence(rng, topic) for _ in range(rng.randrange(3, 9))]
        sentences.append(f"That was all about the {topic[0]}.")
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def documents(seed: int = 0) -> Iterator[str]:
    """An endless, deterministic stream of documents."""
    rng = random.Random(seed)
    while True:
        yield document(rng)
