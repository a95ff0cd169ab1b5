"""Speech to text through OpenRouter: ``POST /audio/transcriptions`` and reading its answer."""

from __future__ import annotations

import base64
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from voxflow.engines.base import TranscribeOptions, Transcriber
from voxflow.engines.openrouter.client import json_object
from voxflow.engines.openrouter.engine import OpenRouterEngine
from voxflow.engines.openrouter.models import TEXT_ONLY_MODELS, transcription_cost
from voxflow.errors import BadResponse, RequestRejected
from voxflow.models import AudioChunk, Segment, Transcript, Word, language_code

if TYPE_CHECKING:
    from voxflow.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  # the documented upload limit
BODY_OVERHEAD_BYTES = 4096  # JSON fields around the base64 audio


class OpenRouterTranscriber(OpenRouterEngine, Transcriber):
    """Speech to text through ``POST /audio/transcriptions`` (JSON with base64 audio).

    Asks for ``verbose_json`` with segment and word times unless the model is known to
    answer text only (``TEXT_ONLY_MODELS``) or refuses it with a 400 — then it falls back to
    plain ``json`` for the rest of the run and returns ``Transcript(timed=False)``.
    """

    kind = "transcription"
    upload_format = "flac"
    max_chunk_s = 600.0

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        verbose: bool | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        **engine: Any,
    ) -> None:
        """``engine``: limiter, transport, sleep, provider, pricing (see :class:`OpenRouterEngine`)."""
        super().__init__(model, settings, **engine)
        self.verbose = (model not in TEXT_ONLY_MODELS) if verbose is None else verbose
        self.max_body_bytes = max_body_bytes

    def max_upload_bytes(self) -> int:
        """Largest encoded chunk that keeps the base64 JSON body under ``max_body_bytes``."""
        return (self.max_body_bytes - BODY_OVERHEAD_BYTES) * 3 // 4

    def estimate_cost(self, duration_ms: int) -> float:
        """USD this model would charge for ``duration_ms`` of audio (0.0 if pricing unknown)."""
        return transcription_cost(self.pricing, duration_ms) if self.pricing else 0.0

    def _payload(self, data_b64: str, fmt: str, options: TranscribeOptions, verbose: bool) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "input_audio": {"data": data_b64, "format": fmt},
        }
        if options.language:
            payload["language"] = options.language
        if verbose:
            payload["response_format"] = "verbose_json"
            payload["timestamp_granularities"] = ["segment", "word"]
        else:
            payload["response_format"] = "json"
        if options.temperature is not None:
            payload["temperature"] = options.temperature
        if options.diarize:
            payload["diarize"] = True
        if options.keyterms:
            payload["keyterms"] = list(options.keyterms)
        if self.provider:
            payload["provider"] = self.provider
        return payload

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        """What was said in ``chunk`` (times relative to its start)."""
        data_b64 = base64.b64encode(chunk.data).decode("ascii")
        what = f"{self.model} chunk {chunk.index}"
        if len(data_b64) + BODY_OVERHEAD_BYTES > self.max_body_bytes:
            raise RequestRejected(
                f"{what}: {len(chunk.data)} bytes of {chunk.format} is over the "
                f"{self.max_body_bytes}-byte request limit once base64-encoded; split it",
                status=413,
            )
        verbose = self.verbose or options.diarize
        call = self.client.call
        path = "/audio/transcriptions"
        try:
            body = self._payload(data_b64, chunk.format, options, verbose)
            data = await call("POST", path, json_object, body=body, what=what)
        except RequestRejected as exc:
            if not (exc.status == 400 and verbose and not options.diarize and _refuses(exc)):
                raise
            log.info("%s refuses verbose_json; asking for plain json from now on", self.model)
            self.verbose = False
            body = self._payload(data_b64, chunk.format, options, False)
            data = await call("POST", path, json_object, body=body, what=what)
        transcript = parse_transcript(data, chunk.duration_ms, language=options.language)
        if "cost" not in (data.get("usage") or {}):
            await self.load_pricing()
            transcript = _with_cost(transcript, self.estimate_cost(chunk.duration_ms))
        return transcript


def _refuses(exc: RequestRejected) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("verbose_json", "response_format", "timestamp_granularit"))


def _with_cost(t: Transcript, cost: float) -> Transcript:
    return Transcript(t.text, t.language, t.segments, cost, t.timed)


def _ms(seconds: Any) -> int:
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError("time is not finite")
    return max(0, round(value * 1000))


