"""Answer extraction and equivalence: small pure functions shared by every stage.

Public API::

    extract(text, answer_type, *, choices=None) -> str | None
    extract_with_rule(text, answer_type, *, choices=None) -> (str | None, rule)
    equal(pred, gold, answer_type) -> bool
    correct(text, gold, answer_type, *, choices=None) -> (pred, bool)
    normalize(value, answer_type, *, choices=None) -> str | None   # canonical form of a gold/pred

``answer_type`` is one of ``number``, ``choice``, ``bool``, ``math``. ``choices`` (choice type
only) are the option texts in A..E order; they let the extractor accept the option text itself
("The answer is den") when it names exactly one option.

Canonical predictions (what ``extract`` returns):

* ``number``: a plain number string: ``"145"`` (for ``145.0``, ``$145``, ``145 apples``),
  ``"1575000"`` (for ``1,575,000``), ``"-11"``, ``"0.0625"``, ``"1/16"``, ``"25%"`` (percent kept
  so that :func:`equal` can accept both ``25`` and ``0.25`` as gold);
* ``choice``: one capital letter ``A``..``E``;
* ``bool``: ``"True"`` or ``"False"`` (``yes``/``no`` map to them);
* ``math``: the LaTeX of the final answer with wrappers removed (``\\boxed{}``, ``$``,
  ``\\text{ units}``, ``\\left``/``\\right``, degrees, ``x =``), e.g. ``"\\frac{\\sqrt{3}}{2}"``.

Extraction rules, tried in this order; the first rule that yields a value wins, and
:func:`extract_with_rule` reports its name (``none`` when nothing was found):

1. ``answer_is`` -- the primary convention: the *last* "the answer is X" in the text (any case,
   with or without spaces, also "the answer is: X", "the correct/final answer is X",
   "the answer should/would/must be X", "Answer: X"). The text after the phrase is read up to the
   end of its sentence; an arithmetic chain "81 - 60 = 21" gives the value after the last "=",
   a parenthesised comment is ignored ("4000 (profit or loss, ...)"). An unreadable answer
   ("the answer is <answer>") is skipped and the previous occurrence is tried.
   ``negated`` -- when the last readable statement refuses to answer ("the answer is not D", "... is
   none of the above", "... is incorrect") the result is ``None`` with rule ``negated``: no
   fallback digs an option out of a rationale that rejected it. A negation that names an answer
   anyway is read ("the answer is not 40, it's 50" -> 50; "not A, B, C, so it must be D" -> D).
2. ``hash`` -- GSM8K style ``#### X`` (last one).
3. ``boxed`` -- the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces).
4. ``bold`` -- the last markdown ``**X**`` whose content reads as an answer of the type.
5. ``whole`` -- the whole (short) text is itself an answer: ``"145"``, ``"(B)"``, ``"True"``.
6. type-specific fallbacks:
   ``number``: ``last_number`` (last number in the text);
   ``choice``: ``option_text`` (the last sentence names exactly one option text), then
   ``final_letter`` (the text ends with "... is C.", "... making the answer A.", "option B"),
   then ``last_letter`` (last letter in an explicit option form: ``(B)``, ``B)``,
   ``option B``, ``B:``);
   ``bool``: ``last_bool`` (last True/False word, else yes/no in the last sentence);
   ``math``: ``last_math`` (last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` span), then
   ``last_number``.

Equivalence (:func:`equal`):

* ``number``: exact rational comparison (with 1e-6 relative tolerance for decimals); a ``%`` on
  either side also accepts the value divided by 100;
* ``choice`` / ``bool``: canonical letters / truth values;
* ``math``: string equality after normalisation, then numeric comparison, then element-wise for
  tuples / intervals / sets (brackets must agree), then sympy
  on a LaTeX->sympy translation (our own: sympy's LaTeX parser needs antlr4 4.11): two
  expressions are equal when their values agree (relative 1e-8, 30 digits) for constants, or at
  four fixed points for expressions with variables; guarded by a size check (nested / large
  powers, big factorials are refused) and a 2 s timeout so that a pathological expression
  cannot hang the caller.

All functions are pure and never raise on garbage text (``None``, non-strings, huge inputs);
an unknown ``answer_type`` is a programming error and raises ``ValueError``.
"""

from __future__ import annotations

import math as _math
import re
import threading
from fractions import Fraction
from functools import lru_cache

__all__ = [
    "ANSWER_TYPES",
    "RULES",
    "extract",
    "extract_with_rule",
    "equal",
    "correct",
    "normalize",
    "MODES",
]

# bumped whenever a change can change what is extracted or judged equal: evaluations record it
VERSION = "2"
ANSWER_TYPES = ("number", "choice", "bool", "math")
RULES = (
    "answer_is",
    "hash",
    "boxed",
    "bold",
    "whole",
    "last_number",
    "option_text",
    "final_letter",
    "last_letter",
    "last_bool",
    "last_math",
    "negated",
    "none",
)

_MAX_TEXT = 100_000  # longer inputs are cut (keeping the end, where answers live)
_FALLBACK_TAIL = 20_000  # fallback rules scan only the end of the text
_LETTERS = "ABCDE"

# ----------------------------------------------------------------------------- helpers


def _as_text(x) -> str:
    if x is None:
        return ""
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    s = x if isinstance(x, str) else str(x)
    if "\u200b" in s or "\ufeff" in s or "\u200c" in s:
        s = s.replace("\u200b", "").replace("\ufeff", "").replace("\u200c", "")
    if len(s) > _MAX_TEXT:
        s = s[-_MAX_TEXT:]
    return s


def _check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; use one of {', '.join(ANSWER_TYPES)}")


