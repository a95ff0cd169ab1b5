"""Cue shaping rules (property-tested) and the sidecar writers' output formats."""

from __future__ import annotations

import itertools
import json
import math
import string
from dataclasses import dataclass

import pytest
import srt
import webvtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxflow.models import Cue, Segment, Word
from voxflow.subtitles import (
    WRITERS,
    JSONWriter,
    SidecarDoc,
    SRTWriter,
    SubtitleWriter,
    TXTWriter,
    VTTWriter,
    get_writer,
    render_sidecars,
    shape_cues,
    sidecar_name,
    wrap_lines,
)

LINE, LINES, CPS, MIN_CUE, MAX_CUE = 42, 2, 17.0, 1000, 7000
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class Case:
    """Generated engine output plus what shaping must preserve."""

    segments: tuple[Segment, ...]
    duration_ms: int
    words: tuple[str, ...]  # every word, in order
    speakers: tuple[str | None, ...]  # the speaker of each word
    clean: bool  # times sane (ordered, non-overlapping, inside the recording)


_letters = st.from_regex(r"[A-Za-zéß][A-Za-z'-]{0,9}", fullmatch=True)
_long = st.text(alphabet="abcdefghij", min_size=LINE + 1, max_size=70)
_punct = st.sampled_from(["", "", "", "", ".", "?", "!", "…", ",", ";", ":"])
_base = st.integers(0, 15).flatmap(lambda k: _long if k == 0 else _letters)
_word_text = st.builds(lambda w, p: w + p, _base, _punct)
_speaker = st.sampled_from([None, "SPEAKER_1", "SPEAKER_2"])


