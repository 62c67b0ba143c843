"""download_eurosat against a local HTTP server on 127.0.0.1 serving an archive the test builds."""

import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tif

from mimeo_nb.data import download_eurosat, find_eurosat, md5sum


class Server:
    "Serves one file with Range support; `cut_after` bytes makes the next response drop the connection mid-transfer."

    def __init__(self, path: Path, ranges=True):
        self.path, self.ranges, self.cut_after, self.requests = path, ranges, None, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = outer.path.read_bytes()
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if (rng and outer.ranges) else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path):
    "A EuroSAT-like zip in the official nested layout (2 classes x 3 tiles, plus incompressible padding)."
    src = tmp_path / "src"
    for c in ("Forest", "River"):
        for i in range(3):
            write_tif(src / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif" / c / f"{c}_{i}.tif", seed=i)
    z = tmp_path / "serve" / "EuroSAT_MS.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        for p in sorted(src.rglob("*.tif")):
            f.write(p, p.relative_to(src).as_posix())
        f.writestr("padding.bin", np.random.default_rng(0).bytes(300_000))
    return z


@pytest.fixture
def server(archive):
    s = Server(archive)
    yield s
    s.close()


def test_good_download(server, archive, tmp_path):
    dest = tmp_path / "dl"
    out = download_eurosat(dest, url=server.url, md5=md5sum(archive), progress=False)
    assert (
        out == dest / "EuroSAT_MS"
        and (dest / "EuroSAT_MS.zip").is_file()
        and not (dest / "EuroSAT_MS.zip.part").exists()
    )
    n = len(server.requests)
    assert (
        download_eurosat(dest, url=server.url, md5=md5sum(archive), progress=False) == out and len(server.requests) == n
    )  # no refetch
    assert sorted(p.name for p in dest.iterdir()) == ["EuroSAT_MS", "EuroSAT_MS.zip"]  # no temporary leftovers


def test_bad_checksum(server, tmp_path):
    dest = tmp_path / "dl"
    with pytest.raises(ValueError, match="expected 0{32}; the partial file was removed"):
        download_eurosat(dest, url=server.url, md5="0" * 32, progress=False)
    assert list(dest.iterdir()) == []  # nothing half-written, nothing that looks finished


def test_interrupted_then_resumed(server, archive, tmp_path):
    dest = tmp_path / "dl"
    server.cut_after = 100_000
    with pytest.raises(ConnectionError, match="interrupted after 100000 of"):
        download_eurosat(dest, url=server.url, md5=md5sum(archive), progress=False)
    assert [p.name for p in dest.iterdir()] == ["EuroSAT_MS.zip.part"]  # only the resumable partial file
    assert (dest / "EuroSAT_MS.zip.part").stat().st_size == 100_000
    out = download_eurosat(dest, url=server.url, md5=md5sum(archive), progress=False)
    assert server.requests[-1] == "bytes=100000-"  # resumed, not restarted
    assert md5sum(dest / "EuroSAT_MS.zip") == md5sum(archive) and out == dest / "EuroSAT_MS"


def test_server_without_ranges_restarts(archive, tmp_path):
    s = Server(archive, ranges=False)
    try:
        dest = tmp_path / "dl"
        s.cut_after = 50_000
        with pytest.raises(ConnectionError):
            download_eurosat(dest, url=s.url, md5=md5sum(archive), progress=False)
        download_eurosat(
            dest, url=s.url, md5=md5sum(archive), progress=False
        )  # 200 instead of 206: starts over, still correct
        assert md5sum(dest / "EuroSAT_MS.zip") == md5sum(archive)
    finally:
        s.close()


def test_not_a_zip(tmp_path):
    bad = tmp_path / "serve" / "EuroSAT_MS.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a zip archive")
    s = Server(bad)
    try:
        dest = tmp_path / "dl"
        with pytest.raises(ValueError, match="not a valid zip"):
            download_eurosat(dest, url=s.url, md5=None, progress=False)
        assert not (dest / "EuroSAT_MS").exists() and not [p for p in dest.iterdir() if p.name.startswith(".")]
    finally:
        s.close()


def test_offline_message(tmp_path, monkeypatch):
    with pytest.raises(ConnectionError, match="failed"):
        download_eurosat(tmp_path, url="http://127.0.0.1:9/EuroSAT_MS.zip", progress=False, timeout=2)
    # no data anywhere and no network: find_eurosat says how to point it at data
    from mimeo_nb import data

    monkeypatch.delenv("MIMEO_EUROSAT", raising=False)
    monkeypatch.setattr(data, "find_data", lambda required=False: None)
    monkeypatch.setattr(data, "EUROSAT100_URL", "http://127.0.0.1:9/EuroSAT100.zip")
    monkeypatch.setattr(data, "download_eurosat", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(ValueError, match="MIMEO_EUROSAT"):
        find_eurosat()