_ANSWER_IS = re.compile(
    r"answer\s*(?:is|should\s+be|would\s+be|must\s+be|will\s+be)\b\s*[:=]?|answer\s*:",
    re.IGNORECASE,
)
# answers glued to the phrase ("The answer istrue") are read too, but then "is" has no \b
_ANSWER_IS_GLUED = re.compile(r"answer\s*is(?=[A-Z0-9$\\(<-])|answeris|answer\s*ist\s*:", re.IGNORECASE)

_NEGATED = re.compile(
    r"^\W*(?:(?:likely|probably|possibly|clearly|definitely|also)\s+)?(?:not\b|none\b|no\s+(?:option|choice|answer|correct|valid)|neither\b|incorrect\b|unknown\b|undefined\b|"
    r"unclear\b|cannot\b|can't\b|indeterminate\b|ambiguous\b|n/a\b)",
    re.IGNORECASE,
)
# inside a negated answer, a clause that still names one: "not 40, it's 50", "not A, B, C, so it must be D"
_AFTER_NEGATION = re.compile(
    r"(?:\bit'?s|\bit\s+is|\bmust\s+be|\bshould\s+be|\bwould\s+be|\bclosest\s+(?:match|answer|option|choice)(?:\s+is)?|"
    r"\binstead(?:\s+it\s+is)?)\s*:?\s*(.+)",
    re.IGNORECASE,
)


def _answer_spans(text: str, limit: int = 20) -> list[str]:
    """Texts following the last ``limit`` "the answer is" phrases, last first, each cut at its line
    end, at the next phrase, and at 400 characters."""
    starts = sorted({m.end() for m in _ANSWER_IS.finditer(text)} | {m.end() for m in _ANSWER_IS_GLUED.finditer(text)})
    spans = []
    n = len(starts)
    for i in range(n - 1, max(-1, n - 1 - limit), -1):
        s = starts[i]
        window = text[s : s + 800]
        end = window.find("\n")
        # a line break straight after the phrase: the answer is on the next line
        if end != -1 and not window[:end].strip():
            end = window.find("\n", end + 1)
        span = window if end == -1 else window[:end]
        # do not run into the next "the answer is"
        if i + 1 < n and starts[i + 1] - s < len(span):
            cut = text.rfind("answer", s, starts[i + 1])
            if cut > s:
                span = text[s:cut]
        spans.append(span[:400])
    return spans


def _balanced(text: str, open_pos: int) -> tuple[str, int] | None:
    """Content of the brace group that opens at ``text[open_pos] == '{'`` (nested), and its end."""
    depth = 0
    for i in range(open_pos, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : i], i + 1
    return None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _last_boxed(text: str) -> str | None:
    last = None
    for last in _BOXED.finditer(text):
        pass
    if last is not None:
        g = _balanced(text, last.end() - 1)
        return g[0] if g is not None else text[last.end() :]  # unclosed: take the rest
    m = list(re.finditer(r"\\boxed\s+(\S+)", text[-5000:]))
    return m[-1].group(1) if m else None


# ----------------------------------------------------------------------------- numbers

_DASHES = str.maketrans({"−": "-", "–": "-", "—": "-", "\u2009": " ", "\u00a0": " ", "\u202f": " "})
_NUM = re.compile(
    r"(?<![\w.])"  # not glued to a word or a previous number
    r"(?P<sign>-)?\s?(?P<cur>[$€£¥])?\s?(?P<sign2>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?(?P<exp>[eE][-+]?\d{1,3}(?![\w]))?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?)(?![\d.]\d))?"
    r"(?P<pct>\s?(?:%|\\%|percent\b))?"
)
_NUM_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}


def _num_matches(s: str):
    for m in _NUM.finditer(s):
        if m.group("int") is None and m.group("frac") is None:
            continue
        yield m


def _num_from_match(m: re.Match) -> str | None:
    ip = (m.group("int") or "0").replace(",", "")
    fp = (m.group("frac") or "") + (m.group("exp") or "")
    neg = bool(m.group("sign") or m.group("sign2"))
    try:
        val = Fraction(ip + fp)
        if m.group("den"):
            den = Fraction(m.group("den"))
            if den == 0:
                return None
            val = val / den
            # keep a written fraction as a fraction
            out = f"{ip}{fp}/{m.group('den')}" if not fp and "." not in m.group("den") else _fmt(val)
        else:
            out = _fmt(val)
    except (ValueError, ZeroDivisionError):
        return None
    if neg and out != "0":
        out = "-" + out
    if m.group("pct"):
        out += "%"
    return out


def _fmt(v: Fraction) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    # finite decimal if possible, else a fraction
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        s = f"{float(v):.12f}".rstrip("0").rstrip(".")
        if Fraction(s) == v:
            return s
    return f"{v.numerator}/{v.denominator}"


def _first_number(s: str) -> str | None:
    for m in _num_matches(s):
        r = _num_from_match(m)
        if r is not None:
            return r
    return None


def _last_number(s: str) -> str | None:
    last = None
    for m in _num_matches(s):
        r = _num_from_match(m)
        if r is not None:
            last = r
    return last


_SENT_END = re.compile(r"\.(?!\d)\s|\.$|;|\n|\bbut\b|\bnot\b|\bwhich\b|\bsince\b|\bbecause\b", re.IGNORECASE)


