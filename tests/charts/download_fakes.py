"""Loopback stand-ins for what the chart's download script talks to: the Hugging Face hub API and the GCS
JSON API with the GKE metadata server (the S3 tests use moto's real S3 server)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

from infra.chart_values import CHART_DIR

SCRIPT = CHART_DIR / "files" / "download_model.py"
SHA = "0123456789abcdef0123456789abcdef01234567"


def load_script() -> ModuleType:
    """files/download_model.py as a module (it is a file the chart ships, not a package module)."""
    spec = importlib.util.spec_from_file_location("download_model", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def safetensors(n: int, fill: bytes) -> bytes:
    """A valid safetensors file holding one uint8 tensor of n bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return len(header).to_bytes(8, "little") + header + fill * n


FILES = {
    "config.json": b'{"model_type": "qwen2"}',
    "model.safetensors.index.json": json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    ).encode(),
    "model-00001-of-00002.safetensors": safetensors(4096, b"\x01"),
    "model-00002-of-00002.safetensors": safetensors(4096, b"\x02"),
}


class FakeHub:
    """Speaks the part of the Hugging Face hub API that snapshot_download uses."""

    def __init__(self) -> None:
        self.fail_next: dict[str, int] = {}  # file -> how many GETs answer 500
        self.listed_size: dict[str, int] = {}  # file -> the size the tree API claims (when it differs)
        self.downloads: list[str] = []
        self.auth: set[str] = set()
        self.extra: dict[str, bytes] = {}  # files the hub lists and serves beside FILES (hostile names)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, obj: object) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, head: bool) -> None:
                hub.auth.add(self.headers.get("Authorization", ""))
                name = "/".join(self.path.split("?")[0].split("/")[5:])
                data = {**FILES, **hub.extra}.get(name)
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                if not head and hub.fail_next.get(name, 0) > 0:
                    hub.fail_next[name] -= 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                lfs = name.endswith(".safetensors")
                etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(data).hexdigest()
                self.send_response(200)
                self.send_header("X-Repo-Commit", SHA)
                self.send_header("ETag", f'"{etag}"')
                if lfs:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    hub.downloads.append(name)
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._file(head=True)

            def do_GET(self) -> None:
                if "/tree/" in self.path:
                    entries = []
                    for f, d in {**FILES, **hub.extra}.items():
                        size = hub.listed_size.get(f, len(d))
                        e = {"type": "file", "oid": hashlib.sha1(d).hexdigest(), "size": size, "path": f}
                        if f.endswith(".safetensors"):
                            e["lfs"] = {"oid": hashlib.sha256(d).hexdigest(), "size": size, "pointerSize": 134}
                        entries.append(e)
                    self._json(entries)
                elif self.path.startswith("/api/models/"):
                    hub.auth.add(self.headers.get("Authorization", ""))
                    self._json({"id": "org/model", "sha": SHA, "siblings": [{"rfilename": f} for f in FILES]})
                elif "/resolve/" in self.path:
                    self._file(head=False)
                else:
                    self.send_response(404)
                    self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class FakeGcs:
    """The GCS JSON API (list, media download with Range) and the GKE metadata server's token endpoint."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.requests: list[tuple[str, str, str]] = []  # (path, Authorization, Range)
        gcs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, unquote, urlsplit

                url = urlsplit(self.path)
                gcs.requests.append((url.path, self.headers.get("Authorization", ""), self.headers.get("Range", "")))
                if url.path.endswith("/service-accounts/default/token"):
                    assert self.headers.get("Metadata-Flavor") == "Google"
                    self._send(200, json.dumps({"access_token": "ya29.test", "expires_in": 3599}).encode())
                    return
                if self.headers.get("Authorization") != "Bearer ya29.test":
                    self._send(401, b"{}")
                    return
                if url.path == "/storage/v1/b/weights/o":
                    prefix = parse_qs(url.query).get("prefix", [""])[0]
                    items = [{"name": n, "size": str(len(d))} for n, d in gcs.objects.items() if n.startswith(prefix)]
                    self._send(200, json.dumps({"items": items}).encode())
                    return
                name = unquote(url.path.removeprefix("/storage/v1/b/weights/o/"))
                data = gcs.objects[name]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self._send(206 if start else 200, data[start:], "application/octet-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
