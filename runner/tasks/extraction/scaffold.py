"""`specrun init` for extraction: rows that carry entities (CLUENER or an entity list) and their types."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

from runner.core.conll import conll_sentences
from runner.core.errors import InvalidInput
from runner.core.jsonl import read_text
from runner.tasks.common import Guess, Scaffold, mostly_chinese, word_problem, yaml_key, yaml_scalar
from runner.tasks.extraction.bio import looks_like_conll, survey
from runner.tasks.extraction.rows import cluener_entities, detect_format, listed_entities

TEMPLATES = {
    False: (
        "Extract the entities in the text. Entity types: {% for t in entity_types %}{{ t.name }}"
        "{% if t.description %} ({{ t.description }}){% endif %}{% if not loop.last %}, {% endif %}{% endfor %}.\n"
        "Answer in JSON, e.g. {{ answer_format }}; leave out types the text lacks, and answer {} when there are none.\n\n"
        "{% for example in examples %}Text: {{ example.text }}\nEntities: {{ example.answer }}\n\n"
        "{% endfor %}Text: {{ text }}\nEntities:"
    ),
    True: (
        "请抽取给定文本中的实体，实体类型包括：{% for t in entity_types %}{{ t.name }}"
        "{% if t.description %}（{{ t.description }}）{% endif %}{% if not loop.last %}、{% endif %}{% endfor %}。\n"
        "用JSON回答，例如 {{ answer_format }}；文本中没有的类型不写，没有实体时回答 {}。\n\n"
        "{% for example in examples %}文本：{{ example.text }}\n实体：{{ example.answer }}\n\n"
        "{% endfor %}文本：{{ text }}\n实体："
    ),
}


def guess(
    path: Path, rows: list[dict], container: str, task: str, text_field: str | None, claimed: bool
) -> Guess | None:
    """Rows with entities are extraction; without any, None (or exit 2 when the user asked for extraction).
    CoNLL/BIO files are read as such whatever container init took them for (a .txt reads as CSV)."""
    if container == "conll" or (container in ("csv", "tsv") and looks_like_conll(path)):
        return _conll_guess(path, task)
    fmt = _entity_format(rows, path) if container not in ("csv", "tsv") else None
    if fmt is None:
        if claimed:
            raise InvalidInput(
                "extraction needs rows with entities (CLUENER's label: {type: {text: [[start, end]]}} or entities: "
                "[{type, start, end}]); none found",
                where=str(path),
            )
        return None
    text_field = text_field or "text"
    counts: Counter = Counter()
    for number, row in enumerate(rows, 1):
        where = f"{path}:{number}"
        if text_field not in row:
            raise InvalidInput(f"no field {text_field!r} here; pass --text-field", where=where)
        spans = cluener_entities(row, where) if fmt == "cluener" else listed_entities(row, where)
        counts.update(entity_type for entity_type, *_ in spans)
    if not counts:
        raise InvalidInput("no entities in any row: nothing to extract", where=str(path))
    texts = [str(row[text_field]) for row in rows]
    return Guess(path, fmt, task, len(rows), text_field, counts, "entity types", mostly_chinese(texts))


def _conll_guess(path: Path, task: str) -> Guess:
    found = survey(path, conll_sentences(read_text(path, "data file"), path))
    if not found.counts:
        raise InvalidInput("no entities in any sentence: nothing to extract", where=str(path))
    fields = {"scheme": found.scheme, "lenient": "true" if found.lenient else "false"}
    return Guess(path, "conll", task, found.n_sentences, "text", found.counts, "entity types",
                 mostly_chinese(found.texts), fields)  # fmt: skip


def _entity_format(rows: list[dict], path: Path) -> str | None:
    """cluener or entities when some row carries entities (a CLUENER row without any may omit its label)."""
    for row in rows:
        if isinstance(row.get("label"), dict) or isinstance(row.get("entities"), list):
            return detect_format(row, str(path))
    return None


#: Common NER type codes (CLUENER, OntoNotes, CoNLL, MSRA, Weibo) -> (Chinese, English) display names.
TYPE_NAMES: dict[str, tuple[str, str]] = {
    "per": ("人名", "person"),
    "person": ("人名", "person"),
    "name": ("人名", "person"),
    "nr": ("人名", "person"),
    "loc": ("地名", "location"),
    "location": ("地名", "location"),
    "ns": ("地名", "location"),
    "address": ("地址", "address"),
    "gpe": ("行政区", "geopolitical entity"),
    "org": ("组织机构", "organization"),
    "organization": ("组织机构", "organization"),
    "nt": ("组织机构", "organization"),
    "company": ("公司", "company"),
    "government": ("政府", "government"),
    "position": ("职位", "position"),
    "title": ("职位", "title"),
    "scene": ("景点", "scenic spot"),
    "book": ("书名", "book"),
    "game": ("游戏", "game"),
    "movie": ("电影", "movie"),
    "date": ("日期", "date"),
    "time": ("时间", "time"),
    "money": ("金额", "money"),
    "percent": ("百分比", "percentage"),
    "product": ("产品", "product"),
    "event": ("事件", "event"),
    "norp": ("群体", "group"),
    "fac": ("建筑设施", "facility"),
    "misc": ("其他", "miscellaneous"),
}
#: Weibo NER's second part: NAM a named mention (the name itself), NOM a nominal one ("the teacher").
TYPE_KINDS: dict[str, tuple[str, str]] = {"nam": ("", ""), "nom": ("泛指", "nominal ")}


def display_names(types: list[str], chinese: bool) -> dict[str, str]:
    """type code -> a name a model understands (PER.NOM -> 人名泛指 / nominal person), else the code itself.
    Two types never share a name (folded as validate folds them): the second keeps its code."""
    names: dict[str, str] = {}
    taken = {fold(code) for code in types}  # answers may name a type by its code too
    for code in types:
        head, _, kind = code.casefold().replace("-", ".").replace("_", ".").partition(".")
        base, extra = TYPE_NAMES.get(head), TYPE_KINDS.get(kind) if kind else ("", "")
        name = code
        if base and extra is not None:
            name = base[0] + extra[0] if chinese else extra[1] + base[1]
        if name != code and (fold(name) in taken or word_problem(name)):
            name = code
        names[code] = name
        taken.add(fold(name))
    return names


def fold(text: str) -> str:
    """As answers are read: width and case folded, edges trimmed."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def scaffold(found: Guess) -> Scaffold:
    names = display_names(list(found.counts), found.chinese)
    section = [
        "# entities: dataset entity type -> the name the model sees and answers with,",
        "# or {name, description} with a one-line description for the prompt.",
        f"# {len(found.counts)} entity types found (mentions each); names from common NER codes, else the code.",
        "entities:",
        *(f"  {yaml_key(t)}: {yaml_scalar(names[t])}   # {count}" for t, count in found.counts.most_common()),
    ]
    conll = found.fmt == "conll" and [
        "  # conll: the tag column (-1: the last), the scheme (auto reads it from the tags) and lenient",
        "  # (true: an I- with no B- starts an entity, as conlleval reads it; false: it is an error).",
        f"  conll: {{tag_column: -1, scheme: {found.fields['scheme']}, lenient: {found.fields['lenient']}}}",
    ]
    return Scaffold(
        data_lines=conll or [],
        section=section,
        variables="entity_types, answer_format",
        template_variables="entity_types ({name, description}), answer_format",
        baseline="a character CRF",
        gates_example="['entity_f1 >= 0.3']",
        template=TEMPLATES[found.chinese],
    )