def mostly(usual: st.SearchStrategy[int], rare: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """``usual`` about four times in five, else ``rare``."""
    return st.integers(0, 4).flatmap(lambda k: rare if k == 0 else usual)


@st.composite
def cases(draw: st.DrawFn, clean: bool | None = None) -> Case:
    clean = draw(st.booleans()) if clean is None else clean
    gap = mostly(st.integers(0, 150), st.integers(0 if clean else -1500, 2500))
    length = mostly(st.integers(80, 500), st.integers(0, 1200) if clean else st.integers(-400, 9000))
    t = draw(st.integers(0, 3000))
    segments, words, speakers = [], [], []
    for _ in range(draw(st.integers(0, 6))):
        seg_speaker = draw(_speaker)
        texts = draw(st.lists(_word_text, min_size=0, max_size=30))
        with_words = draw(st.booleans()) or not texts
        seg_words, seg_start = [], t
        for text in texts:
            t += draw(gap) if seg_words else 0
            t = max(t, 0)
            end = t + draw(length)
            who = draw(st.sampled_from([*[None] * 15, "SPEAKER_3"])) if with_words else None
            seg_words.append(Word(t, end, text, speaker=who))
            speakers.append(who or seg_speaker)
            words.append(text)
            t = max(t, end) if clean else end
        seg_end = max([seg_start, *(w.end_ms for w in seg_words)])
        segments.append(
            Segment(
                seg_start,
                seg_end,
                " ".join(texts),
                tuple(seg_words) if with_words else (),
                speaker=seg_speaker,
            )
        )
        t = max(t + draw(gap), 0)
    slack = draw(st.integers(0, 5000) if clean else st.integers(-8000, 5000))
    duration = max(t + slack, 0)
    return Case(tuple(segments), duration, tuple(words), tuple(speakers), clean)


def cue_words(cues: list[Cue]) -> list[list[str]]:
    return [c.text.split() for c in cues]


# --------------------------------------------------------------------------- shaping rules


@PROPS
@given(cases())
def test_shaping_rules_hold_for_any_engine_output(case: Case) -> None:
    cues = shape_cues(case.segments, case.duration_ms)
    check_order_and_bounds(cues, case.duration_ms)
    check_text_preserved(cues, case)
    check_lines(cues)
    check_speakers(cues, case)
    check_durations(cues, case.duration_ms)
    check_reading_speed(cues, case.duration_ms)


def check_order_and_bounds(cues: list[Cue], duration_ms: int) -> None:
    for cue in cues:
        assert 0 <= cue.start_ms <= cue.end_ms <= duration_ms
    for a, b in itertools.pairwise(cues):
        assert a.end_ms <= b.start_ms


def check_text_preserved(cues: list[Cue], case: Case) -> None:
    """Neither lost nor duplicated, and never cut inside a word."""
    assert [w for ws in cue_words(cues) for w in ws] == list(case.words)
    assert all(c.text == c.text.strip() and "\n\n" not in c.text for c in cues)


def check_lines(cues: list[Cue]) -> None:
    """At most two lines, each at most 42 characters unless it is one long word."""
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= LINES
        for line in lines:
            assert line and (len(line) <= LINE or " " not in line)


def check_speakers(cues: list[Cue], case: Case) -> None:
    k = 0
    for cue, words in zip(cues, cue_words(cues), strict=True):
        assert set(case.speakers[k : k + len(words)]) == {cue.speaker}
        k += len(words)


def check_durations(cues: list[Cue], duration_ms: int) -> None:
    """At most 7 s unless one word; never zero-length; under 1 s only when boxed in by
    neighbours it cannot join."""
    for k, cue in enumerate(cues):
        span = cue.end_ms - cue.start_ms
        assert span <= MAX_CUE or len(cue.text.split()) == 1
        assert span > 0 or duration_ms < len(cues), f"zero-length cue {cue}"  # under 1 ms a cue: no room
        if span < min(MIN_CUE, duration_ms):
            assert_no_room_around(cues, k, duration_ms)
            for j in (k - 1, k + 1):
                if 0 <= j < len(cues) and touching(cues, min(j, k)):
                    assert not joinable(cues[min(j, k)], cues[max(j, k)]), "could join its neighbour"


def touching(cues: list[Cue], k: int) -> bool:
    return cues[k].end_ms >= cues[k + 1].start_ms


def joinable(a: Cue, b: Cue) -> bool:
    """Whether two neighbouring cues fit in one (speaker, lines, length) — an independent check."""
    words = a.text.split() + b.text.split()
    lines, width = 1, -1  # greedy filling needs the fewest lines
    for w in words:
        if width + 1 + len(w) > LINE:
            lines, width = lines + 1, len(w)
        else:
            width += 1 + len(w)
    fits = lines <= LINES and all(len(w) <= LINE for w in words)
    return a.speaker == b.speaker and fits and b.end_ms - a.start_ms <= MAX_CUE


def check_reading_speed(cues: list[Cue], duration_ms: int) -> None:
    """Faster than 17 cps only when the cue already runs into what follows."""
    for k, cue in enumerate(cues):
        span = cue.end_ms - cue.start_ms
        chars = len(cue.text.replace("\n", " "))
        if span < MAX_CUE and chars * 1000 > CPS * span:
            assert cue.end_ms >= room_after(cues, k, duration_ms)


@PROPS
@given(cases(clean=True))
def test_clean_input_cues_cover_their_words(case: Case) -> None:
    cues = shape_cues(case.segments, case.duration_ms)
    bounds = [b for s in case.segments for b in word_bounds(s)]
    slack = zero_word_slack(bounds, cues)
    k = 0
    for cue, words in zip(cues, cue_words(cues), strict=True):
        (earliest, latest, _, _), last = bounds[k], bounds[k + len(words) - 1]
        assert earliest - MIN_CUE <= cue.start_ms <= latest + slack  # lead-in is bounded
        assert cue.end_ms >= last[2] - slack
        k += len(words)


@PROPS
@given(cases(clean=True), st.integers(0, 300))
def test_min_gap_is_kept_where_words_allow(case: Case, gap: int) -> None:
    cues = shape_cues(case.segments, case.duration_ms, min_gap_ms=gap)
    assert [w for ws in cue_words(cues) for w in ws] == list(case.words)
    bounds = [b for s in case.segments for b in word_bounds(s)]
    slack = zero_word_slack(bounds, cues)
    firsts = list(itertools.accumulate(len(ws) for ws in cue_words(cues)))
    for k, (a, b) in enumerate(itertools.pairwise(cues)):
        last_a, first_b = bounds[firsts[k] - 1], bounds[firsts[k]]
        assert a.end_ms <= b.start_ms
        assert a.end_ms <= max(last_a[3], b.start_ms - gap) + slack  # only words may eat the gap
        assert b.start_ms >= min(a.end_ms + gap, first_b[0]) - slack


def zero_word_slack(bounds: list[tuple[int, int, int, int]], cues: list[Cue]) -> int:
    """Cues whose words all sit at one instant (0 ms words) cannot all cover it and last more
    than 0 ms: there each may miss it by 1 ms per cue."""
    return len(cues) if any(b[0] == b[3] for b in bounds) else 0


def word_bounds(seg: Segment) -> list[tuple[int, int, int, int]]:
    """Per word of clean input: lowest and highest start, lowest and highest end.

    Exact for words; a text-only segment only bounds its words by the segment.
    """
    if seg.words:
        return [(w.start_ms, w.start_ms, w.end_ms, w.end_ms) for w in seg.words]
    s, e = seg.start_ms, seg.end_ms
    return [(s, e, s, e) for _ in seg.text.split()]


def room_after(cues: list[Cue], k: int, duration_ms: int, gap: int = 0) -> int:
    nxt = cues[k + 1].start_ms - gap if k + 1 < len(cues) else duration_ms
    return min(nxt, duration_ms)


def assert_no_room_around(cues: list[Cue], k: int, duration_ms: int) -> None:
    """A short cue must already touch what follows and what precedes it."""
    assert cues[k].end_ms >= room_after(cues, k, duration_ms)
    earliest = cues[k - 1].end_ms if k else 0
    assert cues[k].start_ms <= earliest


# --------------------------------------------------------------------------- hand examples


def timed(
    text: str,
    *,
    start: int = 0,
    step: int = 300,
    pause_after: int = -1,
    pause: int = 0,
    speaker: str | None = None,
) -> Segment:
    """A segment whose words follow each other ``step`` ms apart (250 ms long)."""
    words, t = [], start
    for i, w in enumerate(text.split()):
        words.append(Word(t, t + 250, w))
        t += step + (pause if i == pause_after else 0)
    return Segment(start, words[-1].end_ms, text, tuple(words), speaker=speaker)


def test_empty_input() -> None:
    assert shape_cues([], 10_000) == []
    assert shape_cues([Segment(0, 1000, "   ")], 10_000) == []


def test_sentence_end_is_preferred_over_balance() -> None:
    text = "Short opening sentence here. Then another sentence that continues for quite a while and then stops."
    cues = shape_cues([timed(text)], 60_000)
    assert [c.text.replace("\n", " ") for c in cues] == [
        "Short opening sentence here.",
        "Then another sentence that continues for quite a while and then stops.",
    ]


def test_pause_is_preferred_over_an_arbitrary_word() -> None:
    text = (
        "we walked along the river bank until the evening came and then "
        "we turned around and went all the way back home again"
    )
    words = text.split()
    k = words.index("came")
    cues = shape_cues([timed(" ".join(words), pause_after=k, pause=800)], 60_000)
    assert len(cues) == 2
    assert cues[0].text.split()[-1] == "came"


def test_clause_punctuation_is_preferred_over_an_arbitrary_word() -> None:
    text = "if you look closely at the map on the wall, you can see every road and river that crosses the valley below"
    cues = shape_cues([timed(text)], 60_000)
    assert len(cues) == 2
    assert cues[0].text.split()[-1] == "wall,"


def test_a_long_pause_splits_a_short_cue() -> None:
    seg = timed("Hello there. How are you?", pause_after=1, pause=3000)
    cues = shape_cues([seg], 60_000)
    assert [c.text for c in cues] == ["Hello there.", "How are you?"]


def test_segment_without_words_is_spread_by_characters() -> None:
    text = f"{'a' * 50} {'b' * 50} {'c' * 49}"  # 151 characters over 15.1 s: 100 ms each
    cues = shape_cues([Segment(1_000, 16_100, text)], 20_000)
    # each word takes 5 s to say, so two would exceed 7 s: one cue per word
    assert [(c.start_ms, c.end_ms, c.text) for c in cues] == [
        (1_000, 6_000, "a" * 50),
        (6_100, 11_100, "b" * 50),
        (11_200, 16_100, "c" * 49),
    ]
    short = shape_cues([Segment(0, 2_000, "one two three four")], 5_000)
    assert short == [Cue(0, 2_000, "one two three four")]


def test_two_line_cues_are_balanced() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    assert wrap_lines(text.split()) == ("one two three four five six seven\neight nine ten eleven twelve")
    assert wrap_lines(["short", "line"]) == "short line"
    long_word = "x" * 50
    assert wrap_lines(["a", long_word, "b"]) == f"a\n{long_word}\nb"


def test_a_word_longer_than_a_line_stands_alone() -> None:
    long_word = "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamten"
    cues = shape_cues([timed(f"the word {long_word} is long")], 60_000)
    lines = [line for c in cues for line in c.text.split("\n")]
    assert long_word in lines


def test_short_cue_extends_into_silence_for_reading() -> None:
    seg = timed("This sentence has forty characters here.", step=100)
    cues = shape_cues([seg, timed("Next.", start=10_000)], 20_000)
    needed = math.ceil(len(cues[0].text.replace("\n", " ")) * 1000 / CPS)
    assert cues[0].start_ms == 0
    assert cues[0].end_ms == needed


def test_extension_stops_at_the_next_cue_and_the_recording_end() -> None:
    first = timed("Quick words said very fast indeed.", step=100, speaker="A")
    second = timed("Then.", start=1500, speaker="B")
    cues = shape_cues([first, second], 1_800)
    # The first cue stops at the next; the last (0.3 s of room after its word) takes the
    # silence the first does not need beyond 1 s: it starts 0.5 s before its word.
    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 1000), (1000, 1800)]


