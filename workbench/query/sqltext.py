"""SQL text outside its literals: rewrite `name@N` dataset refs, check typed-in fragments.

These helpers only shape what a person typed; safety does not rest on them (the sandbox's
DuckDB guards and statement checks do). They skip string literals, quoted identifiers,
dollar-quoted strings and comments, so `'hh@1'` in a string is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from workbench.errors import QueryError

_LITERAL = re.compile(
    r"""(?<![\w])[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)   # E'...' with backslash escapes
      | '(?:[^']|'')*(?:'|\Z)                    # '...'
      | "(?:[^"]|"")*(?:"|\Z)                    # "quoted identifier"
      | \$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z)  # $$...$$ or $tag$...$tag$
      | --[^\n]*                                 # -- comment
      | /\*.*?(?:\*/|\Z)                         # /* comment */
    """,
    re.S | re.X,
)


def segments(sql: str) -> Iterator[tuple[str, bool]]:
    """(text, is_code) pieces of `sql` in order; literals and comments are not code."""
    position = 0
    for match in _LITERAL.finditer(sql):
        if match.start() > position:
            yield sql[position:match.start()], True
        yield match.group(0), False
        position = match.end()
    if position < len(sql):
        yield sql[position:], True


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rewrite_refs(sql: str, versions: dict[str, set[int]]) -> str:
    """Quote each `name@N` of a known dataset outside literals: `hh@2` -> `"hh@2"`.

    `versions` maps dataset names to their version numbers; a missing version is an error
    that lists the ones there are."""
    if not versions:
        return sql
    names = "|".join(re.escape(n) for n in sorted(versions, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.\-\"@$])({names})@(\d+)(?![\w@.])")

    def replace(match: re.Match[str]) -> str:
        name, number = match.group(1), int(match.group(2))
        if number not in versions[name]:
            known = ", ".join(str(v) for v in sorted(versions[name]))
            raise QueryError(f"no version {name}@{number} (versions of {name}: {known})")
        return quote_ident(f"{name}@{number}")

    return "".join(pattern.sub(replace, text) if code else text for text, code in segments(sql))


def check_fragment(text: str, what: str) -> str:
    """A typed-in clause (WHERE, ORDER BY) must stay one clause: no `;`, balanced brackets."""
    depth = 0
    for piece, code in segments(text):
        if not code:
            continue
        for char in piece:
            if char == ";":
                raise QueryError(
                    f"SQL refused: the {what} contains ';' (one clause, no statements)")
            depth += char == "("
            depth -= char == ")"
            if depth < 0:
                raise QueryError(f"SQL refused: the {what} closes a bracket it did not open")
    if depth:
        raise QueryError(f"SQL refused: the {what} leaves a bracket open")
    if not list(segments(text + "\n"))[-1][1]:
        raise QueryError(f"SQL refused: the {what} leaves a quote or comment open")
    return text


def first_keyword(sql: str) -> str:
    """The statement's first word (e.g. INSTALL, which DuckDB types as LOAD), for messages."""
    match = re.search(r"[A-Za-z_]+", " ".join(text for text, code in segments(sql) if code))
    return match.group(0).upper() if match else "?"
