"""spaCy-style English word tokens without spaCy, with polars string ops (docs/methods.md §7.5).

Tulu 3's decontamination counts benchmark tokens with spaCy's English tokenizer. This follows
its rules for the common cases, written from its documented algorithm: split on whitespace;
keep a whole chunk that is a special case (a contraction piece, an emoticon, `and/or`); peel
leading punctuation (brackets, quotes, currency, symbols, `¿¡#*&…`) and trailing punctuation
(also `'s` and, after a digit, a unit, `%`, `+` or a currency sign); a trailing `.` splits off
after a lowercase letter, a digit, punctuation or two capitals, except on a listed abbreviation
(`Mr.`, `e.g.`) or a single lowercase letter, so `J.`, `U.S.` and `x$.` keep theirs; split
infixes (a hyphen between letters, `+-*^` between digits, `,` between letters, `/:<>=` before a
letter, `...`, symbols, `.` between a lowercase and an uppercase letter) except in URLs,
e-mail addresses and dotted abbreviations; split `n't` off any word and `'ll 're 've 'd 'm`
off pronouns and modals (`don't` → `do n't`, `can't` → `ca n't`, `refin'd` stays), the same
written without the apostrophe (`dont` → `do nt`, `im` → `i m`), and `cannot`, `gonna`, `gotta`.
Like spaCy's special cases these are case-sensitive: `DON'T` and `mr.` are not split as
`Don't` and `Mr.` are.

Deviations (the tests pin them): whitespace never becomes a token (spaCy keeps runs of extra
spaces and newlines); spaCy's special-case tables are longer than the lists here (emoticons
such as `(-8` or `=(`, rarer abbreviations); affix rules inside LaTeX (`C$.`, `|x|.`) differ
now and then. Measured agreement with spaCy 3.8 is in docs/methods.md §7.5."""

from __future__ import annotations

import polars as pl

SEP = "\x1f"  # no text tokenized here contains it once whitespace is collapsed
_QUOTES = "\"'`´‘’‚„“”«»"
_PUNCT = ",:;!?¿¡_#*&…·()[]{}<>" + _QUOTES
_CURRENCY = "$£€¥₹₽"
_SYMBOL = r"\p{So}"  # emoji, °, ©: split off wherever they stand
_LOWER = r"\p{Ll}"


def _class(chars: str, extra: str = "") -> str:
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in chars) + extra + "]"


_CHUNK = (rf"^(?P<pre>(?:\.\.+|{_class(_PUNCT + _CURRENCY + '§%=—–+', _SYMBOL)})*)(?P<core>.*?)"
          rf"(?P<suf>(?:['’][sS]|\.\.+|…|{_class(_PUNCT.replace('…', '') + '—–.', _SYMBOL)})*)$")
_PIECE = r"\.\.+|…|['’][sS]|''|\):|:\)|:\(|."  # one token of a prefix or suffix run
# A final `.` splits after these (or after two capitals); it stays after anything else.
_DOT_SPLITS_AFTER = rf"(?:{_class('0123456789%²+-' + _PUNCT, _LOWER)}|\p{{Lu}}\p{{Lu}})$"
_UNITS = ("km|kg|mg|ml|cm|mm|nm|µm|ha|yd|in|ft|lb|oz|mph|kmh|km/h|m/s|hPa|Pa|mbar|mb|MB|"
          "kb|KB|gb|GB|tb|TB|g|m|l|t|K|M|G|T")
_AFTER_NUMBER = rf"^(.*[0-9])({_UNITS}|%|\+|{_class(_CURRENCY)})$|^(1[0-2]|[1-9])(am|pm|a\.m\.|p\.m\.)$"
_INFIXES = [  # (pattern, replacement): separators go around group 2
    (r"(\.\.+|…)", f"{SEP}$1{SEP}"),
    (rf"({_SYMBOL})", f"{SEP}$1{SEP}"),
    (r"([0-9])([+\-*^])([0-9-])", f"$1{SEP}$2{SEP}$3"),
    (r"(\p{Ll}|[\"'”’])(\.)(\p{Lu}|[\"'“‘])", f"$1{SEP}$2{SEP}$3"),
    (r"(\p{L}),(\p{L})", f"$1{SEP},{SEP}$2"),
    (r"([\p{L}0-9])(---|--|——|-|–|—|~)(\p{L})", f"$1{SEP}$2{SEP}$3"),
    (r"([\p{L}0-9])([:<>=/])(\p{L})", f"$1{SEP}$2{SEP}$3"),
]
_URL = r"^(?:https?://|ftp://|www\.)|://|^[\w.+-]+@[\w-]+\.[\w.-]+$"
# Whole chunks kept as one token (case-sensitive, as spaCy's special cases are).
_WHOLE = ["'s", "’s", "'S", "'re", "’re", "'ve", "’ve", "'ll", "’ll", "'d", "’d", "'m", "’m",
          "n't", "n’t", "'em", "'cause", "''", "and/or", ":)", ":(", ":-)", ":-(", ";)", ";-)",
          ":D", ":P", ":p", ":/", "):", "(:", "8)", "<3", "^_^", "o.o"]
