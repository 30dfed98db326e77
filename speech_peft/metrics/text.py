"""The plain text normaliser used for every WER in the project: lower case, punctuation dropped,
digits spelled out (``"2"`` -> ``"two"``, ``"19"`` -> ``"nineteen"``)."""
from __future__ import annotations

import re

NAME = "plain (lower case, punctuation dropped, digits spelled out)"
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]


def spell_number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, word in _SCALES:
        if n >= value:
            rest = n % value
            return f"{spell_number(n // value)} {word}" + ("" if rest == 0 else " " + spell_number(rest))
    raise AssertionError(n)


def normalize(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: f" {spell_number(int(m.group()))} ", text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    return " ".join(text.split())
