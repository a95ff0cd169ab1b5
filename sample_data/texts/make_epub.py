"""Rebuild ``aesop-second-selection.epub`` (a small real EPUB 3 for the demo and the tests).

    uv run python sample_data/texts/make_epub.py

Four fables from Aesop's Fables, translated by George Fyler Townsend (Project Gutenberg
eBook #21, public domain), one chapter each, with a table of contents, a footnote (a note
reference and its aside, which are not read aloud) and a generated cover image.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ebooklib import epub

HERE = Path(__file__).resolve().parent
TARGET = HERE / "aesop-second-selection.epub"

FABLES = [
    (
        "The Hare and the Tortoise",
        [
            "A HARE one day ridiculed the short feet and slow pace of the Tortoise, who "
            "replied, laughing: “Though you be swift as the wind, I will beat you in a race.” "
            "The Hare, believing her assertion to be simply impossible, assented to the "
            "proposal; and they agreed that the Fox should choose the course and fix the "
            "goal. On the day appointed for the race the two started together. The Tortoise "
            "never for a moment stopped, but went on with a slow but steady pace straight to "
            "the end of the course. The Hare, lying down by the wayside, fell fast asleep. At "
            "last waking up, and moving as fast as he could, he saw the Tortoise had reached "
            "the goal, and was comfortably dozing after her fatigue.",
        ],
        "Slow but steady wins the race.",
    ),
    (
        "The Ants and the Grasshopper",
        [
            "THE ANTS were spending a fine winter’s day drying grain collected in the "
            "summertime. A Grasshopper, perishing with famine, passed by and earnestly begged "
            "for a little food. The Ants inquired of him, “Why did you not treasure up food "
            "during the summer?” He replied, “I had not leisure enough. I passed the days in "
            "singing.” They then said in derision: “If you were foolish enough to sing all "
            "the summer, you must dance supperless to bed in the winter.”",
        ],
        None,
    ),
    (
        "Hercules and the Wagoner",
        [
            "A CARTER was driving a wagon along a country lane, when the wheels sank down "
            "deep into a rut. The rustic driver, stupefied and aghast, stood looking at the "
            "wagon, and did nothing but utter loud cries to Hercules to come and help him. "
            "Hercules, it is said, appeared and thus addressed him: “Put your shoulders to "
            "the wheels, my man. Goad on your bullocks, and never more pray to me for help, "
            "until you have done your best to help yourself, or depend upon it you will "
            "henceforth pray in vain.”",
        ],
        "Self-help is the best help.",
    ),
    (
        "The Wolf and the Crane",
        [
            "A WOLF who had a bone stuck in his throat hired a Crane, for a large sum, to put "
            "her head into his mouth and draw out the bone. When the Crane had extracted the "
            "bone and demanded the promised payment, the Wolf, grinning and grinding his "
            "teeth, exclaimed: “Why, you have surely already had a sufficient recompense, in "
            "having been permitted to draw out your head in safety from the mouth and jaws "
            "of a wolf.”",
        ],
        "In serving the wicked, expect no reward, and be thankful if you escape injury for your pains.",
    ),
]
FOOTNOTE = "Translated by George Fyler Townsend; Project Gutenberg eBook #21, https://www.gutenberg.org/ebooks/21."


def cover_png(width: int = 300, height: int = 450) -> bytes:
    """A small generated cover: a dusk gradient with a pale band (no external artwork)."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter: none
        for x in range(width):
            t = y / (height - 1)
            r, g, b = int(40 + 150 * t), int(60 + 90 * (1 - t)), int(110 + 60 * (1 - t))
            if 150 < y < 230:
                r, g, b = 236, 226, 196
            elif (x // 25 + y // 25) % 2 and y > 300:
                r, g, b = r - 20, g - 20, b - 20
            row += bytes((r, g, b))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def chapter_html(index: int, title: str, paragraphs: list[str], moral: str | None) -> str:
    body = [f'<h2 id="c{index}">{title}</h2>']
    for n, text in enumerate(paragraphs):
        if index == 1 and n == 0:
            text += '<sup><a epub:type="noteref" href="#note1" id="ref1">1</a></sup>'
        body.append(f"<p>{text}</p>")
    if moral:
        body.append(f'<p class="moral"><em>{moral}</em></p>')
    if index == 1:
        body.append(f'<aside epub:type="footnote" id="note1"><p>{FOOTNOTE}</p></aside>')
    return "\n".join(body)


def build(target: Path = TARGET) -> Path:
    book = epub.EpubBook()
    book.set_identifier("voxflow-sample-aesop-second-selection")
    book.set_title("Aesop's Fables: A Second Selection")
    book.set_language("en")
    book.add_author("Aesop")
    book.add_metadata("DC", "contributor", "George Fyler Townsend (translator)")
    book.add_metadata("DC", "source", "https://www.gutenberg.org/ebooks/21")
    book.set_cover("cover.png", cover_png(), create_page=True)
    chapters = []
    for index, (title, paragraphs, moral) in enumerate(FABLES, start=1):
        page = epub.EpubHtml(title=title, file_name=f"fable{index}.xhtml", lang="en")
        page.content = chapter_html(index, title, paragraphs, moral)
        book.add_item(page)
        chapters.append(page)
    book.toc = [epub.Link(c.file_name, c.title, f"fable{i}") for i, c in enumerate(chapters, 1)]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["cover", "nav", *chapters]
    epub.write_epub(str(target), book)
    return target


if __name__ == "__main__":
    print(build())