def _number_from_span(span: str) -> str | None:
    s = span.translate(_DASHES)
    b = _last_boxed(s)
    if b is not None:
        s = b
    s = re.sub(r"\\!|\\,|\\;|\\ ", "", s)
    s = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", s)
    s = s.replace("\\%", "%").replace("\\$", "$")
    m = _SENT_END.search(s)
    if m:
        s = s[: m.start()]
    if _NEGATED.match(s):
        return None
    # drop parenthesised comments ("4000 (profit or loss, so ... = -4000)"), keep "(24 + 51)"
    s2 = re.sub(r"\([^()]*[A-Za-z]{2,}[^()]*\)", " ", s)
    if _first_number(s2) is not None:
        s = s2
    # a mixed number "5 3/4"
    mixed = re.match(r"\W*?(-?)(\d+)\s+(\d+)\s*/\s*(\d+)(?![\d.,/])", s)
    if mixed and int(mixed.group(4)) > int(mixed.group(3)) > 0:
        v = int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4)))
        return ("-" if mixed.group(1) else "") + _fmt(v)
    # an arithmetic chain: the value after the last "=" (or "≈")
    parts = re.split(r"(?<![<>!=])=(?!=)|≈", s)
    for part in reversed(parts):
        if _first_number(part) is None:
            continue
        # "4 - 3": plain arithmetic is evaluated; an expression that is not ("4 - x") is no answer
        kind, value = _arithmetic(part)
        if kind == "expr":
            return value
        if kind == "bad":
            return None
        return _first_number(part)
    w = re.match(r"\W*([a-z]+)\b", s, re.IGNORECASE)
    if w and w.group(1).lower() in _NUM_WORDS:
        return str(_NUM_WORDS[w.group(1).lower()])
    return None


_ARITH_NUM = r"\(*\s*[$€£]?\d[\d,]*(?:\.\d+)?\s*\)*"
_ARITH_OP = r"(?:[-+*/×÷−–]|\s[x×]\s)"
_ARITH = re.compile(rf"^\s*(-?\s*{_ARITH_NUM}(?:\s*{_ARITH_OP}\s*-?{_ARITH_NUM})+)")
_ARITH_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/()]")


def _arithmetic(part: str) -> tuple[str, str | None]:
    """``("expr", value)`` when ``part`` starts with plain arithmetic of two or more numbers joined
    by + - * / x × ÷ (a lone fraction "3/4" is a number, not an expression); ``("bad", None)`` when
    it starts with a number followed by an operator and something that is not a number
    ("4 - x"); ``("number", None)`` otherwise."""
    t = part.translate(_DASHES)
    m = _ARITH.match(t)
    if not m or not re.search(r"\d\s*\)*\s*(?:[-+*×÷]|\s[x×]\s)\s*\(*\s*-?[$€£]?\d", m.group(1)):
        if re.match(rf"^\s*-?{_ARITH_NUM}\s*(?:[+*×÷]|-(?!\s*\d))\s*[A-Za-z(]", t) or re.match(r"^\s*[A-Za-z]\s*[-+*/×÷]\s*\d", t):
            return "bad", None
        return "number", None
    rest = t[m.end():]
    if re.match(r"\s*(?:[-+*/×÷^]|\s[x×]\s)", rest):
        return "bad", None  # "4 - 3 * y"
    expr = m.group(1).replace(",", "").replace("$", "").replace("€", "").replace("£", "")
    expr = re.sub(r"\s[x×]\s|×", "*", expr).replace("÷", "/")
    toks = _ARITH_TOKEN.findall(expr)
    if "".join(toks) != re.sub(r"\s+", "", expr):
        return "number", None
    try:
        v = _eval_arith(toks)
    except (ValueError, ZeroDivisionError, IndexError):
        return "bad", None
    return "expr", _fmt(v)


def _eval_arith(toks: list[str]) -> Fraction:
    """Exact value of + - * / with parentheses and unary minus (recursive descent, no eval)."""
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def atom() -> Fraction:
        t = take()
        if t == "-":
            return -atom()
        if t == "(":
            v = expr()
            if take() != ")":
                raise ValueError("unbalanced")
            return v
        if t in "+*/)":
            raise ValueError(t)
        return Fraction(t)

    def term() -> Fraction:
        v = atom()
        while peek() in ("*", "/"):
            v = v * atom() if take() == "*" else v / atom()
        return v

    def expr() -> Fraction:
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    v = expr()
    if pos != len(toks):
        raise ValueError("trailing tokens")
    return v


def _number_value(s: str) -> tuple[Fraction, bool] | None:
    """Value of a canonical (or loosely written) number and whether it was a percentage."""
    s = _as_text(s).strip()
    if not s:
        return None
    pct = False
    try:
        if s.endswith("%"):
            pct = True
            s = s[:-1]
        return Fraction(s.replace(",", "")), pct
    except (ValueError, ZeroDivisionError):
        pass
    r = _number_from_span(s)
    if r is None:
        return None
    pct = r.endswith("%")
    try:
        return Fraction(r.rstrip("%")), pct
    except (ValueError, ZeroDivisionError):
        return None


def _num_close(a: Fraction, b: Fraction) -> bool:
    if a == b:
        return True
    return abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))


def _equal_number(pred: str, gold: str) -> bool:
    p = _number_value(pred)
    g = _number_value(gold)
    if p is None or g is None:
        return False
    (pv, pp), (gv, gp) = p, g
    if _num_close(pv, gv):
        return True
    if pp and not gp and _num_close(pv / 100, gv):
        return True
    if gp and not pp and _num_close(pv, gv / 100):
        return True
    return False


# ----------------------------------------------------------------------------- choices

_CHOICE_SPAN = re.compile(
    r"^(?:\s|[:=\-*#\"'`<>\[\]]|<answer>|\\text\{|\\boxed\{|\$|option|choice|answer|letter|is)*"
    r"\(?([A-E])(?![A-Za-z]|'[a-z])",
    re.IGNORECASE,
)
_CHOICE_LOWER_OK = re.compile(r"^\W*(?:option|choice)?\s*\(?([a-e])\)?\s*(?:[.):,]|$)", re.IGNORECASE)


