"""OpenRouter engines against httpx.MockTransport: the error table, retries, parsing, secrets.

Real HTTP over loopback (the emulator) is in test_emulator.py; here every answer is scripted
so each rule of the reference's error table is checked exactly, and no test waits: the
engines get a ``sleep`` that records the waits instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from email.utils import formatdate

import httpx
import pytest

from voxflow.engines.base import SynthesisOptions, TranscribeOptions
from voxflow.engines.openrouter import (
    MAX_RETRY_AFTER_S,
    OpenRouterSynthesizer,
    OpenRouterTranscriber,
    count_requests,
    list_models,
    parse_audio_type,
    parse_retry_after,
    parse_transcript,
    redact,
    validate_model,
)
from voxflow.errors import (
    AuthError,
    BadResponse,
    EngineTimeout,
    EngineUnavailable,
    OutOfCredits,
    RateLimited,
    RequestRejected,
    UnknownModel,
)
from voxflow.limits import RequestLimiter
from voxflow.models import AudioChunk
from voxflow.settings import OpenRouterSettings, Settings

KEY = "sk-or-v1-test-secret-0123456789abcdef"
BASE = "https://openrouter.test/api/v1"
STT = "openai/whisper-large-v3"
TTS = "openai/gpt-4o-mini-tts-2025-12-15"
CHUNK = AudioChunk(index=3, offset_ms=0, duration_ms=5000, data=b"fLaC\x00fake-audio", format="flac")
OPTS = TranscribeOptions(model=STT)
MAX_ATTEMPTS = 4


def make_settings(base_url: str = BASE, key: str | None = KEY, **fields: object) -> Settings:
    fields.setdefault("max_attempts", MAX_ATTEMPTS)
    fields.setdefault("request_timeout_s", 5.0)
    settings = Settings(**fields)
    settings.__dict__["openrouter"] = OpenRouterSettings(
        api_key=key, base_url=base_url, app_url="https://voxflow.test", app_title="voxflow-tests"
    )
    return settings


class Waits(list):
    """An injectable sleep that records how long it was asked to wait."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Script:
    """A MockTransport handler answering from a list (the last answer repeats)."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def error(status: int, message: str = "went wrong", headers: dict | None = None) -> httpx.Response:
    body = {"error": {"code": status, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


def ok(body: dict | None = None) -> httpx.Response:
    return httpx.Response(200, json=body or {"text": "hello there", "usage": {"cost": 0.001}})


def transcriber(script: Script, waits: Waits | None = None, **kw: object) -> OpenRouterTranscriber:
    settings = kw.pop("settings", None) or make_settings()
    model = kw.pop("model", STT)
    return OpenRouterTranscriber(
        model,  # type: ignore[arg-type]
        settings,  # type: ignore[arg-type]
        transport=httpx.MockTransport(script),
        sleep=waits if waits is not None else Waits(),
        **kw,  # type: ignore[arg-type]
    )


def run(coro):
    return asyncio.run(coro)


# ── the error table ──────────────────────────────────────────────────────────────────────

TABLE = [
    (400, RequestRejected, False),
    (403, RequestRejected, False),
    (413, RequestRejected, False),
    (401, AuthError, False),
    (402, OutOfCredits, False),
    (404, UnknownModel, False),
    (408, EngineTimeout, True),
    (429, RateLimited, True),
    (500, EngineUnavailable, True),
    (502, EngineUnavailable, True),
    (503, EngineUnavailable, True),
    (504, EngineUnavailable, True),
    (524, EngineUnavailable, True),
    (529, EngineUnavailable, True),
]


@pytest.mark.parametrize(("status", "kind", "retried"), TABLE)
def test_status_maps_to_error_and_retry_rule(status: int, kind: type, retried: bool) -> None:
    script = Script(error(status, f"provider said no ({status})"))
    waits = Waits()
    engine = transcriber(script, waits)
    with pytest.raises(kind) as caught:
        run(engine.transcribe(CHUNK, OPTS))
    assert f"provider said no ({status})" in str(caught.value)  # the API's own message
    assert len(script.requests) == (MAX_ATTEMPTS if retried else 1)
    assert len(waits) == (MAX_ATTEMPTS - 1 if retried else 0)
    assert engine.requests_sent == len(script.requests)
    if kind is RequestRejected:
        assert caught.value.status == status


def test_transient_then_success_honours_retry_after() -> None:
    script = Script(error(503), error(429, "slow down", {"Retry-After": "7"}), ok())
    waits = Waits()
    transcript = run(transcriber(script, waits).transcribe(CHUNK, OPTS))
    assert transcript.text == "hello there"
    assert len(script.requests) == 3
    assert 0 <= waits[0] <= 1.0  # full jitter in [0, 1 s) for the first retry
    assert waits[1] >= 7.0  # Retry-After is a floor


def test_retry_after_as_http_date() -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    script = Script(error(429, headers={"Retry-After": when}), ok())
    waits = Waits()
    run(transcriber(script, waits).transcribe(CHUNK, OPTS))
    assert 27 <= waits[0] <= 31


def test_retry_after_is_capped() -> None:
    script = Script(error(503, headers={"Retry-After": "86400"}), ok())
    waits = Waits()
    run(transcriber(script, waits).transcribe(CHUNK, OPTS))
    assert waits == [MAX_RETRY_AFTER_S]


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(formatdate(now + 12, usegmt=True), now=now) == pytest.approx(12)
    assert parse_retry_after(formatdate(now - 12, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


def test_attempts_are_bounded_by_settings() -> None:
    script = Script(error(502))
    engine = transcriber(script, settings=make_settings(max_attempts=2))
    with pytest.raises(EngineUnavailable):
        run(engine.transcribe(CHUNK, OPTS))
    assert len(script.requests) == 2


def test_connection_errors_are_retried() -> None:
    script = Script(httpx.ConnectError("connection refused"), ok())
    assert run(transcriber(script).transcribe(CHUNK, OPTS)).text == "hello there"
    assert len(script.requests) == 2


def test_read_timeouts_become_engine_timeout() -> None:
    script = Script(httpx.ReadTimeout("timed out"))
    with pytest.raises(EngineTimeout):
        run(transcriber(script).transcribe(CHUNK, OPTS))
    assert len(script.requests) == MAX_ATTEMPTS


def test_our_own_timeout_bounds_a_request() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok()

    engine = OpenRouterTranscriber(
        STT,
        make_settings(request_timeout_s=0.05, max_attempts=2),
        transport=httpx.MockTransport(slow),
        sleep=Waits(),
    )
    started = time.perf_counter()
    with pytest.raises(EngineTimeout, match=r"within 0\.05 s"):
        run(engine.transcribe(CHUNK, OPTS))
    assert time.perf_counter() - started < 2


def test_truncated_json_is_retried() -> None:
    cut = httpx.Response(200, content=b'{"text": "hel', headers={"content-type": "application/json"})
    script = Script(cut, ok())
    assert run(transcriber(script).transcribe(CHUNK, OPTS)).text == "hello there"
    assert len(script.requests) == 2


def test_always_truncated_json_is_bad_response() -> None:
    cut = httpx.Response(200, content=b'{"text": "hel', headers={"content-type": "application/json"})
    script = Script(cut)
    with pytest.raises(BadResponse):
        run(transcriber(script).transcribe(CHUNK, OPTS))
    assert len(script.requests) == MAX_ATTEMPTS


def test_json_without_text_is_bad_response_at_once() -> None:
    script = Script(ok({"usage": {"cost": 0.1}}))
    with pytest.raises(BadResponse, match="'text'"):
        run(transcriber(script).transcribe(CHUNK, OPTS))
    assert len(script.requests) == 1


def test_missing_key_is_auth_error_without_a_request() -> None:
    script = Script(ok())
    with pytest.raises(AuthError, match="OPENROUTER_API_KEY"):
        run(transcriber(script, settings=make_settings(key=None)).transcribe(CHUNK, OPTS))
    assert script.requests == []


# ── requests we send ─────────────────────────────────────────────────────────────────────


def test_transcription_request_shape() -> None:
    script = Script(ok())
    provider = {"data_collection": "deny", "zdr": True}
    engine = transcriber(script, provider=provider)
    options = TranscribeOptions(model=STT, language="en", temperature=0.2, diarize=True, keyterms=("Kennedy", "NASA"))
    run(engine.transcribe(CHUNK, options))
    (request,) = script.requests
    assert str(request.url) == f"{BASE}/audio/transcriptions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["http-referer"] == "https://voxflow.test"
    assert request.headers["x-openrouter-title"] == "voxflow-tests"
    assert request.headers["content-type"] == "application/json"
    body = script.bodies[0]
    assert body["model"] == STT
    assert body["input_audio"] == {"data": base64.b64encode(CHUNK.data).decode(), "format": "flac"}
    assert body["language"] == "en"
    assert body["response_format"] == "verbose_json"
    assert body["timestamp_granularities"] == ["segment", "word"]
    assert body["temperature"] == 0.2
    assert body["diarize"] is True
    assert body["keyterms"] == ["Kennedy", "NASA"]
    assert body["provider"] == provider


def test_text_only_model_asks_for_plain_json() -> None:
    script = Script(ok())
    run(transcriber(script, model="google/chirp-3").transcribe(CHUNK, OPTS))
    body = script.bodies[0]
    assert body["response_format"] == "json"
    assert "timestamp_granularities" not in body
    assert "language" not in body and "diarize" not in body and "keyterms" not in body


def test_verbose_refusal_falls_back_to_json_for_the_run() -> None:
    refusal = error(400, "response_format 'verbose_json' is not supported by this model")
    script = Script(refusal, ok(), ok())
    engine = transcriber(script)
    first = run(engine.transcribe(CHUNK, OPTS))
    run(engine.transcribe(CHUNK, OPTS))
    formats = [b["response_format"] for b in script.bodies]
    assert formats == ["verbose_json", "json", "json"]
    assert first.timed is False and engine.verbose is False


def test_diarize_refusal_is_not_hidden_by_the_fallback() -> None:
    script = Script(error(400, "response_format 'verbose_json' is not supported"))
    options = TranscribeOptions(model=STT, diarize=True)
    with pytest.raises(RequestRejected):
        run(transcriber(script).transcribe(CHUNK, options))
    assert len(script.requests) == 1


def test_oversized_chunk_is_rejected_before_sending() -> None:
    script = Script(ok())
    engine = transcriber(script, max_body_bytes=8000)
    big = AudioChunk(0, 0, 1000, b"\x00" * 6000, "flac")
    with pytest.raises(RequestRejected) as caught:
        run(engine.transcribe(big, OPTS))
    assert caught.value.status == 413
    assert script.requests == []
    assert engine.max_upload_bytes() < 6000


# ── parsing answers ──────────────────────────────────────────────────────────────────────

VERBOSE = {
    "text": "Hello there. General Kenobi!",
    "language": "english",
    "duration": 4.2,
    "usage": {"cost": 0.0042, "seconds": 4.2},
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "avg_logprob": -0.1,
         "speaker": 0, "speaker_label": "A"},
        {"id": 1, "start": 1.8, "end": 4.4, "text": " General Kenobi!", "speaker": 1},
    ],
    "words": [
        {"word": " Hello", "start": 0.0, "end": 0.6, "confidence": 0.9, "speaker_label": "A"},
        {"word": "there.", "start": 0.6, "end": 1.5, "speaker_label": "A"},
        {"word": "(cough)", "start": 1.5, "end": 1.8, "type": "audio_event"},
        {"word": "General", "start": 1.8, "end": 2.5, "speaker": 1},
        {"word": "Kenobi!", "start": 2.5, "end": 4.4, "speaker": 1},
    ],
}  # fmt: skip


def test_verbose_json_with_speakers() -> None:
    script = Script(ok(VERBOSE))
    chunk = AudioChunk(0, 0, 4200, b"x", "flac")
    t = run(transcriber(script).transcribe(chunk, OPTS))
    assert t.timed and t.language == "en" and t.cost_usd == pytest.approx(0.0042)
    assert [s.text for s in t.segments] == ["Hello there.", "General Kenobi!"]
    first, second = t.segments
    assert (first.start_ms, first.end_ms, first.speaker) == (0, 1500, "A")
    assert first.confidence == pytest.approx(math.exp(-0.1), abs=1e-4)
    assert [(w.word, w.start_ms, w.end_ms, w.speaker) for w in first.words] == [
        ("Hello", 0, 600, "A"),
        ("there.", 600, 1500, "A"),
    ]
    assert first.words[0].confidence == 0.9
    assert second.speaker == "speaker_1"
    assert second.end_ms == 4200  # clamped to the chunk
    assert [w.word for w in second.words] == ["General", "Kenobi!"]  # the cough is no word


def test_words_without_segments_become_sentences() -> None:
    data = {k: v for k, v in VERBOSE.items() if k != "segments"}
    t = parse_transcript(data, 5000)
    assert [s.text for s in t.segments] == ["Hello there.", "General Kenobi!"]
    assert [s.speaker for s in t.segments] == ["A", "speaker_1"]


def test_text_only_answer_is_untimed() -> None:
    t = parse_transcript({"text": " Just words ", "usage": {"cost": 0.01}}, 3000, language="de")
    assert (t.text, t.language, t.segments, t.timed) == ("Just words", "de", (), False)
    assert t.cost_usd == 0.01


def test_malformed_timings_are_bad_response() -> None:
    with pytest.raises(BadResponse):
        parse_transcript({"text": "x", "words": [{"word": "x", "start": "soon", "end": 1}]})


def test_missing_usage_cost_is_estimated_from_pricing() -> None:
    script = Script(ok({"text": "hi"}))
    engine = transcriber(script, pricing={"audio": "0.00001", "prompt": "0", "completion": "0"})
    t = run(engine.transcribe(AudioChunk(0, 0, 60_000, b"x", "flac"), OPTS))
    assert t.cost_usd == pytest.approx(0.006)
    assert engine.estimate_cost(30_000) == pytest.approx(0.003)
    assert transcriber(Script(ok())).estimate_cost(30_000) == 0.0  # pricing unknown


# ── the limiter and counting ─────────────────────────────────────────────────────────────


def test_limiter_hears_429_and_successes() -> None:
    clock = [100.0]
    limiter_sleeps: list[float] = []

    async def limiter_sleep(seconds: float) -> None:
        limiter_sleeps.append(seconds)
        clock[0] += seconds

    limiter = RequestLimiter(4, clock=lambda: clock[0], sleep=limiter_sleep, recover_after=1)
    script = Script(error(429, headers={"Retry-After": "2"}), ok())
    engine = transcriber(script, limiter=limiter)
    run(engine.transcribe(CHUNK, OPTS))
    # halved to 2 by the 429, then one success (recover_after=1) gave one back
    assert limiter.limit == 3
    assert limiter.in_flight == 0 and limiter.peak_in_flight == 1
    assert limiter_sleeps == [pytest.approx(2.0)]  # the pause held the retry


def test_count_requests_across_tasks() -> None:
    script = Script(error(503), ok(), ok())
    engine = transcriber(script)

    async def both() -> int:
        with count_requests() as sent:
            await asyncio.gather(engine.transcribe(CHUNK, OPTS), engine.transcribe(CHUNK, OPTS))
        return sent.value

    assert run(both()) == 3
    assert engine.requests_sent == 3


# ── secrets ──────────────────────────────────────────────────────────────────────────────


def test_key_never_appears_in_errors_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    echo = f"invalid key {KEY} (Authorization: Bearer {KEY})"
    script = Script(error(503, echo), error(400, echo))
    engine = transcriber(script)
    with caplog.at_level(logging.DEBUG), pytest.raises(RequestRejected) as caught:
        run(engine.transcribe(CHUNK, OPTS))
    assert KEY not in str(caught.value)
    assert "invalid key" in str(caught.value)
    assert KEY not in caplog.text and "retry 1" in caplog.text
    assert KEY not in repr(engine) and KEY not in repr(engine.client)
    synth = OpenRouterSynthesizer(TTS, make_settings())
    assert KEY not in repr(synth)


def test_key_not_in_traceback_locals() -> None:
    """Rich/Typer tracebacks print frame locals: none of ours may hold the key in clear."""
    engine = transcriber(Script(error(400, "no")))
    with pytest.raises(RequestRejected) as caught:
        run(engine.transcribe(CHUNK, OPTS))
    below_test = caught.value.__traceback__.tb_next  # the test's own frame holds KEY
    frames = traceback.StackSummary.extract(traceback.walk_tb(below_test), capture_locals=True)
    text = "".join(frames.format())
    assert "_attempt" in text and "headers" in text
    assert KEY not in text


def test_redact() -> None:
    assert redact(f"key={KEY}!", KEY) == "key=***!"
    assert "sk-or-v1-other" not in redact("leaked sk-or-v1-otherkey123456 here")
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert redact("nothing secret") == "nothing secret"


# ── speech ───────────────────────────────────────────────────────────────────────────────


def audio(content: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.Response(200, content=content, headers={"content-type": content_type, **headers})


def synthesizer(script: Script, **kw: object) -> OpenRouterSynthesizer:
    kw.setdefault("pricing", {})  # known: no lazy /models look-up
    return OpenRouterSynthesizer(
        TTS,
        make_settings(),
        transport=httpx.MockTransport(script),
        sleep=Waits(),
        **kw,  # type: ignore[arg-type]
    )


def test_speech_pcm_rate_from_content_type() -> None:
    pcm = b"\x01\x00" * 24_000  # one second at 24 kHz
    script = Script(
        audio(
            pcm,
            "audio/pcm;rate=24000;channels=1",
            **{"X-Generation-Id": "gen-tts-123", "X-OpenRouter-Cost": "0.0021"},
        )
    )
    engine = synthesizer(script, voice="alloy")
    options = SynthesisOptions(model=TTS, instructions="calm", speed=1.25)
    speech = run(engine.synthesise("Hello.", options))
    assert (speech.sample_rate, speech.channels, speech.duration_ms) == (24_000, 1, 1000)
    assert speech.pcm == pcm
    assert speech.generation_id == "gen-tts-123" and speech.cost_usd == pytest.approx(0.0021)
    body = script.bodies[0]
    assert body == {"model": TTS, "input": "Hello.", "response_format": "pcm", "voice": "alloy",
                    "instructions": "calm", "speed": 1.25}  # fmt: skip
    assert script.requests[0].headers["accept"] == "audio/*"


def test_speech_cut_short_or_not_audio_is_retried() -> None:
    script = Script(
        audio(b"\x01\x00\x02", "audio/pcm;rate=22050;channels=1"),
        audio(b"<html>oops</html>", "text/html"),
        audio(b"\x01\x00" * 100, "audio/pcm;rate=22050;channels=1"),
    )
    speech = run(synthesizer(script).synthesise("Hi.", SynthesisOptions(model=TTS)))
    assert speech.sample_rate == 22050 and len(speech.pcm) == 200
    assert len(script.requests) == 3


def test_speech_mp3_is_decoded() -> None:
    from voxflow.media import encode_pcm

    tone = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 16000)).to_bytes(2, "little", signed=True) for i in range(16000)
    )
    mp3 = encode_pcm(tone, "mp3", sample_rate=16000)
    engine = synthesizer(Script(audio(mp3, "audio/mpeg")))
    speech = run(engine.synthesise("Hi.", SynthesisOptions(model=TTS)))
    assert speech.sample_rate == 24_000
    assert 900 <= speech.duration_ms <= 1200


def test_speech_text_over_the_limit_is_rejected_locally() -> None:
    script = Script(ok())
    engine = synthesizer(script, max_input_chars=10)
    with pytest.raises(RequestRejected) as caught:
        run(engine.synthesise("x" * 11, SynthesisOptions(model=TTS)))
    assert caught.value.status == 413 and script.requests == []
    assert OpenRouterSynthesizer(TTS, make_settings()).max_input_chars == 4096


def test_parse_audio_type() -> None:
    assert parse_audio_type("audio/pcm; rate=24000; channels=1") == (
        "audio/pcm",
        {"rate": "24000", "channels": "1"},
    )
    assert parse_audio_type("audio/mpeg") == ("audio/mpeg", {})


# ── models ───────────────────────────────────────────────────────────────────────────────

MODELS = {
    "data": [
        {"id": TTS, "name": "mini tts", "pricing": {"prompt": "0.0000006"},
         "supported_voices": ["alloy", "nova"]},
        {"id": "openai/tts-1", "name": "tts 1", "pricing": {}, "supported_voices": None},
    ]
}  # fmt: skip


def models_handler(key_status: int = 200) -> Script:
    def answer() -> httpx.Response:
        request = script.requests[-1]
        if request.url.path.endswith("/key"):
            return ok({"data": {"label": "k"}}) if key_status == 200 else error(key_status)
        assert request.url.params["output_modalities"] == "speech"
        return ok(MODELS)

    script = Script(answer)
    return script


def test_list_and_validate_models() -> None:
    script = models_handler()
    transport = httpx.MockTransport(script)
    models = run(list_models(make_settings(), "speech", transport))
    assert [m["id"] for m in models] == [TTS, "openai/tts-1"]
    info = run(validate_model(make_settings(), TTS, "speech", "nova", transport))
    assert info["supported_voices"] == ["alloy", "nova"]
    with pytest.raises(UnknownModel, match="not an OpenRouter speech model"):
        run(validate_model(make_settings(), "acme/nope", "speech", None, transport))
    with pytest.raises(UnknownModel, match="voice 'bob'"):
        run(validate_model(make_settings(), TTS, "speech", "bob", transport))


def test_validate_model_checks_the_key() -> None:
    transport = httpx.MockTransport(models_handler(key_status=401))
    with pytest.raises(AuthError):
        run(validate_model(make_settings(), TTS, "speech", None, transport))
