"""The OpenRouter engines against the emulator: real HTTP over 127.0.0.1, real speech.

The emulator recognises with the embedded faster-whisper engine and speaks with Piper, so
words and audio are real. Each emulator is module-scoped; the local models load once per
process (the engine process, :mod:`voxflow.engines.process`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import wave
from pathlib import Path

import httpx
import pytest

from voxflow.engines.base import SynthesisOptions, TranscribeOptions
from voxflow.engines.openrouter import (
    OpenRouterSynthesizer,
    OpenRouterTranscriber,
    list_models,
    validate_model,
)
from voxflow.errors import (
    AuthError,
    BadResponse,
    EngineUnavailable,
    OutOfCredits,
    RequestRejected,
    UnknownModel,
)
from voxflow.models import AudioChunk, Transcript
from voxflow.settings import OpenRouterSettings, Settings
from voxflow.testing.emulator import (
    DEFAULT_KEY,
    EmulatorConfig,
    EmulatorHandle,
    parse_faults,
    start_emulator_in_thread,
)

_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = next(
    (
        d
        for d in (_ROOT / "sample_data" / "recordings", _ROOT.parent / "shared" / "sample-audio")
        if (d / "jfk.flac").is_file()
    ),
    _ROOT / "sample_data" / "recordings",
)
JFK = SAMPLES / "jfk.flac"
HARVARD = SAMPLES / "spk1_snt1.wav"
STT = "openai/whisper-large-v3"
TTS = "openai/gpt-4o-mini-tts-2025-12-15"

pytestmark = pytest.mark.skipif(not JFK.is_file(), reason="shared sample audio not found")


def make_settings(url: str, key: str = DEFAULT_KEY, **fields: object) -> Settings:
    fields.setdefault("max_attempts", 4)
    fields.setdefault("request_timeout_s", 60.0)
    settings = Settings(**fields)
    settings.__dict__["openrouter"] = OpenRouterSettings(api_key=key, base_url=url)
    return settings


class Waits(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def words_of(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def pcm_chunk(index: int, seconds: float = 1.0) -> AudioChunk:
    """Distinct 16 kHz PCM per index (a quiet ramp; fast_text never listens to it)."""
    n = int(16000 * seconds)
    pcm = b"".join(((index * 7 + i) % 200 - 100).to_bytes(2, "little", signed=True) for i in range(n))
    return AudioChunk(index, 0, int(seconds * 1000), pcm, "pcm")


@pytest.fixture(scope="module")
def emulator() -> EmulatorHandle:
    handle = start_emulator_in_thread(EmulatorConfig())
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return JFK.read_bytes()


def transcribe(engine: OpenRouterTranscriber, chunk: AudioChunk, **options: object) -> Transcript:
    return asyncio.run(engine.transcribe(chunk, TranscribeOptions(model=engine.model, **options)))


# ── speech to text ───────────────────────────────────────────────────────────────────────


def test_transcribes_real_speech(emulator: EmulatorHandle, jfk: bytes) -> None:
    emulator.reset()
    engine = OpenRouterTranscriber(STT, make_settings(emulator.url))
    t = transcribe(engine, AudioChunk(0, 0, 11_000, jfk, "flac"))
    assert "ask not what your country can do for you" in words_of(t.text)
    assert t.timed and t.language == "en"
    assert t.cost_usd == pytest.approx(11 * 10 * 0.00001, rel=0.05)  # usage.cost
    words = [w for s in t.segments for w in s.words]
    assert len(words) >= 20
    assert all(0 <= w.start_ms <= w.end_ms <= 11_000 for w in words)
    assert [w.start_ms for w in words] == sorted(w.start_ms for w in words)
    (entry,) = emulator.log()
    assert entry["endpoint"] == "transcriptions" and entry["status"] == 200
    assert entry["sha256"] == hashlib.sha256(jfk).hexdigest()


def test_text_only_model_answers_untimed(emulator: EmulatorHandle) -> None:
    with wave.open(str(HARVARD), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (16000, 1)
        pcm = wav.readframes(wav.getnframes())
    engine = OpenRouterTranscriber("google/chirp-3", make_settings(emulator.url))
    t = transcribe(engine, AudioChunk(0, 0, len(pcm) // 32, pcm, "pcm"), language="en")
    assert t.timed is False and t.segments == ()
    assert len(words_of(t.text).split()) >= 5
    assert t.cost_usd > 0


def test_diarizing_model_labels_speakers(emulator: EmulatorHandle, jfk: bytes) -> None:
    engine = OpenRouterTranscriber("elevenlabs/scribe-v1", make_settings(emulator.url))
    t = transcribe(engine, AudioChunk(0, 0, 11_000, jfk, "flac"), diarize=True)
    assert all(s.speaker for s in t.segments)
    assert all(w.speaker == s.speaker for s in t.segments for w in s.words)


def test_json_only_model_refuses_verbose_then_falls_back(emulator: EmulatorHandle) -> None:
    engine = OpenRouterTranscriber("openai/gpt-4o-mini-transcribe", make_settings(emulator.url), verbose=True)
    emulator.reset()
    with wave.open(str(HARVARD), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    t = transcribe(engine, AudioChunk(0, 0, len(pcm) // 32, pcm, "pcm"))
    assert t.text and t.timed is False
    assert [e["status"] for e in emulator.log() if e["endpoint"] == "transcriptions"] == [400, 200]


# ── errors over the wire ─────────────────────────────────────────────────────────────────


def test_bad_key_is_auth_error(emulator: EmulatorHandle) -> None:
    wrong = "sk-or-v1-wrong-key-9999999999"
    emulator.reset()
    engine = OpenRouterTranscriber(STT, make_settings(emulator.url, key=wrong))
    with pytest.raises(AuthError) as caught:
        transcribe(engine, pcm_chunk(0))
    assert wrong not in str(caught.value)
    log = emulator.log()
    assert [e["status"] for e in log] == [401]
    assert wrong not in json.dumps(log) and DEFAULT_KEY not in json.dumps(log)


def test_unknown_model_is_404(emulator: EmulatorHandle) -> None:
    engine = OpenRouterTranscriber("acme/no-such-model", make_settings(emulator.url))
    with pytest.raises(UnknownModel, match="acme/no-such-model"):
        transcribe(engine, pcm_chunk(0))


def test_request_validation_is_400(emulator: EmulatorHandle) -> None:
    url = f"{emulator.url}/audio/transcriptions"
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    good_audio = {"data": base64.b64encode(b"\x00\x00" * 1600).decode(), "format": "pcm"}
    bad = [
        {"model": STT, "input_audio": {"data": "not base64!!", "format": "pcm"}},
        {"model": STT},
        {"model": STT, "input_audio": {**good_audio, "format": "xyz"}},
        {"model": STT, "input_audio": good_audio, "diarize": True},
        {"model": STT, "input_audio": good_audio, "timestamp_granularities": ["word"]},
        {"model": STT, "input_audio": good_audio, "keyterms": ["NASA"]},
    ]
    with httpx.Client(headers=headers, timeout=30) as client:
        for body in bad:
            answer = client.post(url, json=body)
            assert answer.status_code == 400, body
            error = answer.json()["error"]
            assert error["code"] == 400 and error["message"]
    engine = OpenRouterTranscriber(STT, make_settings(emulator.url))
    with pytest.raises(RequestRejected, match="diarization") as caught:
        transcribe(engine, pcm_chunk(0), diarize=True)
    assert caught.value.status == 400


@pytest.fixture(scope="module")
def small() -> EmulatorHandle:
    handle = start_emulator_in_thread(max_body_bytes=64_000, credit_usd=0.0, fast_text=True)
    yield handle
    handle.stop()


def test_oversized_body_is_413(small: EmulatorHandle) -> None:
    engine = OpenRouterTranscriber(STT, make_settings(small.url))
    with pytest.raises(RequestRejected) as caught:
        transcribe(engine, pcm_chunk(0, seconds=3.0))  # 96 kB → 128 kB of base64
    assert caught.value.status == 413
    assert "too large" in str(caught.value)


def test_spent_credit_is_402(small: EmulatorHandle) -> None:
    engine = OpenRouterTranscriber(STT, make_settings(small.url))
    with pytest.raises(OutOfCredits):
        transcribe(engine, pcm_chunk(0, seconds=0.5))


# ── faults ───────────────────────────────────────────────────────────────────────────────

FAULTS = "429:0.1,500:0.04,502:0.03,503:0.03,524:0.02,529:0.02,drop:0.03,malformed:0.03"


@pytest.fixture(scope="module")
def faulty() -> EmulatorHandle:
    handle = start_emulator_in_thread(faults=FAULTS, seed=7, retry_after=2.0, fast_text=True)
    yield handle
    handle.stop()


def test_thirty_percent_faults_still_succeed(faulty: EmulatorHandle) -> None:
    assert sum(parse_faults(FAULTS).values()) == pytest.approx(0.30)
    faulty.reset()
    waits = Waits()
    engine = OpenRouterTranscriber(STT, make_settings(faulty.url, max_attempts=12), sleep=waits, pricing={})
    chunks = [pcm_chunk(i) for i in range(30)]

    async def all_chunks() -> list:
        return await asyncio.gather(*(engine.transcribe(c, TranscribeOptions(model=STT)) for c in chunks))

    transcripts = asyncio.run(all_chunks())
    assert all(t.text and t.timed for t in transcripts)
    log = faulty.log()
    assert len(log) == engine.requests_sent > len(chunks)  # some chunks were re-sent
    faults = {e["fault"] for e in log} - {None}
    assert len(faults) >= 3
    for chunk in chunks:
        sent = [e for e in log if e["sha256"] == hashlib.sha256(chunk.data).hexdigest()]
        # every try but the last met a fault (a "malformed" one is a 200 with a cut body)
        assert sent[-1]["status"] == 200 and sent[-1]["fault"] is None
        assert all(e["fault"] for e in sent[:-1])
    if any(e["fault"] == "429" for e in log):
        assert max(waits) >= 2.0  # Retry-After honoured


@pytest.mark.parametrize(("fault", "error"), [("drop", EngineUnavailable), ("malformed", BadResponse)])
def test_every_attempt_failing_surfaces_the_fault(fault: str, error: type) -> None:
    with start_emulator_in_thread(faults=f"{fault}:1.0", fast_text=True) as handle:
        engine = OpenRouterTranscriber(STT, make_settings(handle.url, max_attempts=3), sleep=Waits(), pricing={})
        with pytest.raises(error):
            transcribe(engine, pcm_chunk(0))
        assert len(handle.log()) == 3


def test_sixty_four_slow_requests_in_parallel() -> None:
    with start_emulator_in_thread(latency_ms=1000, fast_text=True) as handle:
        engine = OpenRouterTranscriber(STT, make_settings(handle.url), pricing={})
        chunks = [pcm_chunk(i, seconds=0.25) for i in range(64)]

        async def all_chunks() -> list:
            return await asyncio.gather(*(engine.transcribe(c, TranscribeOptions(model=STT)) for c in chunks))

        started = time.perf_counter()
        transcripts = asyncio.run(all_chunks())
        elapsed = time.perf_counter() - started
    assert len(transcripts) == 64 and all(t.text for t in transcripts)
    assert elapsed < 6.0, f"64 × 1 s requests took {elapsed:.1f} s: not concurrent"


# ── text to speech ───────────────────────────────────────────────────────────────────────

SENTENCE = "Ask not what your country can do for you."


def test_speech_pcm_matches_its_content_type(emulator: EmulatorHandle) -> None:
    with httpx.Client(timeout=60) as client:
        answer = client.post(
            f"{emulator.url}/audio/speech",
            headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
            json={"model": TTS, "input": SENTENCE, "voice": "alloy"},
        )
    assert answer.status_code == 200
    kind, *params = answer.headers["content-type"].split(";")
    params = dict(p.strip().split("=") for p in params)
    assert kind == "audio/pcm" and params == {"rate": "22050", "channels": "1"}
    assert answer.headers["x-generation-id"].startswith("gen-tts-")
    seconds = len(answer.content) / (2 * int(params["rate"]))
    assert len(answer.content) % 2 == 0 and 1.0 < seconds < 6.0

    engine = OpenRouterSynthesizer(TTS, make_settings(emulator.url), voice="nova")
    speech = asyncio.run(engine.synthesise(SENTENCE, SynthesisOptions(model=TTS)))
    assert speech.sample_rate == 22050 and speech.channels == 1
    assert abs(speech.duration_ms - seconds * 1000) < 300
    assert speech.generation_id and speech.generation_id.startswith("gen-tts-")
    assert speech.cost_usd > 0  # estimated from /models pricing


def test_speech_mp3_is_decoded(emulator: EmulatorHandle) -> None:
    engine = OpenRouterSynthesizer(TTS, make_settings(emulator.url), response_format="mp3")
    speech = asyncio.run(engine.synthesise(SENTENCE, SynthesisOptions(model=TTS)))
    assert speech.sample_rate == 24_000 and 1000 < speech.duration_ms < 6000


def test_speech_validation(emulator: EmulatorHandle) -> None:
    settings = make_settings(emulator.url)
    bad_voice = OpenRouterSynthesizer(TTS, settings, voice="bob")
    with pytest.raises(RequestRejected, match="Voice 'bob'"):
        asyncio.run(bad_voice.synthesise(SENTENCE, SynthesisOptions(model=TTS)))
    gemini = "google/gemini-2.5-flash-preview-tts"
    no_speed = OpenRouterSynthesizer(gemini, settings, voice="Kore")
    with pytest.raises(RequestRejected, match="speed"):
        asyncio.run(no_speed.synthesise(SENTENCE, SynthesisOptions(model=gemini, speed=1.5)))
    too_long = OpenRouterSynthesizer(TTS, settings, max_input_chars=10_000)
    with pytest.raises(RequestRejected, match="at most 4096"):
        asyncio.run(too_long.synthesise("word " * 1000, SynthesisOptions(model=TTS)))


# ── models and the log ───────────────────────────────────────────────────────────────────


def test_models_listing_and_validation(emulator: EmulatorHandle) -> None:
    settings = make_settings(emulator.url)
    stt = asyncio.run(list_models(settings, "transcription"))
    ids = {m["id"] for m in stt}
    assert {STT, "google/chirp-3", "openai/gpt-4o-transcribe"} <= ids
    whisper = next(m for m in stt if m["id"] == STT)
    assert whisper["pricing"]["audio"] == "0.00001" and whisper["supported_voices"] is None
    tts = asyncio.run(list_models(settings, "speech"))
    mini = next(m for m in tts if m["id"] == TTS)
    assert "alloy" in mini["supported_voices"]
    assert not {m["id"] for m in tts} & ids

    assert asyncio.run(validate_model(settings, TTS, "speech", "nova"))["id"] == TTS
    with pytest.raises(UnknownModel, match="voice"):
        asyncio.run(validate_model(settings, TTS, "speech", "bob"))
    with pytest.raises(UnknownModel):
        asyncio.run(validate_model(settings, "acme/nope", "transcription"))
    with pytest.raises(AuthError):
        asyncio.run(validate_model(make_settings(emulator.url, key="sk-or-bad"), STT, "transcription"))
    engine = OpenRouterTranscriber(STT, settings)
    asyncio.run(engine.prepare())
    assert engine.estimate_cost(60_000) == pytest.approx(0.006)


def test_log_endpoint_and_reset(emulator: EmulatorHandle) -> None:
    engine = OpenRouterTranscriber(STT, make_settings(emulator.url, key="sk-or-v1-nope-1234"))
    with pytest.raises(AuthError):
        transcribe(engine, pcm_chunk(0))
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{emulator.root}/_emulator/log")
        assert answer.status_code == 200 and isinstance(answer.json(), list)
        assert answer.json() and "sk-or-v1-nope-1234" not in answer.text
        assert DEFAULT_KEY not in answer.text
        assert client.post(f"{emulator.root}/_emulator/reset").status_code == 200
        assert client.get(f"{emulator.root}/_emulator/log").json() == []


def test_bad_fault_specs_are_refused() -> None:
    assert parse_faults("429:0.1, slow:0.05") == {"429": 0.1, "slow": 0.05}
    for spec in ("429", "teapot:0.1", "429:2", "500:0.6,502:0.6", "200:0.1"):
        with pytest.raises(ValueError):
            parse_faults(spec)


# ── garbage bodies: always a 400 in OpenRouter's shape (regressions for 80036fe) ──────────

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GARBAGE_BODIES = {
    "nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "nested inside a field": b'{"model": "openai/whisper-large-v3", "input_audio": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "an integer of 5000 digits": b'{"model": ' + b"7" * 5000 + b"}",
    "truncated": b'{"model": "openai/whisper-large-v3", "input_au',
    "not UTF-8": b'{"model": "\xff\xfe"}',
    "empty": b"",
    "a bare number": b"42",
    "a lone surrogate as model": b'{"model": "\\ud800"}',
}


@pytest.fixture(scope="module")
def quick() -> EmulatorHandle:
    handle = start_emulator_in_thread(fast_text=True)
    yield handle
    handle.stop()


def _assert_openrouter_400(answer: httpx.Response, what: object) -> None:
    assert answer.status_code == 400, (what, answer.status_code, answer.text[:200])
    assert answer.headers["content-type"].startswith("application/json"), what
    error = answer.json()["error"]
    assert error["code"] == 400 and isinstance(error["message"], str) and error["message"], what


@pytest.mark.parametrize("endpoint", ["audio/transcriptions", "audio/speech"])
@pytest.mark.parametrize("name", list(GARBAGE_BODIES))
def test_garbage_json_is_a_400_in_openrouter_shape(quick: EmulatorHandle, endpoint: str, name: str) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}", "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=60) as client:
        answer = client.post(f"{quick.url}/{endpoint}", content=GARBAGE_BODIES[name])
        _assert_openrouter_400(answer, name)
        assert client.get(f"{quick.url}/key").status_code == 200, "the emulator is still serving"
    assert quick.log()[-2]["status"] == 400


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "pcm", "wav", "verbose_json", "word", "en", STT, TTS, "alloy", "mp3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
STT_FIELDS = ["model", "input_audio", "input_audio.data", "input_audio.format", "response_format",
              "timestamp_granularities", "diarize", "keyterms", "temperature", "language", "provider"]  # fmt: skip
TTS_FIELDS = ["model", "input", "voice", "response_format", "speed", "instructions"]


def _with(body: dict, path: str, value: object) -> dict:
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=st.sampled_from(["transcriptions", "speech"]),
    field=st.integers(0, 100),
    value=JSON_VALUES,
    raw=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_any_mangled_request_is_answered_never_a_500(
    quick: EmulatorHandle, endpoint: str, field: int, value: object, raw: bytes | None
) -> None:
    """A valid request with one field replaced by any JSON value (NaN, lone surrogates, lists
    where strings belong …), or raw bytes: a 200 or a 4xx in OpenRouter's shape, never a 500."""
    if endpoint == "transcriptions":
        audio = {"data": base64.b64encode(b"\x00\x01" * 1600).decode(), "format": "pcm"}
        base = {"model": STT, "input_audio": audio, "response_format": "verbose_json"}
        body = _with(base, STT_FIELDS[field % len(STT_FIELDS)], value)
    else:
        body = _with(
            {"model": TTS, "input": "Hi.", "response_format": "pcm"}, TTS_FIELDS[field % len(TTS_FIELDS)], value
        )
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    headers = {"Authorization": f"Bearer {DEFAULT_KEY}", "Content-Type": "application/json"}
    answer = httpx.post(f"{quick.url}/audio/{endpoint}", content=content, headers=headers, timeout=60)
    assert answer.status_code in (200, 400, 404), (body if raw is None else raw, answer.status_code, answer.text[:200])
    if answer.status_code != 200:
        error = answer.json()["error"]
        assert error["code"] == answer.status_code and isinstance(error["message"], str)
