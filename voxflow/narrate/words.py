"""Words for numbers (cardinals, years, Roman numerals) and small wording helpers shared by
the readers (chapter headings) and the preparation (years read aloud)."""

from __future__ import annotations

import re


def words_of(text: str) -> tuple[str, ...]:
    """The words of a string (a word list written as one string)."""
    return tuple(text.split())


NUMBER_WORDS = words_of(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORDINAL_WORDS = words_of(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)

_VALID_ROMAN = re.compile(r"^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")


def roman_to_int(text: str) -> int | None:
    """The value of a valid Roman numeral ('XIV' → 14), else None."""
    text = text.upper()
    if not text or not _VALID_ROMAN.match(text):
        return None
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for a, b in zip(text, text[1:] + " ", strict=True):
        v = values[a]
        total += -v if b != " " and values[b] > v else v
    return total


def number_words(n: int) -> str:
    """English words for 0 ≤ n < 1 000 000 ('forty-two')."""
    if n < 21:
        return NUMBER_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{NUMBER_WORDS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{NUMBER_WORDS[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    words = f"{number_words(thousands)} thousand"
    if rest:
        words += (" and " if rest < 100 else " ") + number_words(rest)
    return words


def year_words(year: int) -> str:
    """1865 → 'eighteen sixty-five', 1900 → 'nineteen hundred', 1905 → 'nineteen oh-five'."""
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_words(high)} hundred"
    if low < 10:
        return f"{number_words(high)} oh-{number_words(low)}"
    return f"{number_words(high)} {number_words(low)}"


def capitalise(word: str) -> str:
    """Each hyphen-joined part with a capital first letter ('red-headed' → 'Red-Headed')."""
    return "-".join(p[:1].upper() + p[1:] for p in word.split("-"))


def end_sentence(text: str) -> str:
    """``text`` ending in a full stop unless it already ends a sentence."""
    text = text.strip()
    return text if text[-1:] in ".!?…" else text + "."