def _norm_words(s: str) -> str:
    s = s.lower()
    s = re.sub(r"[^a-z0-9]+", " ", s)
    return " ".join(s.split())


def _choice_by_text(span: str, choices: list[str] | None) -> str | None:
    if not choices:
        return None
    sp = _norm_words(span)
    if not sp:
        return None
    opts = [(_LETTERS[i], _norm_words(str(c))) for i, c in enumerate(choices[:5]) if c is not None]
    exact = [L for L, o in opts if o and o == sp]
    if len(exact) == 1:
        return exact[0]
    # numeric options ("(B) 89.0") match a number of the span by value, not by words
    numeric = {}
    for i, c in enumerate(choices[:5]):
        c = str(c).strip()
        if c and re.fullmatch(r"[-−$€£\s]*[\d,]*\.?\d+\s*(?:/\s*\d+)?\s*%?", c):
            v = _number_value(_first_number(c.translate(_DASHES)) or "")
            if v is not None:
                numeric[_LETTERS[i]] = v[0]
    span_vals = {v[0] for m in _num_matches(span.translate(_DASHES)) if (r := _num_from_match(m)) and (v := _number_value(r))}
    # the span starts with, or contains, exactly one option text (longest options first, whole words)
    hits = [L for L, o in opts if o and L not in numeric and re.search(rf"(?<![a-z0-9]){re.escape(o)}(?![a-z0-9])", sp)]
    hits += [L for L, v in numeric.items() if v in span_vals]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        # prefer an option that is not a sub-phrase of another hit
        texts = {L: o for L, o in opts}
        maximal = [L for L in hits if not any(L != M and texts[L] in texts[M] for M in hits)]
        if len(maximal) == 1:
            return maximal[0]
    return None


def _choice_from_span(span: str, choices: list[str] | None = None) -> str | None:
    s = span.strip()
    if _NEGATED.match(s):
        return None
    m = _CHOICE_SPAN.match(s)
    if m:
        letter = m.group(1)
        if letter.isupper():
            # "A" as an article ("A large rock") is not a letter answer
            rest = s[m.end() :]
            if letter == "A" and re.match(r"\s+[a-z]", rest) and not re.match(r"\s*[.):,]", rest):
                pass
            else:
                return letter
    m = _CHOICE_LOWER_OK.match(s)
    if m:
        return m.group(1).upper()
    sent = re.split(r"(?<=[a-z])\.\s|\n", s)[0]
    v = _choice_by_text(sent, choices)
    if v:
        return v
    # one distinct standalone capital letter later in the line ("30. i.e C", "24 B", "x+2 or Option C")
    letters = {m.group(1) for m in re.finditer(r"(?<![A-Za-z'])([A-E])(?![a-z]|'[a-z])", s)
               if not (m.group(1) == "A" and re.match(r"\s+[a-z]", s[m.end():]))}
    if len(letters) == 1:
        return letters.pop()
    return None


_LAST_LETTER = re.compile(
    r"\(([A-E])\)|(?<![A-Za-z])([A-E])\)|\b(?:option|choice)\s*\(?([A-E])\b|(?<![A-Za-z'])([A-E]):",
    re.IGNORECASE,
)


_FINAL_LETTER = re.compile(
    r"\b(?:is|are|be|answer|option|choice|select|choose|pick)\s*:?\s*\(?([A-E])\)?\s*[.!]?\s*$",
    re.IGNORECASE,
)


def _last_letter(text: str) -> str | None:
    last = None
    for m in _LAST_LETTER.finditer(text):
        g = next(x for x in m.groups() if x)
        if g.isupper() or m.group(0)[0] in "(" or m.group(0).lower().startswith(("option", "choice")):
            last = g.upper()
    return last


# ----------------------------------------------------------------------------- booleans

_BOOL_WORDS = {"true": "True", "false": "False", "yes": "True", "no": "False", "correct": None}


def _bool_from_span(span: str) -> str | None:
    s = span.strip()
    if _NEGATED.match(s):
        return None
    m = re.match(r"^(?:\W|is|answer)*(true|false|yes|no)(?![a-z])", s, re.IGNORECASE)
    if m:
        return _BOOL_WORDS[m.group(1).lower()]
    m = re.match(r"^\W*(true|false)", s, re.IGNORECASE)  # "TRUEisA"-style glue
    if m:
        return _BOOL_WORDS[m.group(1).lower()]
    # one truth value later in the line: "The answer is, however, based on the given answer, False"
    found = {_BOOL_WORDS[w.lower()] for w in re.findall(r"(?<![a-z])(true|false)(?![a-z])", s, re.IGNORECASE)}
    if len(found) == 1:
        return found.pop()
    return None


def _last_bool(text: str) -> str | None:
    found = list(re.finditer(r"(?<![a-z])(true|false)(?![a-z])", text, re.IGNORECASE))
    if found:
        return _BOOL_WORDS[found[-1].group(1).lower()]
    tail = re.split(r"(?<=[.!?])\s+", text.strip())[-1] if text.strip() else ""
    found = list(re.finditer(r"\b(yes|no)\b", tail, re.IGNORECASE))
    if found:
        return _BOOL_WORDS[found[-1].group(1).lower()]
    return None


# ----------------------------------------------------------------------------- math


def _strip_math_wrappers(s: str) -> str:
    s = s.strip()
    for _ in range(3):
        if s.startswith("**") and s.endswith("**") and len(s) > 4:
            s = s[2:-2].strip()
        b = re.match(r"^\\(?:boxed|fbox)\s*\{", s)
        if b:
            g = _balanced(s, b.end() - 1)
            s = g[0] if g else s[b.end() :]
        s = s.strip()
        if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
            s = s[2:-2]
        elif s.startswith("$") and s.endswith("$") and len(s) > 2:
            s = s[1:-1]
        elif s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        elif s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = s.strip()
    return s