# Abbreviations that keep their final dot (case-sensitive); dotted ones (U.S., Ph.D.) and single
# letters (J., s.) keep it by rule.
ABBREVIATIONS = [
    "Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "Jr.", "Messrs.", "Rev.", "Gen.", "Gov.",
    "Sen.", "Rep.", "Adm.", "Inc.", "Ltd.", "Co.", "co.", "Corp.", "Bros.", "Mt.", "vs.",
    "Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Sept.", "Oct.", "Nov.",
    "Dec.", "e.g.", "E.g.", "i.e.", "I.e.", "a.m.", "p.m.", "v.s.",
]
_PRONOUNS = "i|you|he|she|it|we|they|who|what|where|when|why|how|that|there|here|this"
# `n't` after any word, in lowercase (DON'T stays whole, as in spaCy); 'd 'll 're 've 'm only
# after these words (refin'd stays whole)
_CONTRACTIONS = [r"^(\p{L}+?)(n['’]t)$",
                 r"^((?i:" + _PRONOUNS + r"|could|should|would|might|must))(['’](?:ll|re|ve|d|m))$"]
_NO_APOSTROPHE = {  # spaCy also splits these written without the apostrophe
    "nt": "ai|are|ca|could|did|do|does|had|has|have|is|might|must|need|should|was|were|wo|would",
    "ve": "could|i|might|should|they|we|would|you", "re": "they|what|you",
    "s": "he|how|she|that|there|what|where|who|why", "d": "he|i|they|we|you",
    "ll": "it|that|they|you", "m": "i",
}
_SPLIT_WORDS = ([(rf"^(?i)({bases})({ending})$", f"$1{SEP}$2")
                 for ending, bases in _NO_APOSTROPHE.items()]
                + [(r"^(?i)(can)(not)$", f"$1{SEP}$2"), (r"^(?i)(gon)(na)$", f"$1{SEP}$2"),
                   (r"^(?i)(got)(ta)$", f"$1{SEP}$2"), (r"^(?i)(y['’])(all)$", f"$1{SEP}$2")])


def spacy_like_tokens(texts: pl.Series, lowercase: bool = True) -> pl.Series:
    """A list of spaCy-style tokens per text (lowercased unless asked not to). Each rule is one
    column over all whitespace-separated chunks of all texts (steps are materialised one by
    one: polars would copy a nested expression into every place that uses it)."""
    chunks = pl.DataFrame({"chunk": texts.cast(pl.String).fill_null("")
                           .str.replace_all(SEP, " ", literal=True)
                           .str.replace_all(r"\s+", " ").str.strip_chars().str.split(" ")})
    c = pl.col
    frame = (chunks.with_row_index("text").explode("chunk")
             .with_columns(c("chunk").str.extract_groups(_CHUNK).alias("parts")).unnest("parts")
             # `+5` keeps its sign: `+` is a prefix only when no digit follows
             .with_columns((c("pre").str.ends_with("+") & c("core").str.contains(r"^[0-9]"))
                           .alias("plus"))
             .with_columns(pl.when("plus").then(c("pre").str.strip_suffix("+")).otherwise("pre")
                           .alias("pre"),
                           pl.when("plus").then("+" + c("core")).otherwise("core").alias("core"))
             .with_columns((c("suf").str.starts_with(".") & ~c("suf").str.starts_with(".."))
                           .alias("single_dot"),
                           (c("core") + ".").is_in(ABBREVIATIONS).alias("abbreviation"),
                           c("core").str.contains(r"^\p{Lu}?\p{L}(?:\.\p{L})+$").alias("dotted"))
             # a single lowercase letter keeps it too (spaCy lists a. to z.)
             .with_columns((c("single_dot") & (c("abbreviation") | c("core").str.contains(r"^\p{Ll}$")
                                              | ~c("core").str.contains(_DOT_SPLITS_AFTER)))
                           .alias("keep_dot"))
             .with_columns(pl.when("keep_dot").then(c("core") + ".").otherwise("core").alias("core"),
                           pl.when("keep_dot").then(c("suf").str.slice(1)).otherwise("suf")
                           .alias("suf"))
             .with_columns(c("core").str.replace(_AFTER_NUMBER, f"$1$3{SEP}$2$4").alias("inner")))
    for pattern, replacement in _INFIXES * 2:  # twice: a match eats the next match's left side
        frame = frame.with_columns(c("inner").str.replace_all(pattern, replacement))
    words_only = c("inner").str.contains(r"^\p{Lu}?[\p{Ll}'’]+$")  # lowercase or Titlecase
    for pattern, replacement in _SPLIT_WORDS:
        frame = frame.with_columns(pl.when(words_only).then(c("inner").str.replace(
            pattern, replacement)).otherwise("inner").alias("inner"))
    no_infix = c("core").str.contains(_URL) | c("abbreviation") | (c("keep_dot") & c("dotted"))
    pieces = pl.concat_str([
        c("pre").str.replace_all(_PIECE, f"$0{SEP}"),
        pl.when(no_infix).then("core").otherwise(
            c("inner").str.split(SEP)
            .list.eval(pl.element().str.replace(_CONTRACTIONS[0], f"$1{SEP}$2")
                       .str.replace(_CONTRACTIONS[1], f"$1{SEP}$2")).list.join(SEP)),
        pl.lit(SEP), c("suf").str.replace_all(_PIECE, f"$0{SEP}")])
    tokens = (frame.select("text", pl.when(c("chunk").is_in(_WHOLE)).then("chunk")
                           .otherwise(pieces).alias("piece"))
              .group_by("text", maintain_order=True).agg(c("piece").str.join(SEP))["piece"])
    if lowercase:
        tokens = tokens.str.to_lowercase()
    return tokens.str.split(SEP).list.eval(pl.element().filter(pl.element() != ""))