def test_last_short_cue_starts_earlier_when_the_recording_ends() -> None:
    cues = shape_cues([Segment(9_700, 9_900, "Bye.")], 10_000)
    assert cues == [Cue(9_000, 10_000, "Bye.", None)]


def test_no_zero_length_cue_at_the_recording_end() -> None:
    """Words an engine put at the very end (spk1_snt1: a hallucinated tail at 2.78 s of a
    2.78 s clip) share the last cue's time instead of getting a 0 ms cue."""
    said = timed("The child almost hurt the small dog.", step=380)
    tail = Segment(2_780, 2_780, "Thank you.", (Word(2_780, 2_780, "Thank"), Word(2_780, 2_780, "you.")))
    cues = shape_cues([said, tail], 2_780)
    assert all(c.end_ms - c.start_ms >= 1_000 for c in cues), cues
    assert " ".join(c.text.replace("\n", " ") for c in cues).endswith("dog. Thank you.")


def test_speaker_change_breaks_the_cue() -> None:
    cues = shape_cues([timed("Hi.", speaker="A"), timed("Hello.", start=400, speaker="B")], 10_000)
    assert [(c.text, c.speaker) for c in cues] == [("Hi.", "A"), ("Hello.", "B")]


def test_engine_defects_are_tamed() -> None:
    words = (Word(500, 100, "backwards"), Word(400, 400, "zero"), Word(50_000, 60_000, "late"))
    segs = [Segment(0, 1000, "", words), Segment(200, 900, "overlapping segment")]
    cues = shape_cues(segs, 5_000)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == ("backwards zero late overlapping segment")
    assert all(0 <= c.start_ms <= c.end_ms <= 5_000 for c in cues)
    assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(cues))


