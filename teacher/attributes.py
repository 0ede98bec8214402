"""Attribute values in short product texts, found by lexicon and pattern (no model).

Used by the bootstrap rationales (bootstrap.py) to judge the dimensions a title can state
plainly — colour, material, size, quantity — as match / mismatch / not stated, with verbatim spans
on both sides. A mismatch is evidence too: it marks the item words that make a pair Partial or
Irrelevant, which word overlap alone never marks. Lexicons are small and English; a word they do
not list is simply not seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that negate the next one in a query ("bags without handles"); the negation slice of
# `relevance eval run` and the bootstrap's exclusion rule use the same list.
NEGATION_WORDS: tuple[str, ...] = ("without", "non", "not", "no")

_COLORS = (
    "black white red blue green yellow orange purple pink brown grey gray silver gold beige navy "
    "teal turquoise maroon burgundy ivory cream khaki tan charcoal olive lavender violet coral mint "
    "aqua cyan magenta bronze copper multicolor rainbow clear transparent"
)
_MATERIALS = (
    "cotton leather steel stainless wood wooden bamboo plastic glass silicone aluminum aluminium "
    "metal ceramic porcelain polyester wool nylon rubber canvas linen silk denim foam acrylic vinyl "
    "marble brass iron cast-iron titanium paper cardboard fleece velvet suede mesh resin stone "
    "concrete cashmere spandex latex"
)
_SIZE_WORDS = "xs small medium large xl xxl xxxl 2xl 3xl king queen twin full mini compact jumbo"
_UNITS = (
    "inch inches in ft feet foot cm mm m meter meters oz ounce ounces fl lb lbs pound pounds kg g "
    "gallon gallons gal ml l liter liters litre qt quart gb tb mah w watt watts v volt volts cfm"
)

_NUMBER = r"\d+(?:[.,/]\d+)?"
_QUANTITY = re.compile(
    rf"(?<![\w.])(?:(?:pack|set|box|case|bag) of {_NUMBER}|{_NUMBER}[ -]?(?:pack|pk|count|ct|pcs|pc|pieces|piece|"
    rf"pairs|pair|rolls|roll|sheets|bags|bottles|cans))(?![\w])",
    re.IGNORECASE,
)
_MEASURE = re.compile(
    rf"(?<![\w.]){_NUMBER}(?: ?x ?{_NUMBER})*[ -]?(?:{'|'.join(sorted(_UNITS.split(), key=len, reverse=True))}"
    rf"|\"|'')(?![\w])",
    re.IGNORECASE,
)


def _lexicon(words: str) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words.split(), key=len, reverse=True))
    return re.compile(rf"(?<![0-9a-z])(?:{alternatives})(?![0-9a-z])", re.IGNORECASE)


# Dimension (a name from cot.DIMENSIONS) -> how its values are found.
ATTRIBUTE_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "color": (_lexicon(_COLORS),),
    "material": (_lexicon(_MATERIALS),),
    "size": (_MEASURE, _lexicon(_SIZE_WORDS)),
    "quantity": (_QUANTITY,),
}


@dataclass(frozen=True)
class AttributeValue:
    text: str  # verbatim, as it occurs
    start: int
    end: int

    @property
    def key(self) -> str:
        """Normalised for comparison: lower case, no spaces or hyphens, grey == gray."""
        return (
            re.sub(r"[\s-]", "", self.text.lower()).replace("gray", "grey").replace("aluminium", "aluminum")
        )


def find_values(dimension: str, text: str) -> list[AttributeValue]:
    """Every value of ``dimension`` in ``text``, in order, without overlaps (first pattern wins)."""
    found: list[AttributeValue] = []
    for pattern in ATTRIBUTE_PATTERNS[dimension]:
        for match in pattern.finditer(text):
            if any(match.start() < v.end and v.start < match.end() for v in found):
                continue
            found.append(AttributeValue(match.group(0), match.start(), match.end()))
    return sorted(found, key=lambda v: v.start)