_MATH_DELIMS = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def _math_from_span(span: str) -> str | None:
    s = _repair_escapes(span).strip()
    if not s or _NEGATED.match(s):
        return None
    b = _last_boxed(s)
    if b is not None:
        return b.strip() or None
    m = _MATH_DELIMS.match(s) or (_MATH_DELIMS.search(s) if s.lstrip().startswith(("$", "\\(", "\\[")) else None)
    if m:
        return next(g for g in m.groups() if g is not None).strip() or None
    m = _MATH_DELIMS.search(s[:80])
    if m and m.start() < 20:
        return next(g for g in m.groups() if g is not None).strip() or None
    # plain text: up to the end of the sentence, without tags ("25>", "336 </Solution Path>")
    s = re.sub(r"<[^<>]{0,40}>|[<>]\s*$|^\s*[<>]", " ", s).strip()
    if not s:
        return None
    s = re.split(r"\.(?!\d)\s|\.$|\n|,\s(?:so|which|since|because|as)\b|\s\((?=[a-z]{3,})", s)[0]
    s = s.strip().rstrip(".").strip()
    return s or None


def _last_math(text: str) -> str | None:
    found = None
    for m in _MATH_DELIMS.finditer(text):
        g = next(x for x in m.groups() if x is not None).strip()
        if g:
            found = g
    return found


_UNICODE_MATH = str.maketrans({"π": "\\pi ", "×": "\\times ", "÷": "\\div ", "·": "\\cdot ", "∞": "\\infty ", "²": "^2", "³": "^3"})
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textit|mathbf|operatorname)\s*\{([^{}]*)\}")
_UNIT_WORDS = (
    r"(?:units?|sq(?:uare)?\s*(?:units?|feet|ft|inches|in|meters|m|cm|miles)?|cubic\s*\w*|degrees?|"
    r"cm|m|km|mm|ft|feet|foot|inch(?:es)?|in|yards?|miles?|meters?|pounds?|lbs?|ounces?|oz|"
    r"cents?|dollars?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|"
    r"mph|kg|g|grams?|liters?|l|ml|gallons?|quarts?|cups?|people|students?|dogs?|cats?|ways?|"
    r"times?|pages?|books?|apples?|marbles?|coins?|points?|numbers?|integers?|digits?|acres?|"
    r"edges?|faces?|vertices|sides?|games?|handshakes?|outfits?|rows?|cards?|tiles?|boxes?)"
)


def _repair_escapes(s: str) -> str:
    """LaTeX that went through a JSON/Python string unescaped: "\x0crac" was "\\frac", "\x08oxed" "\\boxed"."""
    if any(c in s for c in "\x0c\x08\x07\x0b\t\r"):
        s = s.replace("\x0c", "\\f").replace("\x08", "\\b").replace("\x07", "\\a").replace("\x0b", "\\v")
        s = re.sub(r"\t(?=ext|imes|frac|heta|au|an|o\b)", r"\\t", s)
        s = re.sub(r"\r(?=ight|ho|m\b)", r"\\r", s)
    return s


