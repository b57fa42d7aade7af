"""Downloads against a local HTTP server on 127.0.0.1 only."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest

from recengine.data.download import Source, download, safe_extract
from recengine.errors import UserError

RATINGS = b"1::10::5::978300760\n1::20::3::978302109\n"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


class Server:
    """Serves ``files`` with HTTP Range support; records the Range header of each request."""

    def __init__(self, files: dict[str, bytes], honour_range: bool = True):
        self.files, self.ranges = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                outer.ranges.append(requested)
                start = int(requested.split("=")[1].rstrip("-")) if requested and honour_range else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive():
    return zip_bytes({"ml-1m/ratings.dat": RATINGS, "ml-1m/README": b"readme"})


def source(url, data: bytes | None, md5=True):
    return {"ml-test": Source("ml-test", url, hashlib.md5(data).hexdigest() if md5 and data else None, "ml-1m/ratings.dat", "test")}


def test_download_verifies_and_extracts(tmp_path, archive):
    server = Server({"/ml-test.zip": archive})
    try:
        path = download("ml-test", tmp_path, sources=source(server.url + "/ml-test.zip", archive))
    finally:
        server.close()
    assert path == tmp_path / "ml-1m" / "ratings.dat" and path.read_bytes() == RATINGS
    assert server.ranges == [None]


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_partial_file(tmp_path, archive, honour_range):
    (tmp_path / "ml-test.zip.part").write_bytes(archive[:100])
    server = Server({"/ml-test.zip": archive}, honour_range=honour_range)
    try:
        path = download("ml-test", tmp_path, sources=source(server.url + "/ml-test.zip", archive))
    finally:
        server.close()
    assert server.ranges == ["bytes=100-"] and path.read_bytes() == RATINGS
    assert (tmp_path / "ml-test.zip").read_bytes() == archive and not (tmp_path / "ml-test.zip.part").exists()


def test_bad_checksum_is_refused(tmp_path, archive):
    server = Server({"/ml-test.zip": archive})
    try:
        with pytest.raises(UserError, match="does not match the published"):
            download("ml-test", tmp_path, sources=source(server.url + "/ml-test.zip", b"other"))
    finally:
        server.close()
    assert (tmp_path / "ml-test.zip.corrupt").exists() and not (tmp_path / "ml-test.zip").exists()


def test_offline_is_one_line_saying_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError) as err:
        download("ml-test", tmp_path, timeout=2, sources=source(f"http://127.0.0.1:{port}/ml-test.zip", None))
    message = str(err.value)
    assert "\n" not in message and "cannot reach" in message and str(tmp_path / "ml-test.zip") in message


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_archive_members_cannot_escape(tmp_path, member):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(zip_bytes({"fine.txt": b"x", member: b"pwned"}))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UserError, match="outside"):
        safe_extract(bad, target)
    assert not (tmp_path / "evil.txt").exists() and not list(target.iterdir())


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="known: ml-1m, ml-20m"):
        download("ml-2m", tmp_path)
