"""Map a free-text answer back to a label.

Chat models answer 「科技」, 「类别：科技。」 or 「这条新闻属于文化类别」; all should count as the
label. An answer naming no label, or several, is invalid and counted as such, never guessed.
"""

from __future__ import annotations

import re
import unicodedata

_PREFIX = re.compile(r"^(类别|分类|答案|回答|标签|主题|category|label|answer|topic)\s*[:：是为]?\s*", re.IGNORECASE)
_EDGE = "\"'`“”‘’「」『』《》【】()（）[]<>*#.,;:!?。，、；：！？ \t"
#: Every character str.strip() removes: answers' lines are stripped so, so label words are too.
_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def reading(text: str) -> str:
    """What an answer or a label word says once case, width, invisible marks (zero-width spaces),
    a leading 「类别：」/"label:" and edge punctuation are set aside. Answers and label words are
    compared only in this form, so a label word such as 「C#」, 「U.S.」 or 「(其他)」 reads as its answer does."""
    visible = "".join(char for char in text if unicodedata.category(char) != "Cf")
    return fold(_PREFIX.sub("", fold(visible).strip(_EDGE + _WHITESPACE))).strip(_EDGE + _WHITESPACE)


def first_twins(spellings: dict[str, tuple[str, ...]]) -> tuple[str, str, str] | None:
    """Label -> its spellings; the first two labels with a spelling that reads the same (`reading`),
    and that form: answers are read so, and could not tell them apart. Empty readings are skipped
    (`unreadable` finds those)."""
    folded: dict[str, str] = {}
    for label, forms in spellings.items():
        for form in {reading(spelling) for spelling in forms} - {""}:
            if folded.setdefault(form, label) != label:
                return folded[form], label, form
    return None


def unreadable(labels: dict[str, str]) -> str | None:
    """The first label whose word reads as nothing (only edge marks, invisible characters or a
    「类别：」 prefix): no answer could ever name it."""
    return next((label for label, name in labels.items() if not reading(name)), None)


def normalize_answer(answer: str, label_names: dict[str, str]) -> str | None:
    """The dataset label an answer names, or None when it names none or more than one.

    `label_names` maps dataset label -> display name; either spelling is accepted.
    """
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    for candidate in lines[:1] + ([answer] if len(lines) > 1 else []):
        found = _match(candidate, label_names)
        if found is not None:
            return found
    return None


def _match(text: str, label_names: dict[str, str]) -> str | None:
    cleaned = reading(text)
    spellings = {label: {reading(label), reading(name)} - {""} for label, name in label_names.items()}
    for label, forms in spellings.items():
        if cleaned in forms:
            return label
    mentioned = {label for label, forms in spellings.items() if any(_mentions(cleaned, form) for form in forms)}
    return mentioned.pop() if len(mentioned) == 1 else None


def _mentions(text: str, form: str) -> bool:
    if form.isascii():  # English words need word boundaries: "art" is not in "start"
        return re.search(rf"(?<![a-z0-9_]){re.escape(form)}(?![a-z0-9_])", text) is not None
    return form in text
