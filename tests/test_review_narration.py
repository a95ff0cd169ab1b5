"""``voxflow serve``'s narration pages over real HTTP and in headless Chromium, on a book narrated for real
(embedded Piper voice, offline): the list, the book page (players, read-along cues, the ACX report), byte
ranges on chapter MP3s, no traversal, the token."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import duckdb
import httpx
import lxml.html
import pytest
import webvtt

from tests.conftest import cli_run, ffprobe_seconds
from tests.test_review import CHROMIUM, raw_get, start_server, stop

BOOK = """---
title: The Tiny Test Book
author: Ada Example
language: en
---

# The Tiny Test Book

## The First Chapter

The river ran quietly past the old mill, where nobody had worked for many years.

A heron stood in the shallows and watched the water for a long time.

In the evening the wind came down from the hills and the reeds began to sing.

## The Second Chapter

Morning brought rain, and the miller's daughter walked along the bank with a basket.

She counted seven boats on the water and one small dog asleep on a rope.

Then the sun broke through the clouds and the whole valley shone like glass.
"""


@dataclass
class Narrated:
    out: Path
    book: Path  # the book's folder under OUT/audiobooks
    manifest: dict


@pytest.fixture(scope="module")
def narrated(tmp_path_factory: pytest.TempPathFactory) -> Narrated:
    root = tmp_path_factory.mktemp("narration")
    os.environ.setdefault("VOXFLOW_STATE_DIR", str(root / "state"))
    src, out = root / "src", root / "out"
    src.mkdir()
    (src / "tiny.md").write_text(BOOK)
    (src / "broken.epub").write_bytes(b"PK\x03\x04 this is not a zip archive" + os.urandom(512))
    result = cli_run("narrate", str(src), "--out", str(out))
    assert result.returncode == 1, result.stderr  # one book failed, the other is done
    [book] = (out / "audiobooks").iterdir()
    (book / "passwd-link.mp3").symlink_to("/etc/passwd")  # a link out of the tree
    [manifest] = (out / "runs").glob("*.json")
    return Narrated(out, book, json.loads(manifest.read_text()))


@pytest.fixture(scope="module")
def server(narrated: Narrated) -> Iterator[str]:
    proc, base = start_server(narrated.out)
    yield base
    stop(proc)


def chapter_files(narrated: Narrated, suffix: str) -> list[Path]:
    """The book's files with ``suffix``, listed on disk (not from the catalog)."""
    return sorted(p for p in narrated.book.iterdir() if p.suffix == suffix and re.match(r"\d\d - ", p.name))


def book_href(server: str) -> str:
    tree = lxml.html.fromstring(httpx.get(f"{server}/narrations").text)
    [href] = [a.get("href") for a in tree.xpath("//tbody//a") if a.text_content() == "The Tiny Test Book"]
    return href


def book_page(server: str) -> lxml.html.HtmlElement:
    response = httpx.get(server + book_href(server))
    assert response.status_code == 200
    return lxml.html.fromstring(response.text)


