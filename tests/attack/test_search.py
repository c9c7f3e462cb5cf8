"""Search: any text is a harmless query (FTS5 syntax and SQL injection strings included),
and a hit is the text as typed, never a whole chunk that merely shares its words."""

from __future__ import annotations

import json

import pytest

from tests.attack.harness import Case

NOTHING = ["vault:code", "-vault", "va*", "((vault", "vault OR lake", "NEAR(vault lake)", '"', '"vault',
           "vault AND", "*", "^vault", 'vault"code', "'; DROP TABLE sessions; --", "\" OR 1=1 --",
           "vault) OR (lake", "{vault}", "vault -code", "col:vault", "vault\x00code", "🙂vault"]
FOUND = {"vault": "vault", "VAULT": "vault", "4821": "4821", "821": "821", "ault co": "ault co",
         "vault co": "vault co", "lake": "lake", "calm and": "calm and", "code is 4821": "code is 4821"}


def _hits_are_the_text(query):
    def check(tmp, paths, out, err):
        hits = [json.loads(line) for line in out.splitlines()]
        want = FOUND.get(query)
        if want is None:
            assert hits == [], hits
            return
        assert hits, f"{query!r} found nothing"
        for h in hits:
            assert want in h["text"].casefold(), h
            assert h["range"][1] - h["range"][0] <= len(want), h  # narrowed to its tokens

    return check


CASES = [Case(f"search-{k}-{q[:12]}", ["sessions", "--db", "{db}", "--search", q, "--json"], code=0,
              check=_hits_are_the_text(q)) for k, q in enumerate(NOTHING + list(FOUND))]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_search_is_harmless_and_exact(attack, case):
    attack(case)