def test_whisper_word_pieces_and_loose_punctuation_are_glued() -> None:
    spaced = Segment(
        0,
        2000,
        "",
        (Word(0, 300, " Hel"), Word(300, 500, "lo"), Word(600, 900, " world"), Word(900, 950, ",")),
    )
    plain = Segment(3000, 5000, "", (Word(3000, 3400, "Yes"), Word(3400, 3500, "!")))
    cues = shape_cues([spaced, plain], 10_000)
    assert " ".join(c.text for c in cues) == "Hello world, Yes!"


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        shape_cues([], 1000, min_cue_ms=8000, max_cue_ms=7000)
    with pytest.raises(ValueError):
        shape_cues([], 1000, max_cps=0)


# --------------------------------------------------------------------------- writers


cue_text = st.lists(
    st.text(alphabet=string.ascii_letters + "&<>'\".,!?é", min_size=1, max_size=12),
    min_size=1,
    max_size=8,
)


@st.composite
def cue_lists(draw: st.DrawFn) -> list[Cue]:
    cues, t = [], 0
    for words in draw(st.lists(cue_text, max_size=8)):
        t += draw(st.integers(0, 5000))
        end = t + draw(st.integers(0, 7000))
        cues.append(Cue(t, end, wrap_lines(words, 20), draw(_speaker)))
        t = end
    return cues


def doc_of(cues: list[Cue], segments: tuple[Segment, ...] = (), text: str = "") -> SidecarDoc:
    end = cues[-1].end_ms if cues else 0
    return SidecarDoc(text, "en", "tiny", end, segments, tuple(cues), {"run_id": "r1"})


def prefixed(cue: Cue) -> str:
    return f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text


@PROPS
@given(cue_lists())
def test_srt_parses_strictly_and_round_trips(cues: list[Cue]) -> None:
    out = SRTWriter().render(doc_of(cues))
    subs = list(srt.parse(out))  # raises on anything it would have to skip
    assert [s.index for s in subs] == list(range(1, len(cues) + 1))
    assert [(s.start, s.end) for s in subs] == [
        (srt.timedelta(milliseconds=c.start_ms), srt.timedelta(milliseconds=c.end_ms)) for c in cues
    ]
    assert [s.content for s in subs] == [prefixed(c) for c in cues]
    assert srt.compose(subs, reindex=False) == out


