"""A local stand-in for OpenRouter's audio API (and its chat completions), served over real HTTP on 127.0.0.1.

No machine here reaches the real service, so tests, benchmarks and demos talk to this
instead (``OPENROUTER_BASE_URL=http://127.0.0.1:PORT/api/v1``). It follows the reference
(shared/reference/openrouter-audio-api.md) and OpenRouter's SDK:

* ``POST /api/v1/audio/transcriptions`` — JSON with base64 ``input_audio``. The audio is
  decoded with ffmpeg to 16 kHz PCM and recognised by the embedded engine (faster-whisper),
  so the words are real; ``verbose_json`` adds segments and words with times. ``usage.cost``
  is billed from the audio's seconds (``AUDIO_TOKENS_PER_SECOND`` audio tokens a second at
  the model's ``pricing.audio``). Per model: text-only models (``google/chirp-3``) answer
  ``text`` alone, json-only models (``openai/gpt-4o-*-transcribe``) refuse ``verbose_json``
  with a 400, diarizing models label speakers (a fake diarizer: segments alternate between
  ``speaker_0`` and ``speaker_1``), keyterms are refused by models that do not take them.
* ``POST /api/v1/audio/speech`` — speech from the embedded Piper voice, whatever ``voice``
  is asked for (it must be one of the model's ``supported_voices``): ``pcm`` answers
  ``Content-Type: audio/pcm;rate=22050;channels=1``, ``mp3`` is encoded with ffmpeg;
  ``X-Generation-Id: gen-tts-…``.
* ``POST /api/v1/chat/completions`` — OpenAI shape (``model``, ``messages``, optional
  ``response_format``), answered deterministically (module ``chat``): a translation request
  (a message says ``Target language: <code>``, the last user message holds numbered lines
  ``N. text``) gets the same numbered lines back, each text prefixed with ``[<code>] ``
  (``3. Hello`` → ``3. [fr] Hello``), so a test knows every line it must get; a minutes
  request (a system message asks for ``minutes JSON``) gets a JSON summary, decision and
  action item citing timestamps of the prompt's ``[mm:ss] …`` lines (``bad_cites=N``: the
  first N answers cite ``59:59``, which no prompt holds; ``prose_minutes=N``: the first N
  answer in prose, not JSON; the log notes ``minutes``, ``prompt_tokens``,
  ``completion_tokens`` and ``context_length``); anything else gets ``[emulator] <first
  line of the last user message>``. ``choices[0].message.content``,
  ``usage`` with ``prompt_tokens``/``completion_tokens`` (characters / 4) and ``cost`` at the
  model's prices; 400 past the model's ``context_length``. Chat requests draw faults from
  ``chat_faults`` (default: ``faults``), at most ``chat_fault_limit`` of them;
  ``lose_line_for=("de",)`` drops the last line of German translations (``lose_line_limit``
  times, or always), for tests of replies that lose a line.
* ``GET /api/v1/models?output_modalities=transcription|speech|text|all`` — ids, names, pricing
  (USD strings per token) and ``supported_voices``; ``GET /api/v1/key`` — the key's data.
* Errors are OpenRouter-shaped ``{"error": {"code", "message"}}``: 401 bad key, 404 unknown
  model, 400 bad request (bad base64, missing fields, unsupported format or option, diarize
  without verbose_json, text too long), 413 body over ``max_body_bytes``, 402 once
  ``credit_usd`` is spent.
* Faults: ``faults="429:0.1,500:0.05,slow:0.05,drop:0.02,malformed:0.02"`` — each audio
  request draws at most one (seeded): an HTTP status (429 carries ``Retry-After``), ``slow``
  (answers after ``slow_ms`` more), ``drop`` (the connection closes mid-answer) or
  ``malformed`` (200 with a truncated JSON body / an HTML page instead of audio).
* ``fast_text=True`` skips recognition: the text is a fixed word list walked by the audio's
  sha256 (about 2.5 words a second, evenly timed) — deterministic, for benchmarks that
  measure voxflow rather than Whisper. Real recognition is the default.
* ``GET /_emulator/log`` — one JSON record per request (time, endpoint, model, sha256 of the
  decoded audio or the input text, status, fault); ``POST /_emulator/reset`` clears it.
  Neither the log nor any answer ever contains an API key.

Use :func:`start_emulator_in_thread` in tests, :func:`serve` / :func:`run_emulator` from a
shell. The modules:

* ``config``: models, prices and :class:`EmulatorConfig`;
* ``faults``: the fault spec, the seeded draw and each fault's answer;
* ``protocol``: OpenRouter's wire conventions (error answers, the key, JSON bodies, prices);
* ``transcription`` / ``speech`` / ``chat`` / ``listings``: each endpoint's validation and answer body;
* ``state``: one emulator's request log, spent credit, threads and engines;
* ``app``: the Starlette app, one module-level handler a route;
* ``server``: uvicorn on 127.0.0.1, in the foreground or in a thread.
"""

from voxflow.testing.emulator.app import create_app
from voxflow.testing.emulator.config import API_PREFIX, DEFAULT_KEY, ChatModel, EmulatorConfig, SttModel, TtsModel
from voxflow.testing.emulator.faults import parse_faults
from voxflow.testing.emulator.server import EmulatorHandle, run_emulator, serve, start_emulator_in_thread
from voxflow.testing.emulator.state import EmulatorState
from voxflow.testing.emulator.transcription import fake_transcript

__all__ = [
    "API_PREFIX",
    "DEFAULT_KEY",
    "ChatModel",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorState",
    "SttModel",
    "TtsModel",
    "create_app",
    "fake_transcript",
    "parse_faults",
    "run_emulator",
    "serve",
    "start_emulator_in_thread",
]
