import pytest

from runner.tasks.classification.normalize import normalize_answer

TNEWS = {"news_culture": "文化", "news_tech": "科技", "news_finance": "金融", "news_story": "社会"}
AG = {"World": "World", "Sports": "Sports", "Business": "Business", "Sci/Tech": "Sci/Tech"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("文化", "news_culture"),
        (" 文化。\n", "news_culture"),
        ("「科技」", "news_tech"),
        ("类别：金融", "news_finance"),
        ("答案是：社会", "news_story"),
        ("这条新闻属于文化类别", "news_culture"),
        ("news_tech", "news_tech"),
        ("科技\n解释：这条新闻与金融无关", "news_tech"),  # the first line decides
        ("**金融**", "news_finance"),
        ("ｓｐｏｒｔｓ", None),  # full-width latin folds, but is not a TNEWS label
    ],
)
def test_chinese_answers(answer, expected):
    assert normalize_answer(answer, TNEWS) == expected


@pytest.mark.parametrize(
    "answer",
    ["", "我不知道", "可能是科技也可能是金融", "体育"],
)
def test_unparseable_or_ambiguous_answers_are_invalid(answer):
    assert normalize_answer(answer, TNEWS) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("sports", "Sports"),
        ("Category: Business.", "Business"),
        ("The topic is sci/tech", "Sci/Tech"),
        ("It is about the World Cup and Sports", None),  # two labels named: ambiguous
        ("Worldwide", None),  # word boundaries: not "World"
        ("ＳＰＯＲＴＳ", "Sports"),  # full-width folds to ASCII
    ],
)
def test_english_answers(answer, expected):
    assert normalize_answer(answer, AG) == expected