@PROPS
@given(cue_lists())
def test_vtt_parses_with_webvtt_py(cues: list[Cue]) -> None:
    out = VTTWriter().render(doc_of(cues))
    parsed = webvtt.from_string(out)
    assert len(parsed.captions) == len(cues)
    for caption, cue in zip(parsed.captions, cues, strict=True):
        assert caption.start_time.in_milliseconds() == cue.start_ms
        assert caption.end_time.in_milliseconds() == cue.end_ms
        assert caption.voice == (escape(cue.speaker) if cue.speaker else None)
        assert caption.text == escape(cue.text)


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_vtt_hand_example() -> None:
    cues = [Cue(1_000, 3_500, "Hello <there>\n& welcome", "Ann"), Cue(3_661_001, 3_662_000, "x")]
    assert VTTWriter().render(doc_of(cues)) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:03.500\n<v Ann>Hello &lt;there&gt;\n&amp; welcome\n\n"
        "01:01:01.001 --> 01:01:02.000\nx\n"
    )


def test_srt_keeps_zero_length_cues() -> None:
    out = SRTWriter().render(doc_of([Cue(1000, 1000, "blink")]))
    assert [s.content for s in srt.parse(out)] == ["blink"]


def test_empty_doc_renders_empty_but_valid() -> None:
    doc = doc_of([])
    assert SRTWriter().render(doc) == ""
    assert len(webvtt.from_string(VTTWriter().render(doc)).captions) == 0
    assert TXTWriter().render(doc) == ""
    assert json.loads(JSONWriter().render(doc))["segments"] == []


def test_json_has_seconds_words_and_extra() -> None:
    words = (Word(1234, 1500, " Hi", 0.91), Word(1500, 2000, " there.", None, "B"))
    seg = Segment(1234, 2000, " Hi there.", words, speaker="A", confidence=0.8)
    doc = SidecarDoc("Hi there.", "en", "tiny", 61_001, (seg,), (), {"run_id": "r1", "text": "ignored"})
    data = json.loads(JSONWriter().render(doc))
    assert data["text"] == "Hi there." and data["run_id"] == "r1"
    assert (data["language"], data["model"], data["duration_s"]) == ("en", "tiny", 61.001)
    assert data["segments"][0] == {
        "start": 1.234,
        "end": 2.0,
        "text": "Hi there.",
        "speaker": "A",
        "confidence": 0.8,
        "words": [
            {"start": 1.234, "end": 1.5, "word": "Hi", "confidence": 0.91, "speaker": "A"},
            {"start": 1.5, "end": 2.0, "word": "there.", "confidence": None, "speaker": "B"},
        ],
    }
    assert data["words"] == data["segments"][0]["words"]


def test_txt_paragraphs_follow_speakers_and_pauses() -> None:
    segs = (
        Segment(0, 1000, "Hello there.", speaker="A"),
        Segment(1100, 2000, "How are you?", speaker="A"),
        Segment(2100, 3000, "Fine, thanks.", speaker="B"),
        Segment(9000, 9500, "Later on.", speaker="B"),
    )
    text = " ".join(s.text for s in segs)
    out = TXTWriter().render(SidecarDoc(text, "en", "m", 10_000, segs))
    assert out == "A: Hello there. How are you?\n\nB: Fine, thanks.\n\nB: Later on.\n"


def test_txt_reflows_plain_text_into_paragraphs() -> None:
    sentence = "This sentence is about fifty characters long, yes. "
    text = "  First   para.\n\n\n" + sentence * 30
    out = TXTWriter().render(SidecarDoc(text, "en", "m", 0))
    paragraphs = out.split("\n\n")
    assert out.endswith(".\n") and paragraphs[0] == "First para."
    assert len(paragraphs) > 2
    assert " ".join(out.split()) == " ".join(text.split())


def test_writer_registry_and_names() -> None:
    assert set(WRITERS) == {"srt", "vtt", "txt", "json"}
    for fmt, cls in WRITERS.items():
        writer = get_writer(fmt.upper())
        assert isinstance(writer, cls) and isinstance(writer, SubtitleWriter)
        assert writer.extension == fmt
    with pytest.raises(ValueError, match="unknown"):
        get_writer("docx")
    doc = SidecarDoc.build("Hi.", "en", "m", 5_000, [timed("Hi.")])
    assert doc.cues == (Cue(0, 1000, "Hi.", None),)
    assert set(render_sidecars(doc, ["srt", "vtt", "txt", "json"])) == set(WRITERS)
    assert sidecar_name("movie", "en", "srt") == "movie.en.srt"
    assert sidecar_name("movie", "", "vtt") == "movie.und.vtt"
