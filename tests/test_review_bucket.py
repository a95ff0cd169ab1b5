"""The review page plays recordings that live in a bucket: the media route reads the object
through s3fs with byte ranges, so a browser can seek. Real S3 (moto's server on 127.0.0.1);
the oracle is the sample file's own bytes."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from starlette.testclient import TestClient

from tests.s3server import bucket, s3_server  # noqa: F401  (fixtures)
from voxflow.io.storage import resolve
from voxflow.review.app import create_app
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline


@pytest.fixture()
def served(bucket: str, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, str]:  # noqa: F811
    fs, root = resolve(bucket)
    fs.put_file(str(samples / "jfk.flac"), f"{root}/in/jfk.flac")
    monkeypatch.setenv("VOXFLOW_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "out"
    summary = run_inline(plan_run(f"{bucket}/in", load_settings(out=str(out), model="local/tiny.en")))
    assert summary.exit_code == 0 and summary.done == 1, summary
    query = f"select recording_id from read_parquet('{out}/catalog/transcripts/*.parquet') where status = 'done'"
    [(recording_id,)] = duckdb.sql(query).fetchall()
    client = TestClient(create_app(out), base_url="http://127.0.0.1")
    return client, f"/media/{recording_id}?file=jfk.flac"


def test_bucket_media_answers_byte_ranges_with_the_objects_bytes(served: tuple[TestClient, str], samples: Path) -> None:
    client, media = served
    original = (samples / "jfk.flac").read_bytes()
    whole = client.get(media)
    assert whole.status_code == 200 and whole.content == original
    assert whole.headers["accept-ranges"] == "bytes"
    for header, expected in (("bytes=100-199", original[100:200]), ("bytes=-50", original[-50:]),
                             (f"bytes={len(original) - 10}-", original[-10:])):  # fmt: skip
        part = client.get(media, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == expected, header
        start = len(original) - len(expected) if header != "bytes=100-199" else 100
        assert part.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(original)}"
    assert client.get(media, headers={"Range": f"bytes={len(original)}-"}).status_code == 416


def test_the_recording_page_plays_bucket_media(served: tuple[TestClient, str]) -> None:
    client, media = served
    page = client.get(media.replace("/media/", "/recording/")).text
    assert "<audio" in page and media.split("?")[0] in page
