"""Generated text for the corpus (CC0, written by seeded generators in this file): simple
stories, synthetic recall episodes (facts stated early, filler, then a query whose answer
must be copied from the context) and copy drills (a list, then the same list again)."""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Alice", "Bob", "Mia", "Tom", "Ravi", "Lena", "Omar", "Sara", "Ben", "Nora", "Yuki", "Ivan",
         "Ella", "Sam", "Lucy", "Max", "Anna", "Leo", "Zoe", "Jack", "Emma", "Noah", "Ada", "Hugo"]
PLACES = ["the park", "the market", "the library", "the river", "the station", "the school", "the garden",
          "the beach", "the forest", "the old house", "the harbour", "the bakery", "the hill", "the farm"]
CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid", "Dublin", "Quito", "Seoul",
          "Nairobi", "Lisbon", "Vienna", "Prague", "Delhi", "Sydney", "Boston", "Toronto", "Rome", "Athens"]
THINGS = ["ball", "book", "kite", "lamp", "cup", "hat", "box", "key", "map", "coin", "bag", "boat",
          "clock", "letter", "apple", "drum", "bike", "coat", "shell", "stone"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "grey"]
ADJS = ["happy", "tired", "quiet", "brave", "curious", "kind", "busy", "calm", "proud", "sleepy"]
WEATHER = ["The sun was warm.", "It began to rain.", "The wind was cold.", "The sky was clear and blue.",
           "Snow fell on the roofs.", "The air smelled of bread."]
ANIMALS = ["dog", "cat", "bird", "horse", "fox", "rabbit", "duck", "goat", "owl", "frog"]


def story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place, place2 = rng.sample(PLACES, 2)
    thing = rng.choice(THINGS)
    col = rng.choice(COLOURS)
    adj = rng.choice(ADJS)
    animal = rng.choice(ANIMALS)
    parts = [
        f"{a} had a {col} {thing}.",
        rng.choice(WEATHER),
        f"One day {a} went to {place} with {b}.",
        f"They saw a {adj} {animal} near the gate.",
        f"\"Look at the {animal},\" said {b}.",
        f"{a} smiled and showed the {thing} to {b}.",
        f"The {animal} ran away, and {a} and {b} laughed.",
        f"Later they walked to {place2}.",
        f"{b} was {adj}, so they sat down and ate an apple.",
        f"When the day was over, {a} went home with the {col} {thing}.",
        f"{a} told {b}, \"Thank you for a good day.\"",
    ]
    keep = [parts[0], parts[2]] + [p for p in parts[1:] if p != parts[2] and rng.random() < 0.6]
    order = keep[:2] + keep[2:]
    return " ".join(order)


def filler_sentence(rng: random.Random) -> str:
    n = rng.choice(NAMES)
    return rng.choice([
        f"{n} walked to {rng.choice(PLACES)} in the morning.",
        f"The {rng.choice(COLOURS)} {rng.choice(THINGS)} was on the table.",
        rng.choice(WEATHER),
        f"{n} was {rng.choice(ADJS)} after a long day.",
        f"A {rng.choice(ANIMALS)} slept under the tree.",
        f"{n} read a {rng.choice(['short', 'long', 'old', 'new'])} book about {rng.choice(CITIES)}.",
        f"Nobody knew where the {rng.choice(THINGS)} had gone.",
        f"{n} and {rng.choice(NAMES)} talked about the weather.",
    ])


# ---------------------------------------------------------------------------------------
# recall episodes


def _code(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return rng.choice(letters) + rng.choice(letters) + "-" + str(rng.randint(10, 99))


FACT_KINDS = {
    # kind: (statement template, question template, answer generator)
    "number": ("The code for the {col} door is {ans}.", "What is the code for the {col} door?",
               lambda r: str(r.randint(1000, 9999))),
    "name": ("The guard at {place} is called {ans}.", "Who is the guard at {place}?",
             lambda r: r.choice(NAMES)),
    "city": ("{n} was born in {ans}.", "Where was {n} born?", lambda r: r.choice(CITIES)),
    "tag": ("The {thing} has the tag {ans}.", "What tag does the {thing} have?", _code),
    "count": ("{n} has {ans} {animal}s.", "How many {animal}s does {n} have?",
              lambda r: str(r.randint(2, 99))),
}


@dataclass
class Episode:
    facts: list[str]
    filler: str
    question: str
    answer: str

    @property
    def context(self) -> str:
        return "Facts: " + " ".join(self.facts) + "\n" + self.filler + "\n"

    @property
    def prompt(self) -> str:
        return self.context + "Question: " + self.question + "\nAnswer:"

    @property
    def text(self) -> str:
        return self.prompt + " " + self.answer + "."

    def to_dict(self) -> dict:
        return {"facts": self.facts, "filler": self.filler, "question": self.question, "answer": self.answer,
                "prompt": self.prompt, "text": self.text}


def recall_episode(rng: random.Random, n_facts: int | None = None, n_filler: int | None = None) -> Episode:
    """Facts stated early, filler, a question whose answer must be copied from the facts."""
    n_facts = n_facts or rng.randint(1, 4)
    kinds = rng.sample(sorted(FACT_KINDS), n_facts)
    facts, qas = [], []
    used_slots: set = set()
    for k in kinds:
        stmt, q, gen = FACT_KINDS[k]
        slots = dict(col=rng.choice(COLOURS), place=rng.choice(PLACES), n=rng.choice(NAMES),
                     thing=rng.choice(THINGS), animal=rng.choice(ANIMALS))
        ans = gen(rng)
        facts.append(stmt.format(ans=ans, **slots))
        qas.append((q.format(**slots), ans))
        used_slots.add(k)
    if n_filler is None:
        n_filler = rng.randint(2, 12)
    filler = " ".join(filler_sentence(rng) for _ in range(n_filler))
    q, a = rng.choice(qas)
    return Episode(facts, filler, q, a)


def copy_drill(rng: random.Random) -> str:
    """A list of random words, then the same list again: the second half is predictable only
    by looking back and copying (it teaches induction heads, the mechanism recall needs)."""
    pools = [NAMES, CITIES, THINGS, COLOURS, ANIMALS]
    words = []
    for _ in range(rng.randint(4, 24)):
        r = rng.random()
        if r < 0.25:
            words.append(str(rng.randint(0, 9999)))
        elif r < 0.35:
            words.append(_code(rng))
        else:
            words.append(rng.choice(rng.choice(pools)))
    lst = " ".join(words)
    head = rng.choice(["List", "Words", "Items", "Notes"])
    return f"{head}: {lst}.\nRepeat: {lst}."
