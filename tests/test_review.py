"""``voxflow serve`` over real HTTP on 127.0.0.1: search, byte ranges, no traversal, token, browser."""

from __future__ import annotations

import html
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import lxml.html
import pytest
import webvtt

from tests.conftest import ROOT
from tests.review_archive import Archive, build, build_named, duration_ms

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    archive = build(tmp_path_factory.mktemp("review"), broken=("broken.wav",))
    (archive.out / "secret-link.txt").symlink_to("/etc/passwd")  # symlinks out of the tree
    (archive.out / "inner-link.vtt").symlink_to(archive.out / "jfk.en.vtt")  # and inside it
    (archive.out / "sub").mkdir()
    (archive.out / "sub" / "up").symlink_to(archive.out.parent)  # a folder link upwards
    return archive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(out: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "voxflow.cli", "serve", str(out), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, base
        except OSError as exc:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server exited") from exc
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(archive: Archive) -> Iterator[str]:
    proc, base = start_server(archive.out)
    yield base
    stop(proc)


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` byte for byte (http.client does not normalise ``..`` or re-encode)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    status, body = response.status, response.read()
    conn.close()
    return status, body


def test_search_over_http_links_to_the_moment(archive: Archive, server: str) -> None:
    found = httpx.get(f"{server}/search", params={"q": '"fail better"', "format": "json"}).json()
    assert found[0]["rel_path"] == "beckett.wav"
    assert 0 <= found[0]["start_ms"] < duration_ms(archive.src / "beckett.wav")
    page = httpx.get(f"{server}/search", params={"q": '"ask what you can do"'}).text
    first_link = links(page, "//li[@class='hit']/a")[0][0]
    url = urlsplit(first_link)
    recording_id, query = url.path.removeprefix("/recording/"), dict(parse_qsl(url.query))
    assert recording_id == archive.ids["jfk.flac"] and query["file"] == "jfk.flac"
    assert 3 < float(query["t"]) < duration_ms(archive.src / "jfk.flac") / 1000
    assert httpx.get(server + first_link).status_code == 200


def test_pages_render(archive: Archive, server: str) -> None:
    runs = httpx.get(server + "/")
    assert runs.status_code == 200 and next((archive.out / "runs").glob("*.json")).stem in runs.text
    listing = httpx.get(f"{server}/recordings", params={"status": "done", "sort": "duration_s", "dir": "desc"})
    assert listing.status_code == 200
    shown = [name for name in ("jfk.flac", "beckett.wav", "spk1_snt3.wav") if name in listing.text]
    by_length = sorted(shown, key=lambda n: -duration_ms(archive.src / n))
    assert sorted(shown, key=listing.text.index) == by_length  # sorted by duration, longest first
    empty = httpx.get(f"{server}/recordings", params={"status": "failed"})
    assert "jfk.flac" not in empty.text
    page = httpx.get(f"{server}/recording/{archive.ids['jfk.flac']}").text
    assert f'src="/media/{archive.ids["jfk.flac"]}?file=jfk.flac"' in page and 'src="/file/jfk.en.vtt"' in page
    assert "qa_speech_s" in page and 'href="/file/jfk.en.srt"' in page


def test_failures_are_shown_with_their_reasons(archive: Archive, server: str) -> None:
    manifest = json.loads(next((archive.out / "runs").glob("*.json")).read_text())
    counts = manifest["counts"]
    assert counts["done"] == 3 and counts["failed"] == 1
    [error] = manifest["errors"]
    runs = httpx.get(server + "/").text
    failure = runs.split('class="failure">', 1)[1].split("</tr>", 1)[0]
    assert "broken.wav" in failure and error["kind"] in failure
    failed = httpx.get(f"{server}/recordings", params={"status": "failed"}).text
    assert "broken.wav" in failed and "jfk.flac" not in failed and error["kind"] in failed
    assert "beckett.wav" not in failed
    hrefs = re.findall(r'href="(/recording/[^"]*)"', httpx.get(f"{server}/recordings").text)
    assert hrefs and not [h for h in hrefs if h.startswith("/recording/?")], hrefs  # no link without an id
    for href in hrefs:
        assert httpx.get(server + html.unescape(href)).status_code == 200, href


def test_vtt_track_parses(archive: Archive, server: str) -> None:
    body = httpx.get(f"{server}/file/jfk.en.vtt")
    assert body.headers["content-type"].startswith("text/vtt")
    cues = webvtt.from_buffer(io.StringIO(body.text))
    assert "country" in " ".join(c.text for c in cues).lower()


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=100-1099", 100, 1099), ("bytes=-500", None, None), ("bytes=4000-", 4000, None), ("bytes=0-0", 0, 0)],
)
def test_media_byte_ranges(archive: Archive, server: str, header: str, start: int | None, end: int | None) -> None:
    data = (archive.src / "jfk.flac").read_bytes()
    size = len(data)
    if start is None:
        start, end = size - 500, size - 1
    end = size - 1 if end is None else end
    response = httpx.get(f"{server}/media/{archive.ids['jfk.flac']}", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.content == data[start : end + 1]
    whole = httpx.get(f"{server}/media/{archive.ids['jfk.flac']}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"


def test_unsatisfiable_range_is_416(archive: Archive, server: str) -> None:
    size = (archive.src / "jfk.flac").stat().st_size
    response = httpx.get(f"{server}/media/{archive.ids['jfk.flac']}", headers={"Range": f"bytes={size + 10}-"})
    assert response.status_code == 416


TRAVERSALS = [
    "/file/../../../../etc/passwd",
    "/file/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/file/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/file/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/file/%25252e%25252e/etc/passwd",
    "/file//etc/passwd",
    "/file/%2fetc%2fpasswd",
    "/file/..%5c..%5cetc%5cpasswd",
    "/file/jfk.en.vtt%00.txt",
    "/file/secret-link.txt",
    "/file/inner-link.vtt",
    "/file/sub/up/src/jfk.flac",
    "/file/.voxflow/search.duckdb",
    "/file/catalog/transcripts",
    "/file/runs",
    "/media/..%2f..%2fetc%2fpasswd",
    "/media/" + quote("/etc/passwd", safe=""),
    "/media/0000",
    "/static/..%2f..%2fapp.py",
    "/static/../app.py",
    "/static/%2e%2e/search.py",
    "/recording/..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_unlisted_files_are_404(server: str, path: str) -> None:
    status, body = raw_get(server, path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"PAR1" not in body


def test_read_only(server: str) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert httpx.request(method, f"{server}/file/jfk.en.vtt").status_code == 405


def test_only_loopback_names_without_a_token(archive: Archive, server: str) -> None:
    """A page on another site whose name was rebound to 127.0.0.1 gets nothing."""
    assert raw_get(server, "/recordings", {"Host": "evil.example"})[0] == 400
    assert raw_get(server, "/recordings", {"Host": "localhost:1234"})[0] == 200


def test_token_on_every_request(archive: Archive) -> None:
    proc, base = start_server(archive.out, "--token", "s3cret-token")
    try:
        media = f"/media/{archive.ids['jfk.flac']}"
        for path in ("/", "/recordings", "/search?q=country", media, "/file/jfk.en.vtt", "/static/app.js"):
            assert httpx.get(base + path).status_code == 401, path
            assert httpx.get(base + path, params={"token": "wrong"}).status_code == 401, path
            assert httpx.get(base + path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert httpx.get(base + "/", cookies={"voxflow_token": "nope"}).status_code == 401
        with httpx.Client(base_url=base, follow_redirects=True) as client:  # ?token= once, then the cookie
            first = client.get("/recordings", params={"token": "s3cret-token", "status": "done"})
            assert first.status_code == 200 and "token" not in str(first.url) and "status=done" in str(first.url)
            assert client.get(media, headers={"Range": "bytes=0-9"}).status_code == 206
    finally:
        stop(proc)


def test_public_host_needs_a_token(archive: Archive) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "serve", str(archive.out), "--host", "0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--token" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_folder_without_catalog(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "serve", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "catalog" in result.stderr


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: apt-get install chromium (./dev test)")
def test_in_a_browser(archive: Archive, server: str) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror {exc}"))
        page.on("console", lambda msg: errors.append(f"console {msg.text}") if msg.type == "error" else None)
        for path in ("/", "/recordings", "/recordings?sort=language&dir=desc", f"/recording/{archive.ids['jfk.flac']}"):
            assert page.goto(server + path).status == 200
        assert errors == [], errors

        # clicking a transcript line seeks the player there and highlights it
        cue = page.locator(".cue").nth(1)
        start = float(cue.get_attribute("data-start"))
        assert start > 1
        page.wait_for_function("document.getElementById('player').readyState >= 1")
        cue.click()
        page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {start}) < 1.5")
        page.wait_for_selector(".cue.current")

        # a search from the navigation bar, then its first hit opens the recording at that moment
        page.fill("nav input[name=q]", '"ask what you can do"')
        page.click("nav button")
        page.wait_for_url("**/search?q=*")
        hit = page.locator(".hit a").first
        assert "jfk.flac" in hit.inner_text()
        hit.click()
        page.wait_for_url(f"**/recording/{archive.ids['jfk.flac']}?file=jfk.flac&t=*")
        t = float(dict(parse_qsl(urlsplit(page.url).query))["t"])
        assert t > 1
        page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {t}) < 0.5")
        assert errors == [], errors
        browser.close()
    assert json.dumps(errors) == "[]"


def test_concurrent_searches_over_http_and_the_terminal(archive: Archive, server: str, tmp_path: Path) -> None:
    """Many HTTP searches in threads while `voxflow search` opens the same index: all answer right."""
    from concurrent.futures import ThreadPoolExecutor

    queries = {'"fail better"': "beckett.wav", '"the air is pure"': "spk1_snt3.wav", '"ask not"': "jfk.flac"}

    def http_search(i: int) -> str:
        query = list(queries)[i % len(queries)]
        found = httpx.get(f"{server}/search", params={"q": query, "format": "json"}, timeout=60).json()
        return "ok" if found and found[0]["rel_path"] == queries[query] else f"{query}: {found[:1]}"

    def cli_search(i: int) -> str:
        query = list(queries)[i % len(queries)]
        result = subprocess.run(
            [sys.executable, "-m", "voxflow.cli", "search", query, "--json", "--out", str(archive.out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        found = json.loads(result.stdout or "[]")
        return "ok" if found and found[0]["rel_path"] == queries[query] else f"{query}: {result.stderr}"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(http_search, range(60))) + list(pool.map(cli_search, range(4)))
    with ThreadPoolExecutor(8) as pool:
        mixed = [pool.submit(cli_search if i % 10 == 0 else http_search, i) for i in range(60)]
        answers += [f.result() for f in mixed]
    assert set(answers) == {"ok"}, [a for a in answers if a != "ok"]


def test_read_only_output_folder_still_searches(archive: Archive, tmp_path: Path) -> None:
    """A folder the user cannot write: the index is built in memory (run without root's powers)."""
    import shutil

    from tests.conftest import unprivileged

    out = tmp_path / "ro"
    shutil.copytree(archive.out, out, ignore=shutil.ignore_patterns(".voxflow", "sub", "*-link*"))
    for path in [out, *out.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = subprocess.run(
            unprivileged([sys.executable, "-m", "voxflow.cli", "search", '"fail better"', "--json", "--out", str(out)]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["rel_path"] == "beckett.wav"
    assert not (out / ".voxflow").exists()


# names a hostile archive holds: two identical files, a name that is not UTF-8, one with control characters
# and URL/HTML metacharacters (the raw bytes on disk are the oracle)
ODD_NAMES = {
    b"one.wav": "spk1_snt3.wav",
    b"two.wav": "spk1_snt3.wav",  # same content: same recording_id
    b"caf\xe9.wav": "spk1_snt1.wav",  # not UTF-8
    b"odd\nname #?%<\"'&\t%2e.flac": "jfk.flac",
}


@pytest.fixture(scope="module")
def odd_archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return build_named(tmp_path_factory.mktemp("odd"), ODD_NAMES)


@pytest.fixture(scope="module")
def odd_server(odd_archive: Archive) -> Iterator[str]:
    proc, base = start_server(odd_archive.out)
    yield base
    stop(proc)


def links(html: str, *xpaths: str) -> list[tuple[str, str]]:
    """(href or src, text) of the elements ``xpaths`` select, as an HTML parser reads them."""
    tree = lxml.html.fromstring(html)
    return [(e.get("href") or e.get("src"), e.text_content()) for xpath in xpaths for e in tree.xpath(xpath)]


def sidecars_on_disk(out: Path, raw_name: bytes) -> dict[bytes, bytes]:
    """The bytes of the outputs written for source file ``raw_name`` (by listing OUT, not the catalog)."""
    stem = raw_name.rsplit(b".", 1)[0] + b"."
    folder = os.fsencode(out)
    return {n: read(os.path.join(folder, n)) for n in os.listdir(folder) if n.startswith(stem)}


def read(path: bytes) -> bytes:
    with open(path, "rb") as file:
        return file.read()


ENCODED = re.compile(r"[A-Za-z0-9/_.~%?=&:-]+")  # what a URL-encoded href may hold


def follow(server: str, href: str) -> tuple[str, bytes, dict[str, bytes]]:
    """Open a recording page: its title, the bytes its player loads, the bytes of each file it links."""
    assert ENCODED.fullmatch(href), href
    page = httpx.get(server + href)
    assert page.status_code == 200, href
    [title] = lxml.html.fromstring(page.text).xpath("//h1/text()")
    [(media, _)] = links(page.text, "//audio|//video")
    served = {}
    for link, _ in [(media, ""), *links(page.text, "//track", "//a[starts-with(@href, '/file/')]")]:
        assert ENCODED.fullmatch(link), (title, link)
        response = httpx.get(server + link)
        assert response.status_code == 200, (title, link)
        served[link] = response.content
    return title, served.pop(media), served


def check_file(archive: Archive, server: str, raw: bytes) -> None:
    """The listing links file ``raw``; its page plays that file's bytes and links that file's sidecars."""
    shown = raw.decode("utf-8", "backslashreplace")
    listed = [href for href, text in links(httpx.get(f"{server}/recordings").text, "//tbody//a") if text == shown]
    assert len(listed) == 1, (shown, listed)
    title, media, files = follow(server, listed[0])
    assert title == shown
    assert media == read(os.path.join(os.fsencode(archive.src), raw)), raw
    on_disk = sidecars_on_disk(archive.out, raw)
    assert len(on_disk) == 4 and sorted(files.values()) == sorted(on_disk.values()), (raw, list(files))


def test_identical_files_are_each_listed_and_shown(odd_archive: Archive, odd_server: str) -> None:
    """Two files with the same content (one recording_id): two rows, each page shows its own file."""
    assert odd_archive.ids["one.wav"] == odd_archive.ids["two.wav"]
    rows = links(httpx.get(f"{odd_server}/recordings").text, "//tbody//a")
    assert len(rows) == len(ODD_NAMES), rows
    check_file(odd_archive, odd_server, b"one.wav")
    check_file(odd_archive, odd_server, b"two.wav")


def test_a_name_that_is_not_utf8_serves_its_media_and_sidecars(odd_archive: Archive, odd_server: str) -> None:
    check_file(odd_archive, odd_server, b"caf\xe9.wav")


def test_a_name_with_control_and_url_characters_round_trips(odd_archive: Archive, odd_server: str) -> None:
    """A newline, tab, quotes, <, &, #, ?, % and an encoded dot: every href encoded, each serves its file."""
    check_file(odd_archive, odd_server, b"odd\nname #?%<\"'&\t%2e.flac")


def test_old_recording_links_still_work(odd_archive: Archive, odd_server: str) -> None:
    """``/recording/<id>`` and ``/media/<id>`` without naming the file: one of the files with that id."""
    recording_id = odd_archive.ids["one.wav"]
    assert odd_archive.ids["two.wav"] == recording_id
    page = httpx.get(f"{odd_server}/recording/{recording_id}")
    assert page.status_code == 200 and lxml.html.fromstring(page.text).xpath("//h1/text()")[0] in ("one.wav", "two.wav")
    media = httpx.get(f"{odd_server}/media/{recording_id}")
    assert media.status_code == 200 and media.content == (odd_archive.src / "one.wav").read_bytes()
    assert httpx.get(f"{odd_server}/recording/{recording_id}", params={"file": "nope.wav"}).status_code == 404
    assert httpx.get(f"{odd_server}/media/{recording_id}", params={"file": "../one.wav"}).status_code == 404


def test_escaped_names_never_reach_outside_the_output_tree(odd_archive: Archive, odd_server: str) -> None:
    """``\\xNN`` names are matched inside OUT only: not through ``..``, a folder link, or a hidden folder."""
    link = odd_archive.out / "src-link"
    if not link.is_symlink():
        link.symlink_to(odd_archive.src)
    escaped = quote("caf\\xe9.wav")
    assert raw_get(odd_server, f"/file/src-link/{escaped}")[0] == 404
    assert raw_get(odd_server, f"/file/..%2fsrc%2f{escaped}")[0] == 404
    assert raw_get(odd_server, f"/file/../src/{escaped}")[0] == 404
    assert raw_get(odd_server, "/file/" + quote("caf\\xe9.en.vtt"))[0] == 200
    assert raw_get(odd_server, f"/file/catalog/{escaped}")[0] == 404


# a phrase spoken in each clip of the odd archive → the files holding that clip (identical files share an id)
ODD_PHRASES = {'"the air is pure"': (b"one.wav", b"two.wav"), '"small dog"': (b"caf\xe9.wav",),
               '"ask not"': (b"odd\nname #?%<\"'&\t%2e.flac",)}  # fmt: skip


def landing(server: str, href: str) -> tuple[str, float, bytes]:
    """The page a link opens: its title, where its player starts (s), the bytes the player loads."""
    page = httpx.get(server + href)
    assert page.status_code == 200, href
    tree = lxml.html.fromstring(page.text)
    [title] = tree.xpath("//h1/text()")
    [player] = tree.xpath("//audio|//video")
    return title, float(player.get("data-start")), httpx.get(server + player.get("src")).content


@pytest.mark.parametrize("query", sorted(ODD_PHRASES))
def test_every_search_hit_lands_on_its_file_at_its_moment(odd_archive: Archive, odd_server: str, query: str) -> None:
    """A hit names a file (one of two identical files too): its link opens that file's page, starting at the hit."""
    found = httpx.get(f"{odd_server}/search", params={"q": query, "format": "json"}).json()
    names = {n.decode("utf-8", "backslashreplace"): n for n in ODD_NAMES}  # as voxflow prints them
    assert found and names[found[0]["rel_path"]] in ODD_PHRASES[query], found
    page = httpx.get(f"{odd_server}/search", params={"q": query}).text
    hits = links(page, "//li[@class='hit']/a")
    assert len(hits) == len(found)
    for (href, text), hit in zip(hits, found, strict=True):  # the same hits, in the same order
        assert ENCODED.fullmatch(href), href
        shown = text.rsplit(" ", 1)[0]
        assert shown == hit["rel_path"]
        title, start, media = landing(odd_server, href)
        assert title == shown, (href, title)
        assert abs(start - hit["start_ms"] / 1000) < 0.01
        assert media == read(os.path.join(os.fsencode(odd_archive.src), names[shown]))


def test_a_link_by_id_alone_opens_the_file_search_names(odd_archive: Archive, odd_server: str) -> None:
    """``/recording/<id>?t=`` (a script building links from ``voxflow search --json``, an old bookmark) opens
    the file the search index holds for that id, the one its hit names."""
    [hit] = httpx.get(f"{odd_server}/search", params={"q": '"the air is pure"', "format": "json"}).json()[:1]
    title, start, _ = landing(odd_server, f"/recording/{hit['recording_id']}?t={hit['start_ms'] / 1000}")
    assert (title, start) == (hit["rel_path"], hit["start_ms"] / 1000)


@pytest.mark.parametrize("header", ["bytes=500-100", "bytes=abc", "pages=1-2"])
def test_a_range_http_says_to_ignore_gets_the_whole_file(archive: Archive, server: str, header: str) -> None:
    """RFC 9110 §14.2: a Range whose last byte is before its first, or that cannot be read, is
    ignored (200, the whole file); Starlette answered 400 for local files."""
    data = (archive.src / "jfk.flac").read_bytes()
    response = httpx.get(f"{server}/media/{archive.ids['jfk.flac']}", headers={"Range": header})
    assert response.status_code == 200 and response.content == data