def _normalize_math(s: str) -> str:
    """Normalise a LaTeX answer string (in the style of Hendrycks' ``is_equiv`` / Qwen2.5-Math)."""
    s = _repair_escapes(_as_text(s))
    # balance braces cut off by a naive extractor ("\sqrt{5" -> "\sqrt{5}")
    depth = s.count("{") - s.count("}")
    if 0 < depth <= 3:
        s += "}" * depth
    s = _strip_math_wrappers(s)
    s = s.replace("\n", " ").translate(_DASHES)
    s = s.translate(_UNICODE_MATH)
    s = re.sub(r"√\s*(\d+(?:\.\d+)?|[a-zA-Z])", r"\\sqrt{\1}", s)
    s = re.sub(r"√\s*[(\[]([^()\[\]]*)[)\]]", r"\\sqrt{\1}", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "").replace("\\ ", " ")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\bigl", "").replace("\\bigr", "")
    s = s.replace("\\Big", "").replace("\\big", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\displaystyle", "")
    # degrees and percent
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\circ|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "").replace("~", " ")
    # a trailing word after a number: "230 \text{ diagonals}", "90~\text{seconds}"
    s = re.sub(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .]*\}\s*\.?\s*$", "", s)
    # units written as \text{ cm}, \mbox{ acres} at the end, then any other \text{x} -> x
    s = re.sub(r"\s*\\(?:text|mbox|mathrm)\s*\{\s*" + _UNIT_WORDS + r"(?:\^?\{?\d\}?)?\s*\}\s*$", "", s, flags=re.I)
    s = re.sub(r"\s*\\(?:text|mbox|mathrm)\s*\{\s*" + _UNIT_WORDS + r"(?:\^?\{?\d\}?)?\s*$", "", s, flags=re.I)
    for _ in range(3):
        s = _TEXT_CMD.sub(r"\1", s)
    # trailing plain-word units: "441 pounds", "12 sq units"
    s = re.sub(r"(?<=[\d}])\s*(?:" + _UNIT_WORDS + r")(?:\^?\{?\d\}?)?\s*$", "", s, flags=re.I)
    # "x = 5" -> "5"; a chain "6 \cdot 5 / 2 = 15" or "mr = 10 \cdot 24 = 240" -> its last side
    parts = _split_top(s.replace("\\approx", "="), "=")
    if len(parts) > 1 and parts[-1].strip() and not re.search(r"[<>]$|\\[lg]e?q?$|\\neq?$", parts[-2].strip()):
        s = parts[-1]
    # thousands separators "14,641" (only when the whole thing is a number)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s.strip()):
        s = s.replace(",", "")
    # \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt\s*(\d+|[a-zA-Z])", r"\\sqrt{\1}", s)
    s = re.sub(r"\\binom\s*(\d)\s*(\d)", r"\\binom{\1}{\2}", s)
    s = re.sub(r"\{\s*(\w+)\s*\\choose\s*(\w+)\s*\}", r"\\binom{\1}{\2}", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    # 0.5 -> .5 style leading zero, "5." -> "5"
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    # a lone number: canonical form (145.0 -> 145)
    if re.fullmatch(r"-?\d+(?:\.\d+)?", s):
        try:
            s = _fmt(Fraction(s))
        except ValueError:
            pass
    return s


_ALLOWED_NAMES = {"sqrt", "pi", "oo", "log", "sin", "cos", "tan", "exp", "binomial", "factorial"}


def _latex_to_sympy_str(s: str) -> str | None:
    """Translate a normalised LaTeX expression into a sympy-parsable string (or None)."""
    if len(s) > 300:
        return None
    t = s

    def repl_frac(text: str) -> str | None:
        # \frac{a}{b} -> ((a)/(b)), recursively, with balanced braces
        out = []
        i = 0
        while True:
            j = text.find("\\frac", i)
            if j == -1:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = j + 5
            if k >= len(text) or text[k] != "{":
                return None
            a = _balanced(text, k)
            if a is None or a[1] >= len(text) or text[a[1]] != "{":
                return None
            b = _balanced(text, a[1])
            if b is None:
                return None
            ia, ib = repl_frac(a[0]), repl_frac(b[0])
            if ia is None or ib is None:
                return None
            out.append(f"(({ia})/({ib}))")
            i = b[1]
        return "".join(out)

    def repl_sqrt(text: str) -> str | None:
        out = []
        i = 0
        while True:
            j = text.find("\\sqrt", i)
            if j == -1:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = j + 5
            root = None
            if k < len(text) and text[k] == "[":
                e = text.find("]", k)
                if e == -1:
                    return None
                root = text[k + 1 : e]
                k = e + 1
            if k >= len(text) or text[k] != "{":
                return None
            a = _balanced(text, k)
            if a is None:
                return None
            inner = repl_sqrt(a[0])
            if inner is None:
                return None
            out.append(f"sqrt({inner})" if root is None else f"(({inner})**(1/({root})))")
            i = a[1]
        return "".join(out)

    t = repl_sqrt(t)
    if t is None:
        return None
    t = repl_frac(t)
    if t is None:
        return None
    t = re.sub(r"\\binom\{([^{}]*)\}\{([^{}]*)\}", r"binomial(\1,\2)", t)
    t = t.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/").replace("\\ast", "*")
    t = t.replace("\\pi", " pi ").replace("\\infty", " oo ").replace("\\ln", " log ").replace("\\log", " log ")
    for fn in ("sin", "cos", "tan", "exp"):
        t = t.replace("\\" + fn, f" {fn} ")
    t = t.replace("^", "**").replace("{", "(").replace("}", ")")
    t = t.replace("\\", "")
    if re.search(r"[^0-9a-zA-Z+\-*/(). ,_!]", t):
        return None
    for name in re.findall(r"[A-Za-z_]+", t):
        if len(name) > 1 and name not in _ALLOWED_NAMES:
            return None
    if not _safe_size(t):
        return None
    return t


def _safe_size(t: str) -> bool:
    """Reject expressions whose evaluation could blow up inside one C call (which no timeout can
    interrupt): nested or large powers (10**10**10, 2**100000), big factorials / binomials."""
    if t.count("**") > 6 or len(re.findall(r"\d+", t)) > 60:
        return False
    if any(len(d) > 60 for d in re.findall(r"\d+", t)):
        return False
    for m in re.finditer(r"\*\*", t):
        rest = t[m.end() :].lstrip()
        if rest.startswith("("):
            depth, j = 0, 0
            for j, c in enumerate(rest):
                depth += c == "("
                depth -= c == ")"
                if depth == 0:
                    break
            expo = rest[: j + 1]
        else:
            mm = re.match(r"[-+]?[\w.]+", rest)
            expo = mm.group(0) if mm else ""
        if "**" in rest[: len(expo) + 2] or "!" in expo or "factorial" in expo or len(expo) > 24:
            return False
        if any(int(d) > 400 for d in re.findall(r"\d+", expo)):
            return False
    if "!" in t or "factorial" in t or "binomial" in t:
        if any(int(d) > 300 for d in re.findall(r"\d+", t)):
            return False
    return True


_TIMEOUT_S = 2.0


def _run_with_timeout(fn, timeout: float = _TIMEOUT_S):
    """Run ``fn()`` in a daemon thread; ``None`` if it does not finish in ``timeout`` seconds."""
    box: list = []

    def target():
        try:
            box.append(fn())
        except Exception:  # noqa: BLE001 - any failure of sympy means "not provably equal"
            box.append(None)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    return box[0] if box else None


def _sympy_parse(expr: str):
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    tr = standard_transformations + (implicit_multiplication_application, convert_xor)
    return parse_expr(expr, transformations=tr, evaluate=True)


@lru_cache(maxsize=65536)
def _sympy_equal(a: str, b: str) -> bool:
    sa, sb = _latex_to_sympy_str(a), _latex_to_sympy_str(b)
    if sa is None or sb is None:
        return False

    def work():
        ea, eb = _sympy_parse(sa), _sympy_parse(sb)
        if isinstance(ea, tuple) or isinstance(eb, tuple):
            return False
        syms = sorted(ea.free_symbols | eb.free_symbols, key=str)
        # numeric identity test: equal values at a few fixed points (no simplify(): it can run for
        # minutes); constants are compared once. Points are fixed, so the result is deterministic.
        points = [{}] if not syms else [
            {x: v for x, v in zip(syms, vals)}
            for vals in ([0.5 + 0.37 * k * (i + 1) % 2.1 for i in range(len(syms))] for k in (1, 2, 3, 5))
        ]
        for pt in points:
            fa = complex(ea.evalf(30, subs=pt))
            fb = complex(eb.evalf(30, subs=pt))
            if not (_math.isfinite(abs(fa)) and _math.isfinite(abs(fb))):
                return False
            if abs(fa - fb) > 1e-8 * max(1.0, abs(fa), abs(fb)):
                return False
        return True

    return bool(_run_with_timeout(work))


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _plain_number(s: str) -> Fraction | None:
    t = s.replace("{", "").replace("}", "")
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:/(\d+(?:\.\d+)?))?", t)
    if not m:
        m2 = re.fullmatch(r"(-?)\\frac(\d+)(\d+)", t)
        if not m2:
            return None
        try:
            v = Fraction(int(m2.group(2)), int(m2.group(3)))
        except ZeroDivisionError:
            return None
        return -v if m2.group(1) else v
    try:
        v = Fraction(m.group(1))
        if m.group(2):
            v /= Fraction(m.group(2))
        return v
    except (ValueError, ZeroDivisionError):
        return None


