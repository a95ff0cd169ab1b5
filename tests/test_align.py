"""Timings for text-only transcripts: properties that must hold for any text and reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow.models import Segment, Word
from voxflow.transcribe.align import align_words, even_timing, normalise

TOKEN = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd", "Po"), max_codepoint=0x24F),
    min_size=1,
    max_size=10,
)
TEXT = st.lists(TOKEN, min_size=0, max_size=40).map(" ".join)
SPAN = st.integers(min_value=0, max_value=600_000)


@st.composite
def references(draw: st.DrawFn) -> tuple[list[Word], int]:
    """Timed words in order (as an engine gives them) inside a span."""
    tokens = draw(st.lists(TOKEN, max_size=40))
    span = draw(st.integers(min_value=0, max_value=120_000))
    cuts = sorted(draw(st.lists(st.integers(0, span), min_size=2 * len(tokens),
                                max_size=2 * len(tokens))))  # fmt: skip
    words = [Word(cuts[2 * i], cuts[2 * i + 1], t) for i, t in enumerate(tokens)]
    return words, span


def check(segments: tuple[Segment, ...], text: str, span: int) -> None:
    words = [w for s in segments for w in s.words]
    assert [w.word for w in words] == text.split()  # nothing lost, duplicated or reordered
    floor = 0
    for w in words:
        assert floor <= w.start_ms <= w.end_ms <= max(span, 0)
        floor = w.end_ms
    for s in segments:
        assert s.words and s.text == " ".join(w.word for w in s.words)
        assert (s.start_ms, s.end_ms) == (s.words[0].start_ms, s.words[-1].end_ms)


@given(TEXT, SPAN)
def test_even_timing_properties(text: str, span: int) -> None:
    segments = even_timing(text, span)
    check(segments, text, span)
    if text.split() and span > 0:
        assert segments[-1].end_ms <= span and segments[0].start_ms == 0


@settings(max_examples=200)
@given(TEXT, references())
def test_align_properties(text: str, ref: tuple[list[Word], int]) -> None:
    words, span = ref
    check(align_words(text, words, span), text, span)


@given(references())
def test_aligning_the_same_words_keeps_their_times(ref: tuple[list[Word], int]) -> None:
    words, span = ref
    words = [w for w in words if normalise(w.word)]
    text = " ".join(w.word for w in words)
    aligned = [w for s in align_words(text, words, span) for w in s.words]
    assert [(w.start_ms, w.end_ms) for w in aligned] == [(w.start_ms, w.end_ms) for w in words]


def test_alignment_borrows_times_and_fills_gaps() -> None:
    reference = [
        Word(0, 400, "and"), Word(400, 800, "so"), Word(1000, 1400, "my"),
        Word(1400, 2000, "fellow"), Word(2000, 2600, "americans"), Word(3000, 3400, "ask"),
        Word(3400, 3800, "not"),
    ]  # fmt: skip
    text = "And so, my dear fellow Americans: ask not."
    (segment,) = align_words(text, reference, 5000)
    times = {w.word: (w.start_ms, w.end_ms) for w in segment.words}
    assert times["And"] == (0, 400) and times["so,"] == (400, 800)
    assert times["Americans:"] == (2000, 2600) and times["not."] == (3400, 3800)
    assert 1400 <= times["dear"][0] <= times["dear"][1] <= 1400  # squeezed between neighbours
    assert segment.text == text


def test_one_segment_per_sentence() -> None:
    segments = even_timing("Hello there. How are you? Fine!", 3000)
    assert [s.text for s in segments] == ["Hello there.", "How are you?", "Fine!"]
    assert segments[0].start_ms == 0 and segments[-1].end_ms <= 3000


def test_replaced_words_share_the_replaced_span() -> None:
    reference = [Word(0, 500, "i"), Word(500, 1500, "scream"), Word(2000, 2500, "now")]
    (segment,) = align_words("ice cream now", reference, 3000)
    ice, cream, now = segment.words
    assert ice.start_ms == 0 and cream.end_ms == 1500 and ice.end_ms <= cream.start_ms
    assert (now.start_ms, now.end_ms) == (2000, 2500)


def test_empty_inputs() -> None:
    assert even_timing("", 1000) == ()
    assert align_words("   ", [Word(0, 10, "x")], 1000) == ()
    assert [w.word for s in align_words("a b", [], 1000) for w in s.words] == ["a", "b"]


def test_speakers_follow_the_reference() -> None:
    reference = [Word(0, 500, "hi", speaker="A"), Word(600, 900, "yo", speaker="B")]
    segments = align_words("hi yo", reference, 1000)
    assert [(s.text, s.speaker) for s in segments] == [("hi", "A"), ("yo", "B")]
