"""spaCy-style tokens: expected lists written by hand from spaCy's English tokenizer rules (and
checked against spaCy 3.8's `spacy.blank("en")`), plus the documented deviations."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.algorithms.ngrams import ngram_table, whole_keys
from workbench.algorithms.spacy_like import spacy_like_tokens

CASES = [
    # contractions: n't and 's come off; can't / won't keep spaCy's odd stems
    ("Don't you think it's late? I can't.",
     ["Do", "n't", "you", "think", "it", "'s", "late", "?", "I", "ca", "n't", "."]),
    ("They'll we've I'm she'd you're isn't won't",
     ["They", "'ll", "we", "'ve", "I", "'m", "she", "'d", "you", "'re", "is", "n't", "wo",
      "n't"]),
    ("Don’t ain't shan't", ["Do", "n’t", "ai", "n't", "sha", "n't"]),
    ("dont im youre whats cannot gonna gotta",
     ["do", "nt", "i", "m", "you", "re", "what", "s", "can", "not", "gon", "na", "got", "ta"]),
    ("were well its wanna lets DON'T refin'd",
     ["were", "well", "its", "wanna", "lets", "DON'T", "refin'd"]),
    # possessives and quotes
    ("Tolkien's book, the students' desks", ["Tolkien", "'s", "book", ",", "the", "students",
                                            "'", "desks"]),
    ('"Hello," she said... \'fine\'', ['"', "Hello", ",", '"', "she", "said", "...", "'", "fine",
                                      "'"]),
    ("“Hi” (ok)", ["“", "Hi", "”", "(", "ok", ")"]),
    # the final dot: split after lowercase, digits, two capitals; kept on abbreviations,
    # dotted capitals, single letters
    ("Mr. Smith met Dr. Who in the U.S. (e.g. by car) at 3.",
     ["Mr.", "Smith", "met", "Dr.", "Who", "in", "the", "U.S.", "(", "e.g.", "by", "car", ")",
      "at", "3", "."]),
    ("NASA. J. R. R. Tolkien, Ph.D. etc. mr. p.a.",
     ["NASA", ".", "J.", "R.", "R.", "Tolkien", ",", "Ph.D.", "etc", ".", "mr", ".", "p.a", "."]),
    ("x$. s. 3.14.", ["x$.", "s.", "3.14", "."]),
    # infixes: hyphens between letters, operators between digits, ellipses, a.B
    ("a well-known 3-year-old; 10-20 and 2+2 or 2*3",
     ["a", "well", "-", "known", "3", "-", "year", "-", "old", ";", "10", "-", "20", "and",
      "2", "+", "2", "or", "2", "*", "3"]),
    ("wait...what end.Next a--b km/h x=1 a<b 3/4",
     ["wait", "...", "what", "end", ".", "Next", "a", "--", "b", "km", "/", "h", "x=1", "a",
      "<", "b", "3/4"]),
    # numbers with units, percent, currency, signs
    ("It costs $5.00 for 5km, 50% off; -5 +5 5+ 10am 8:45am",
     ["It", "costs", "$", "5.00", "for", "5", "km", ",", "50", "%", "off", ";", "-5", "+5", "5",
      "+", "10", "am", "8:45am"]),
    ("98.6°F 1,000 C++", ["98.6", "°", "F", "1,000", "C++"]),
    # kept whole: URLs, e-mail, emoticons, and/or
    ("See https://example.com/a-b?c=d, or mail me@x.org. :) and/or f(x):",
     ["See", "https://example.com/a-b?c=d", ",", "or", "mail", "me@x.org", ".", ":)", "and/or",
      "f(x", "):"]),
    ("!!! ?! -- ''", ["!", "!", "!", "?", "!", "--", "''"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:24] for c in CASES])
def test_tokens_follow_spacy_english_rules(text: str, expected: list[str]):
    assert spacy_like_tokens(pl.Series([text]), lowercase=False).to_list() == [expected]


def test_deviations_whitespace_is_never_a_token_and_nulls_are_empty():
    # spaCy keeps extra spaces and newlines as tokens (" ", "\n\n"); here they vanish
    texts = pl.Series(["a  b\n\nc\td", "", None, "   "])
    assert spacy_like_tokens(texts).to_list() == [["a", "b", "c", "d"], [], [], []]


def test_lowercased_by_default_and_one_list_per_text_in_order():
    texts = pl.Series([f"Item {i}: Isn't it?" for i in range(300)])
    out = spacy_like_tokens(texts).to_list()
    assert len(out) == 300
    assert out[0] == ["item", "0", ":", "is", "n't", "it", "?"]
    assert out[299] == ["item", "299", ":", "is", "n't", "it", "?"]


def test_ngram_tables_accept_the_spacy_like_unit():
    texts = pl.Series(["Don't stop.", "do n't stop ."])
    table, counts = ngram_table(texts, 2, "spacy_like")
    assert counts.tolist() == [4, 4]  # do n't stop .
    keys = table.group_by("row").agg(pl.col("key").sort()).sort("row")["key"].to_list()
    assert keys[0] == keys[1]
    assert whole_keys(texts, "spacy_like")[0] == whole_keys(texts, "spacy_like")[1]
    assert whole_keys(texts, "word")[0] != whole_keys(texts, "word")[1]  # don t vs do n t