def vtt_cues(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) of a VTT as the webvtt library reads it (words joined by single spaces)."""
    return [
        (c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, " ".join(c.text.split()))
        for c in webvtt.read(str(path))
    ]


def test_nav_links_the_narrations_list(server: str) -> None:
    tree = lxml.html.fromstring(httpx.get(server + "/").text)
    assert "/narrations" in tree.xpath("//nav//a/@href")


def test_list_shows_each_book_with_its_chapters_duration_and_failures(narrated: Narrated, server: str) -> None:
    response = httpx.get(f"{server}/narrations")
    assert response.status_code == 200
    tree = lxml.html.fromstring(response.text)
    heads = [th.text_content().strip() for th in tree.xpath("//thead//th")]
    rows = {r.xpath("td")[0].text_content().strip(): [td.text_content().strip() for td in r.xpath("td")]
            for r in tree.xpath("//tbody/tr[@class='book']")}  # fmt: skip
    book = dict(zip(heads, rows["The Tiny Test Book"], strict=True))
    mp3s = chapter_files(narrated, ".mp3")
    assert len(mp3s) == 2
    assert (book["author"], book["language"], book["chapters"], book["status"]) == ("Ada Example", "en", "2", "done")
    parts = f"read_parquet('{narrated.out}/catalog/narrations/*.parquet')"
    assert duckdb.sql(f"select distinct language from {parts} where rel_path = 'tiny.md'").fetchall() == [("en",)]
    minutes, seconds = book["duration"].split(":")
    assert abs(int(minutes) * 60 + int(seconds) - sum(ffprobe_seconds(p) for p in mp3s)) <= 2
    assert book["ACX"] == "pass"
    [error] = narrated.manifest["errors"]
    failed = dict(zip(heads, rows["broken.epub"], strict=True))
    assert failed["status"] == "failed"
    [reason] = tree.xpath("//tbody/tr[@class='failure']")
    assert "broken.epub" in reason.text_content() and error["kind"] in reason.text_content()


def test_book_page_links_every_chapter_file_the_playlist_and_the_report(narrated: Narrated, server: str) -> None:
    page = book_page(server)
    hrefs = set(page.xpath("//a/@href"))
    for path in [*chapter_files(narrated, ".mp3"), *chapter_files(narrated, ".vtt"), *narrated.book.glob("*.m3u")]:
        href = "/file/" + quote(path.relative_to(narrated.out).as_posix())
        assert href in hrefs, href
        assert httpx.get(server + href).content == path.read_bytes()
    players = page.xpath("//audio")
    assert len(players) == 2
    for player, mp3 in zip(players, chapter_files(narrated, ".mp3"), strict=True):
        assert httpx.get(server + player.get("src")).content == mp3.read_bytes()


def test_book_page_cues_are_the_chapter_vtt(narrated: Narrated, server: str) -> None:
    page = book_page(server)
    for player, vtt in zip(page.xpath("//audio"), chapter_files(narrated, ".vtt"), strict=True):
        [cue_list] = page.xpath(f"//*[@id='{player.get('data-cues')}']")
        shown = [(float(li.get("data-start")), float(li.get("data-end")), " ".join(li.xpath("string(.)").split()))
                 for li in cue_list.xpath(".//li[contains(@class, 'cue')]")]  # fmt: skip
        expected = vtt_cues(vtt)
        assert len(shown) == len(expected) >= 3
        for (start, end, text), (v_start, v_end, v_text) in zip(shown, expected, strict=True):
            assert abs(start - v_start) < 0.002 and abs(end - v_end) < 0.002
            assert v_text in text


def test_acx_report_table(narrated: Narrated, server: str) -> None:
    """Each chapter file's rules (loudness, peak, noise floor …) as the narration's report has them."""
    [report_path] = narrated.book.glob("*.report.json")
    report = json.loads(report_path.read_text())
    page = book_page(server)
    [table] = page.xpath("//table[@id='acx']")
    heads = [th.text_content().strip() for th in table.xpath(".//thead//th")]
    rows = [[td.text_content().strip() for td in tr.xpath("td|th")] for tr in table.xpath(".//tbody/tr")]
    assert len(rows) == len(report["mastering"]) == 2
    for row, file in zip(rows, report["mastering"], strict=True):
        cells = dict(zip(heads, row, strict=True))
        assert cells["file"] == file["file"] and cells["result"] == ("pass" if file["passed"] else "fail")
        for rule in file["rules"]:
            assert rule["measured"] in cells[rule["rule"]]
        assert {"rms", "peak", "noise_floor"} <= set(heads)


def test_unknown_book_is_404(server: str) -> None:
    assert httpx.get(f"{server}/narration", params={"book": "nope.md"}).status_code == 404
    assert httpx.get(f"{server}/narration").status_code == 404


def test_a_failed_book_shows_its_reason(narrated: Narrated, server: str) -> None:
    [error] = narrated.manifest["errors"]
    page = httpx.get(f"{server}/narration", params={"book": "broken.epub"})
    assert page.status_code == 200
    tree = lxml.html.fromstring(page.text)
    assert not tree.xpath("//audio")
    [reason] = tree.xpath("//*[contains(@class, 'failure')]")
    assert error["kind"] in reason.text_content() and "Bad Zip file" in reason.text_content()


def test_a_catalog_row_naming_files_outside_the_tree_links_nothing(narrated: Narrated, tmp_path: Path) -> None:
    """A tampered (or foreign) catalog: a book whose files are /etc/passwd and a symlink out of OUT."""
    out = tmp_path / "out"
    shutil.copytree(narrated.out, out, symlinks=True)
    link = out / "audiobooks" / "tiny" / "passwd-link.mp3"
    part = out / "catalog" / "narrations" / "part-zz-evil.parquet"
    duckdb.execute(
        f"copy (select 'evil.md' as rel_path, 'done' as status, 0 as chapter_index, 'Evil' as book_title, "
        f"'/etc/passwd' as output_uri, ['/etc/passwd', '{link}', '{out}/../../etc/passwd', '{part}', "
        f"'{out}/.voxflow/document-hashes.json'] as outputs, "
        f"'r-evil' as run_id, now() as finished_at) to '{part}' (format parquet)"
    )
    proc, base = start_server(out)
    try:
        page = httpx.get(f"{base}/narration", params={"book": "evil.md"})
        assert page.status_code == 200
        refs = [*lxml.html.fromstring(page.text).xpath("//a/@href|//audio/@src")]
        assert not [r for r in refs if r.startswith("/file/")], refs
        assert "root:" not in page.text
        assert "The Tiny Test Book" in httpx.get(f"{base}/narrations").text  # the real book is still listed
    finally:
        stop(proc)


def test_a_book_whose_latest_run_failed_keeps_its_chapters(narrated: Narrated) -> None:
    """A later run failed on the book (its files are still there): the list says failed, with the reason,
    and the page still plays the chapters of the run that narrated it."""
    part = narrated.out / "catalog" / "narrations" / "part-zz-later.parquet"
    duckdb.execute(
        "copy (select 'tiny.md' as rel_path, 'failed' as status, null::int as chapter_index, "
        "'AudioError' as error_kind, "
        f"'tiny.md: the voice broke' as error_message, 'r-later' as run_id, now() + interval 1 hour as finished_at) "
        f"to '{part}' (format parquet)"
    )
    proc, base = start_server(narrated.out)
    try:
        listing = lxml.html.fromstring(httpx.get(f"{base}/narrations").text)
        [row] = [r for r in listing.xpath("//tbody/tr[@class='book']") if "tiny.md" in r.text_content()]
        assert "failed" in [td.text_content() for td in row.xpath("td")]
        assert "the voice broke" in listing.xpath("string(//tbody)")
        page = lxml.html.fromstring(httpx.get(f"{base}/narration", params={"book": "tiny.md"}).text)
        assert len(page.xpath("//audio")) == 2 and "the voice broke" in page.text_content()
    finally:
        stop(proc)
        part.unlink()  # the module's OUT as it was


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=100-1099", 100, 1099), ("bytes=-500", -500, None), ("bytes=4000-", 4000, None), ("bytes=0-0", 0, 0)],
)
def test_chapter_mp3_byte_ranges(narrated: Narrated, server: str, header: str, first: int, last: int | None) -> None:
    mp3 = chapter_files(narrated, ".mp3")[1]
    data = mp3.read_bytes()
    start = first % len(data)
    end = len(data) - 1 if last is None else last
    response = httpx.get(f"{server}/file/{quote(mp3.relative_to(narrated.out).as_posix())}", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.content == data[start : end + 1]


TRAVERSALS = [
    "/file/audiobooks/../../../../etc/passwd",
    "/file/audiobooks/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/file/audiobooks/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/file/audiobooks/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/file/audiobooks/tiny/passwd-link.mp3",
    "/file/audiobooks/tiny/%2e%2e/%2e%2e/catalog/narrations",
    "/file/catalog/narrations",
    "/narration?book=..%2f..%2f..%2fetc%2fpasswd",
    "/narration?book=%2fetc%2fpasswd",
    "/narration?book=%252e%252e%252fetc%252fpasswd",
    "/narration/..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_404(narrated: Narrated, server: str, path: str) -> None:
    status, body = raw_get(server, path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"PAR1" not in body


def test_an_absolute_path_to_a_chapter_is_404(narrated: Narrated, server: str) -> None:
    mp3 = chapter_files(narrated, ".mp3")[0]
    assert raw_get(server, "/file/" + quote(str(mp3)))[0] == 404
    assert raw_get(server, "/file/" + quote(str(mp3), safe=""))[0] == 404


def test_token_guards_the_narration_pages(narrated: Narrated) -> None:
    proc, base = start_server(narrated.out, "--token", "book-token")
    try:
        mp3 = "/file/" + quote(chapter_files(narrated, ".mp3")[0].relative_to(narrated.out).as_posix())
        for path in ("/narrations", "/narration?book=tiny.md", mp3):
            assert httpx.get(base + path).status_code == 401, path
            assert httpx.get(base + path, headers={"Authorization": "Bearer book-token"}).status_code == 200, path
    finally:
        stop(proc)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: apt-get install chromium (./dev test)")
def test_read_along_in_a_browser(narrated: Narrated, server: str) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    first_vtt, second_vtt = (vtt_cues(p) for p in chapter_files(narrated, ".vtt"))
    with sync_playwright() as p:
        autoplay = "--autoplay-policy=no-user-gesture-required"  # play() from the test, not a click
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", autoplay])
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror {exc}"))
        page.on("console", lambda msg: errors.append(f"console {msg.text}") if msg.type == "error" else None)
        assert page.goto(server + "/narrations").status == 200
        page.click("text=The Tiny Test Book")
        page.wait_for_url("**/narration?book=*")
        assert errors == [], errors

        # playing chapter 1 moves its audio and highlights the cue being read, a cue of its VTT
        players = page.locator("audio")
        first = players.nth(0)
        first.evaluate("a => { a.muted = true; return a.play(); }")
        page.wait_for_function("document.querySelectorAll('audio')[0].currentTime > 1.2", timeout=20_000)
        cue_list = "#" + first.get_attribute("data-cues")
        page.wait_for_selector(f"{cue_list} .cue.current", timeout=10_000)
        now = first.evaluate("a => a.currentTime")
        current = " ".join(page.locator(f"{cue_list} .cue.current").inner_text().split())
        spoken = [text for start, end, text in first_vtt if start - 0.5 <= now <= end + 0.5]
        assert any(text in current for text in spoken), (now, current, spoken)

        # a click on chapter 2's third cue seeks chapter 2's audio to that cue's start
        second = players.nth(1)
        page.wait_for_function("document.querySelectorAll('audio')[1].readyState >= 1")
        page.locator("#" + second.get_attribute("data-cues") + " .cue").nth(2).click()
        target = second_vtt[2][0]
        assert target > 1
        page.wait_for_function(f"Math.abs(document.querySelectorAll('audio')[1].currentTime - {target}) < 0.5")
        page.wait_for_selector("#" + second.get_attribute("data-cues") + " .cue:nth-child(3).current")  # highlighted
        assert first.evaluate("a => a.paused")  # one chapter plays at a time
        assert page.goto(f"{server}/narration?book=broken.epub").status == 200
        assert errors == [], errors
        browser.close()
    assert json.dumps(errors) == "[]"
