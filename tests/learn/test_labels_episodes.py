"""What the person kept (labels from the event log), the generated recorded sessions and
the --episodes-file format."""

from __future__ import annotations

import json
import random

import pytest

from heedful.app.script import parse_script
from heedful.errors import HeedfulError
from heedful.learn.episodes import ARRANGEMENTS, arranged_episode, episode_script, read_episodes_file, write_episodes
from heedful.learn.labels import token_labels
from heedful.learn.picker import pick_spans, word_starts, words


def test_labels_follow_pins_drops_unpins_and_rewinds():
    events = [
        {"op": "config"},
        {"op": "prompt", "text": "x", "pins": [[0, 2]]},
        {"op": "pin", "range": [4, 6]},
        {"op": "unpin", "range": [4, 6]},  # unpinned later: still kept
        {"op": "pin", "range": [8, 10]},
        {"op": "drop", "range": [9, 10]},  # thrown away
        {"op": "drop", "range": [12, 13]},
        {"op": "recall", "range": [12, 13]},  # dropped, then brought back: kept
        {"op": "pin", "range": [16, 18]},
        {"op": "rewind", "index": 16},  # the tokens past the cut are new ones
        {"op": "recall", "range": [2, 3], "append": True, "at": 17},
    ]
    sources = ["prompt"] * 19 + ["recalled"]
    labels, mask, marks = token_labels(events, 20, sources)
    assert [t for t in range(20) if labels[t]] == [0, 1, 2, 4, 5, 8, 12]
    assert mask[19] == 0 and sum(mask) == 19
    assert marks == 6
    assert token_labels([{"op": "prompt", "text": "x"}, {"op": "drop", "range": [0, 1]}], 3)[2] == 0


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_arrangements_place_the_facts(arrangement):
    rng = random.Random(3)
    for _ in range(20):
        ep = arranged_episode(rng, arrangement, n_sentences=12)
        assert all(f in ep["text"] for f in ep["facts"])
        assert [ep["facts"][i] in ep["sentences"][k] for i, k in enumerate(ep["fact_at"])] == [True] * len(ep["facts"])
        if arrangement == "first":
            assert ep["fact_at"][0] == 0 and ep["sentences"][0].startswith("Facts: ")
        elif arrangement == "after":
            assert ep["fact_at"][0] >= 2
    with pytest.raises(HeedfulError, match="arrangement"):
        arranged_episode(rng, "sideways")


def test_written_scripts_are_valid_and_pin_each_fact_after_it_streams(tmp_path):
    res = write_episodes(tmp_path / "eps", 6, ["first", "after", "scattered"], seed=1, n_sentences=8)
    scripts = sorted((tmp_path / "eps" / "scripts").glob("*.jsonl"))
    eps = read_episodes_file(res["episodes_file"])
    assert len(scripts) == len(eps) == 6
    assert [e["arrangement"] for e in eps] == ["first", "after", "scattered"] * 2
    for path, ep in zip(scripts, eps):
        steps = parse_script(path)
        assert steps[0].op == "config" and steps[-1].op == "generate"
        streamed = ""
        for st in steps:
            if st.op == "prompt":
                streamed += st.args["text"]
            if st.op == "pin" and st.args["text"] in ep["facts"]:
                assert st.args["text"] in streamed  # pinned once it has streamed in
        assert all(any(st.op == "pin" and st.args.get("text") == f for st in steps) for f in ep["facts"])


def test_episode_script_mistakes_are_dropped():
    rng = random.Random(0)
    seen = 0
    for _ in range(60):
        ep = arranged_episode(rng, "first", 14)
        lines = episode_script(ep, rng)
        pins = [x["text"] for x in lines if x["op"] == "pin" and x["text"] not in ep["facts"]]
        drops = [x["text"] for x in lines if x["op"] == "drop"]
        assert pins == drops
        seen += len(drops)
    assert seen > 0


@pytest.mark.parametrize("line,says", [
    ("{", ":1: not JSON"),
    ("[1]", ":1: expected a JSON object"),
    ('{"text": "a b", "facts": ["a"], "question": "q"}', "field 'answer'"),
    ('{"text": "a b", "facts": "a", "question": "q", "answer": "x"}', "field 'facts'"),
    ('{"text": "a b", "facts": ["c"], "question": "q", "answer": "x"}', "not in the text"),
])
def test_bad_episode_files_are_one_line(tmp_path, line, says):
    p = tmp_path / "e.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(HeedfulError, match="e.jsonl") as e:
        read_episodes_file(p)
    assert says in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HeedfulError, match="no such file"):
        read_episodes_file(tmp_path / "none.jsonl")


def test_words_and_spans():
    texts = ["Facts", ":", " The", " code", " is", " 4", "8", "2", "1", ".", "\n", "Ella", " ran", "."]
    assert word_starts(texts) == [True, False, True, True, True, True, False, False, False, False, True, True,
                                  True, False]
    assert words(texts)[3:6] == [(4, 5), (5, 10), (10, 11)]
    probs = [0, 0, 0.9, 0.1, 0.2, 0.1, 0.95, 0, 0, 0, 0, 0, 0.8, 0]
    spans = pick_spans(probs, texts, 0.5, offset=100)
    assert [(s.start, s.end) for s in spans] == [(102, 103), (105, 110), (112, 114)]
    assert json.dumps([s.score for s in spans]) == json.dumps([0.9, 0.95, 0.8])