def _speaker(item: Mapping[str, Any]) -> str | None:
    label = item.get("speaker_label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    number = item.get("speaker")
    if number is None or number == "":
        return None
    return number if isinstance(number, str) else f"speaker_{number}"


def parse_transcript(data: Mapping[str, Any], duration_ms: int = 0, *, language: str | None = None) -> Transcript:
    """A Transcript from a ``json``/``verbose_json`` answer; times clamped to ``duration_ms``.

    Words are placed in the segment that holds their midpoint; words without segments are
    grouped into sentences; no segments and no words → ``timed=False`` (text only).
    """
    text = data.get("text")
    if not isinstance(text, str):
        raise BadResponse("OpenRouter answered without a 'text' field", transient=False)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    try:
        cost = float(usage.get("cost") or 0.0)
        words = _parse_words(data.get("words") or [], duration_ms)
        segments = _parse_segments(data.get("segments") or [], words, duration_ms)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        message = f"OpenRouter answered with malformed timings ({exc})"
        raise BadResponse(message, transient=False) from None
    heard = language_code(data.get("language"))
    lang = heard if heard != "und" else language_code(language)
    return Transcript(
        text=text.strip(),
        language=lang,
        segments=tuple(segments),
        cost_usd=cost if math.isfinite(cost) and cost > 0 else 0.0,
        timed=bool(segments),
    )


def _clamp(start: int, end: int, duration_ms: int) -> tuple[int, int]:
    if duration_ms > 0:
        start, end = min(start, duration_ms), min(end, duration_ms)
    return start, max(start, end)


def _parse_words(raw: Sequence[Any], duration_ms: int) -> list[Word]:
    words = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type", "word") != "word":
            continue  # audio events ("(laughter)") are not words
        token = str(item.get("word", "")).strip()
        if not token:
            continue
        start, end = _clamp(_ms(item["start"]), _ms(item["end"]), duration_ms)
        conf = item.get("confidence")
        words.append(Word(start, end, token, float(conf) if conf is not None else None, _speaker(item)))
    words.sort(key=lambda w: (w.start_ms, w.end_ms))
    return words


def _parse_segments(raw: Sequence[Any], words: list[Word], duration_ms: int) -> list[Segment]:
    if not raw:
        return _segments_from_words(words)
    spans = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        start, end = _clamp(_ms(item["start"]), _ms(item["end"]), duration_ms)
        logprob = item.get("avg_logprob")
        conf = round(math.exp(float(logprob)), 4) if logprob is not None else None
        spans.append((start, end, str(item.get("text", "")).strip(), _speaker(item), conf))
    spans.sort(key=lambda s: (s[0], s[1]))
    buckets: list[list[Word]] = [[] for _ in spans]
    for w in words:  # each word goes to the segment holding its midpoint (else the nearest)
        mid = (w.start_ms + w.end_ms) / 2
        best = min(
            range(len(spans)),
            key=lambda i: 0 if spans[i][0] <= mid <= spans[i][1] else
            min(abs(spans[i][0] - mid), abs(spans[i][1] - mid)),
        )  # fmt: skip
        buckets[best].append(w)
    segments = []
    for (start, end, text, speaker, conf), seg_words in zip(spans, buckets, strict=True):
        if not text and not seg_words:
            continue
        if speaker is None:
            speaker = _majority([w.speaker for w in seg_words])
        segments.append(
            Segment(
                start_ms=start,
                end_ms=end,
                text=text or " ".join(w.word for w in seg_words),
                words=tuple(seg_words),
                speaker=speaker,
                confidence=conf,
            )
        )
    return segments


def _majority(values: Sequence[str | None]) -> str | None:
    present = [v for v in values if v]
    return max(set(present), key=present.count) if present else None


_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*$")
_GAP_MS = 1500


def _segments_from_words(words: list[Word]) -> list[Segment]:
    """Sentence segments from words alone: cut at . ! ?, a speaker change or a long gap."""
    segments: list[Segment] = []
    current: list[Word] = []
    for w in words:
        if current and ((w.speaker != current[-1].speaker) or w.start_ms - current[-1].end_ms > _GAP_MS):
            segments.append(_segment_of(current))
            current = []
        current.append(w)
        if _SENTENCE_END.search(w.word):
            segments.append(_segment_of(current))
            current = []
    if current:
        segments.append(_segment_of(current))
    return segments


def _segment_of(words: list[Word]) -> Segment:
    return Segment(
        start_ms=words[0].start_ms,
        end_ms=max(w.end_ms for w in words),
        text=" ".join(w.word for w in words),
        words=tuple(words),
        speaker=_majority([w.speaker for w in words]),
    )