@lru_cache(maxsize=65536)
def _equal_math_norm(p: str, g: str, depth: int = 0) -> bool:
    if p == g:
        return True
    if not p or not g:
        return False
    pn, gn = _plain_number(p), _plain_number(g)
    if pn is not None and gn is not None:
        return _num_close(pn, gn)
    # tuples / intervals / sets: same brackets, element-wise
    if depth < 2:
        bp = re.fullmatch(r"([(\[]|\\\{)(.*)([)\]]|\\\})", p)
        bg = re.fullmatch(r"([(\[]|\\\{)(.*)([)\]]|\\\})", g)
        if bp and bg and "," in bp.group(2) and "," in bg.group(2):
            if (bp.group(1), bp.group(3)) != (bg.group(1), bg.group(3)):
                return False
            xs, ys = _split_top(bp.group(2)), _split_top(bg.group(2))
            if len(xs) != len(ys):
                return False
            if bp.group(1) == "\\{":  # sets: order-insensitive
                ys_left = list(ys)
                for x in xs:
                    hit = next((y for y in ys_left if _equal_math_norm(x, y, depth + 1)), None)
                    if hit is None:
                        return False
                    ys_left.remove(hit)
                return True
            return all(_equal_math_norm(x, y, depth + 1) for x, y in zip(xs, ys))
        if "," in p and "," in g and not bp and not bg:
            xs, ys = _split_top(p), _split_top(g)
            if len(xs) == len(ys) > 1:
                return sorted(xs) == sorted(ys) or all(_equal_math_norm(x, y, depth + 1) for x, y in zip(xs, ys))
    if "=" in p or "=" in g:
        return False
    # text answers (\text{A,B,E}, words): case-insensitive compare done; nothing symbolic to try
    if re.fullmatch(r"[A-Za-z ]{2,}", p) or re.fullmatch(r"[A-Za-z ]{2,}", g):
        return p.lower() == g.lower()
    return _sympy_equal(p, g)


def _equal_math(pred: str, gold: str) -> bool:
    p, g = _normalize_math(pred), _normalize_math(gold)
    return _equal_math_norm(p, g)


# ----------------------------------------------------------------------------- public API


def _read_span(span: str, answer_type: str, choices) -> str | None:
    if answer_type == "number":
        return _number_from_span(span)
    if answer_type == "choice":
        return _choice_from_span(span, choices)
    if answer_type == "bool":
        return _bool_from_span(span)
    v = _math_from_span(span)
    return _normalize_math(v) if v is not None else None


def _whole(text: str, answer_type: str, choices) -> str | None:
    s = text.strip()
    if not s or len(s) > 80:
        return None
    if answer_type == "number":
        if re.fullmatch(r"\W*[-−]?\s?[$€£]?\s?[\d,]*\.?\d+\s*(?:/\s*\d+)?\s*%?\s*[a-zA-Z ]{0,20}\W*", s):
            return _number_from_span(s)
        return None
    if answer_type == "choice":
        if re.fullmatch(r"\W*(?:option\s*)?\(?[A-Ea-e]\)?\W*(?:[:.)]\s*[^()\n]{0,40})?", s, re.IGNORECASE):
            return _choice_from_span(s, choices)
        return _choice_by_text(s, choices) if choices and _norm_words(s) in {_norm_words(str(c)) for c in choices} else None
    if answer_type == "bool":
        if re.fullmatch(r"\W*(?:true|false|yes|no)\W*", s, re.IGNORECASE):
            return _bool_from_span(s)
        return None
    if "\n" in s or len(s) > 60 or re.search(r"[a-zA-Z]{4,}", re.sub(r"\\[a-zA-Z]+", " ", s)):
        return None
    if not re.search(r"[\d\\]", s) and len(s) > 12:
        return None
    v = _normalize_math(s)
    return v or None


