"""What the files say about the book: ID3 tags with CHAP/CTOC chapter frames (mutagen), the
ffmetadata chapters of the M4B, and the M3U playlist."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from voxflow.errors import OutputError
from voxflow.narrate.assembly.options import BookMeta
from voxflow.narrate.assembly.timeline import ChapterSpan, FilePlan


def tag_mp3(path: str, plan: FilePlan, meta: BookMeta, *, total: int, chapters: Sequence[ChapterSpan]) -> None:
    """ID3v2.3: title, artist = author, album, track n/N, genre, cover, CHAP/CTOC frames."""
    from mutagen.id3 import ID3

    tags = ID3()
    for frame in [*_book_frames(plan, meta, total), *_chapter_frames(chapters)]:
        tags.add(frame)
    try:
        tags.save(path, v2_version=3)
    except Exception as exc:  # mutagen raises its own error types
        raise OutputError(f"cannot write ID3 tags to {path}: {exc}") from exc


def _book_frames(plan: FilePlan, meta: BookMeta, total: int) -> list[Any]:
    """The file's title and track, and what it says about the book (author, narrator, cover)."""
    from mutagen.id3 import APIC, COMM, TALB, TCON, TIT2, TLAN, TPE1, TPE2, TRCK, TXXX

    author = meta.author or "Unknown"
    frames = [
        TIT2(encoding=3, text=[plan.title]),
        TPE1(encoding=3, text=[author]),
        TPE2(encoding=3, text=[author]),
        TALB(encoding=3, text=[meta.title]),
        TRCK(encoding=3, text=[f"{plan.number}/{total}"]),
        TCON(encoding=3, text=["Audiobook"]),
        TXXX(encoding=3, desc="NARRATOR", text=[meta.narrator]),
    ]
    if meta.language:
        frames.append(TLAN(encoding=3, text=[meta.language]))
    if meta.comment:
        frames.append(COMM(encoding=3, lang="eng", desc="", text=[meta.comment]))
    if meta.cover:
        mime = meta.cover_mime or "image/jpeg"
        frames.append(APIC(encoding=3, mime=mime, type=3, desc="Cover", data=meta.cover))
    return frames


def _chapter_frames(chapters: Sequence[ChapterSpan]) -> list[Any]:
    """A CTOC table of contents and one CHAP frame per chapter, titled."""
    from mutagen.id3 import CHAP, CTOC, TIT2, CTOCFlags

    ids = [f"chp{k}" for k in range(len(chapters))]
    flags = CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED
    frames: list[Any] = [
        CTOC(element_id="toc", flags=flags, child_element_ids=ids, sub_frames=[TIT2(encoding=3, text=["Chapters"])])
    ]
    for cid, span in zip(ids, chapters, strict=True):
        frames.append(
            CHAP(
                element_id=cid,
                start_time=span.start_ms,
                end_time=span.end_ms,
                start_offset=0xFFFFFFFF,
                end_offset=0xFFFFFFFF,
                sub_frames=[TIT2(encoding=3, text=[span.title])],
            )
        )
    return frames


def render_m3u(meta: BookMeta, files: Sequence[tuple[str, str, int]]) -> str:
    """Extended M3U: (file name, title, duration ms) per entry, paths relative."""
    lines = ["#EXTM3U", f"#PLAYLIST:{meta.title}"]
    for name, title, ms in files:
        who = f"{meta.author} - " if meta.author else ""
        lines += [f"#EXTINF:{round(ms / 1000)},{who}{title}", name]
    return "\n".join(lines) + "\n"


def ffmetadata(meta: BookMeta, chapters: Sequence[ChapterSpan]) -> str:
    """An ffmetadata file: book tags and one [CHAPTER] per chapter (for the M4B)."""

    def esc(value: str) -> str:
        return re.sub(r"([=;#\\\n])", r"\\\1", value)

    lines = [
        ";FFMETADATA1",
        f"title={esc(meta.title)}",
        f"album={esc(meta.title)}",
        f"artist={esc(meta.author or 'Unknown')}",
        "genre=Audiobook",
        f"comment={esc(meta.comment or meta.narrator)}",
    ]
    for span in chapters:
        lines += [
            "",
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={span.start_ms}",
            f"END={span.end_ms}",
            f"title={esc(span.title)}",
        ]
    return "\n".join(lines) + "\n"
