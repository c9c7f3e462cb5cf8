"""Scoring a recall episode's answer (the retention benchmark scores the same way)."""

import random

from heedful.train.synthetic import Episode, recall_episode
from heedful.train.evaluate import answer_correct


def test_scoring_on_a_hand_made_episode():
    ep = Episode(facts=["The code for the red door is 4821.", "Mia was born in Oslo."],
                 filler="Tom walked to the park in the morning.", question="What is the code for the red door?",
                 answer="4821")
    assert ep.prompt.endswith("Question: What is the code for the red door?\nAnswer:")
    assert answer_correct(" 4821.", ep.answer)
    assert answer_correct(" 4821.\nFacts: The guard", ep.answer)
    assert answer_correct(" 4821", ep.answer)
    assert answer_correct(" 4821.<|endoftext|>Facts: The guard", ep.answer)
    assert answer_correct(" 4821.Facts: The guard", ep.answer)
    assert not answer_correct(" 4822.", ep.answer)
    assert not answer_correct(" 48211.", ep.answer)
    assert not answer_correct(" Oslo.", ep.answer)
    assert not answer_correct("", ep.answer)


def test_episode_answers_score_as_correct():
    rng = random.Random(0)
    for _ in range(200):
        ep = recall_episode(rng)
        assert answer_correct(ep.text[len(ep.prompt):], ep.answer)


def test_retention_episode_runs_every_engine_policy(tiny_qwen35):
    """Mechanics only (a random tiny model answers nothing right): each policy runs through the
    session engine within the budget, pins included."""
    from heedful.train.retention import run_episode

    ep = recall_episode(random.Random(1), n_facts=2, n_filler=6).to_dict()
    for policy in ["full", "window", "sinks+window", "pins"]:
        ok, out = run_episode(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, policy, budget=64, gated=True,
                              max_new=3)
        assert isinstance(ok, bool) and isinstance(out, str)