def _extract(text: str, answer_type: str, choices) -> tuple[str | None, str]:
    text = _as_text(text)
    if not text.strip():
        return None, "none"
    if answer_type == "math":
        text = _repair_escapes(text)
    # 1. "the answer is X", last occurrence first
    for i, span in enumerate(_answer_spans(text)):
        if _NEGATED.match(span):
            m = _AFTER_NEGATION.search(span)
            v = _read_span(m.group(1), answer_type, choices) if m else None
            if v:
                return v, "answer_is"
            # the teacher refuses or rejects ("none of the above", "not D"): no fallback digs an
            # answer out of a rationale that rejected it
            return None, "negated"
        v = _read_span(span, answer_type, choices)
        if v:
            return v, "answer_is"
    # 2. "#### X"
    hs = list(re.finditer(r"####\s*([^\n]+)", text))
    if hs:
        v = _read_span(hs[-1].group(1), answer_type, choices)
        if v:
            return v, "hash"
    # 3. \boxed{X}
    b = _last_boxed(text)
    if b is not None:
        v = _read_span("\\boxed{" + b + "}", answer_type, choices) if answer_type == "math" else _read_span(b, answer_type, choices)
        if v:
            return v, "boxed"
    text = text[-_FALLBACK_TAIL:]
    # 4. **X**
    for m in reversed(list(re.finditer(r"\*\*([^*\n]{1,60})\*\*", text))):
        content = m.group(1)
        w = _whole(content, answer_type, choices)
        if w:
            return w, "bold"
    # 5. the whole text is an answer
    w = _whole(text, answer_type, choices)
    if w:
        return w, "whole"
    # 6. type-specific fallbacks
    if answer_type == "number":
        v = _last_number(text.translate(_DASHES))
        return (v, "last_number") if v else (None, "none")
    if answer_type == "choice":
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if choices and lines:
            last_sent = re.split(r"(?<=[.!?])\s+", lines[-1].strip())[-1]
            v = _choice_by_text(last_sent, choices)
            if v:
                return v, "option_text"
        m = _FINAL_LETTER.search(text)
        if m:
            return m.group(1), "final_letter"
        v = _last_letter(text)
        return (v, "last_letter") if v else (None, "none")
    if answer_type == "bool":
        v = _last_bool(text)
        return (v, "last_bool") if v else (None, "none")
    v = _last_math(text)
    if v:
        # "$6 \cdot 2 = 12$": the value after the last top-level "="
        parts = [p for p in re.split(r"(?<![<>!\\])=", v) if p.strip()]
        if len(parts) > 1:
            v = parts[-1]
        v = _normalize_math(v)
        if v:
            return v, "last_math"
    v = _last_number(text.translate(_DASHES))
    return (v, "last_number") if v else (None, "none")


MODES = ("strict", "lenient")
# what strict mode accepts: the answer line, a refusal on it, or an output that is only an answer
STRICT_RULES = ("answer_is", "negated", "whole")


def extract_with_rule(text, answer_type: str, *, choices: list[str] | None = None,
                      mode: str = "strict") -> tuple[str | None, str]:
    """``(pred, rule)``: the canonical answer found in ``text`` and the name of the rule that fired.

    ``mode="strict"`` (the default, as the paper scores) reads only the answer line the prompt asks
    for (rule ``answer_is``; ``negated`` when it refuses to answer), or a whole output that is
    nothing but an answer (``whole``: "145", what answer-only supervision teaches);
    ``mode="lenient"`` tries every rule in order (``hash``, ``boxed``, ``bold``, ``whole`` and the
    type's fallbacks such as ``last_number``). ``rule`` is one of :data:`RULES` (``"none"`` when nothing was found).
    Never raises on bad text.
    """
    _check_type(answer_type)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use strict or lenient")
    try:
        ch = [str(c) for c in choices] if choices else None
        pred, rule = _extract(text, answer_type, ch)
    except Exception:  # noqa: BLE001 - garbage in, "no answer" out
        return None, "none"
    if mode == "strict" and rule not in STRICT_RULES:
        return None, "none"
    return pred, rule


def extract(text, answer_type: str, *, choices: list[str] | None = None, mode: str = "strict") -> str | None:
    """The canonical answer written in ``text`` (see the module docstring), or ``None``."""
    return extract_with_rule(text, answer_type, choices=choices, mode=mode)[0]


def normalize(value, answer_type: str, *, choices: list[str] | None = None) -> str | None:
    """Canonical form of a short answer (a gold label such as ``"145.0"``, ``"C."``, ``"yes"``)."""
    _check_type(answer_type)
    try:
        s = _as_text(value).strip()
        if not s:
            return None
        if answer_type == "math":
            return _normalize_math(s) or None
        v = _whole(s, answer_type, choices)
        if v is None:
            v = _read_span(s, answer_type, choices)
        return v
    except Exception:  # noqa: BLE001
        return None


def equal(pred, gold, answer_type: str) -> bool:
    """Whether the predicted answer ``pred`` matches ``gold`` (both short answers, not full texts)."""
    _check_type(answer_type)
    if pred is None or gold is None:
        return False
    try:
        p, g = _as_text(pred).strip(), _as_text(gold).strip()
        if not p or not g or len(p) > 2000 or len(g) > 2000:  # answers, not texts
            return False
        if answer_type == "number":
            return _equal_number(p, g)
        if answer_type == "math":
            return _equal_math(p, g)
        np_, ng = normalize(p, answer_type), normalize(g, answer_type)
        if np_ is None or ng is None:
            return p.lower() == g.lower()
        return np_ == ng
    except Exception:  # noqa: BLE001
        return False


def correct(text, gold, answer_type: str, *, choices: list[str] | None = None,
            mode: str = "strict") -> tuple[str | None, bool]:
    """``(pred, is_correct)`` for a full output text against the gold answer."""
    pred = extract(text, answer_type, choices=choices, mode=mode)
    return pred, equal(pred, gold, answer_type)
