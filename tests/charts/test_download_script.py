"""The chart's model download script (files/download_model.py) against a loopback stand-in of the hub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from infra.chart_values import CHART_DIR
from tests.charts.conftest import Rendered

SCRIPT = CHART_DIR / "files" / "download_model.py"
SHA = "0123456789abcdef0123456789abcdef01234567"
FILES = {
    "config.json": b'{"model_type": "qwen2"}',
    "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                               "b": "model-00002-of-00002.safetensors"}}).encode(),
    "model-00001-of-00002.safetensors": b"\x01" * 4096,
    "model-00002-of-00002.safetensors": b"\x02" * 4096,
}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("download_model", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeHub:
    """Speaks the part of the Hugging Face hub API that snapshot_download uses."""

    def __init__(self) -> None:
        self.fail_next: dict[str, int] = {}  # file -> how many GETs answer 500
        self.downloads: list[str] = []
        self.auth: set[str] = set()
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
                data = FILES.get(name)
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
                    for f, d in FILES.items():
                        e = {"type": "file", "oid": hashlib.sha1(d).hexdigest(), "size": len(d), "path": f}
                        if f.endswith(".safetensors"):
                            e["lfs"] = {"oid": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 134}
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


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield fake
    fake.server.shutdown()


def run(script: ModuleType, dest: Path, *extra: str) -> int:
    return script.main(["--source", "hf", "--model-id", "org/model", "--dest", str(dest),
                        "--backoff", "0.01", *extra])


def test_download_completes_and_writes_marker(script: ModuleType, hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "1") == 0
    assert (dest / "model-00002-of-00002.safetensors").read_bytes() == FILES["model-00002-of-00002.safetensors"]
    marker = json.loads((dest / script.MARKER).read_text())
    assert marker["identity"]["model_id"] == "org/model"
    assert sorted(hub.downloads) == sorted(FILES)
    # A second run (Job re-created by GitOps, pod retried) finds the marker and fetches nothing.
    hub.downloads.clear()
    assert run(script, dest, "--attempts", "1") == 0
    assert hub.downloads == []
    assert script.main(["--dest", str(dest), "--wait", "5", "--poll", "0.01"]) == 0
    assert script.main(["--dest", str(dest), "--check-only"]) == 0


def test_failed_attempt_is_retried_and_resumes(script: ModuleType, hub: FakeHub, tmp_path: Path) -> None:
    hub.fail_next["model-00002-of-00002.safetensors"] = 2  # attempts 1 and 2 fail on this shard
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "3") == 0
    assert (dest / script.MARKER).is_file()
    # the shard that arrived on the first attempt was not fetched again
    assert hub.downloads.count("model-00001-of-00002.safetensors") == 1


def test_gives_up_without_marker(script: ModuleType, hub: FakeHub, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    hub.fail_next["config.json"] = 1000
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "2") == 1
    assert not (dest / script.MARKER).exists()
    assert "giving up after 2 attempt(s)" in capsys.readouterr().err


def test_token_is_read_from_the_mounted_secret(script: ModuleType, hub: FakeHub, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("hf_testtokenvalue0000000000000000\n")
    monkeypatch.setenv("DSDEPLOY_TOKEN_FILE", str(token))
    assert run(script, tmp_path / "model", "--attempts", "1") == 0
    assert "Bearer hf_testtokenvalue0000000000000000" in hub.auth
    assert "hf_testtoken" not in capsys.readouterr().err


def test_completeness_check(script: ModuleType, tmp_path: Path) -> None:
    assert script.completeness_problems(tmp_path / "nope") == [f"{tmp_path / 'nope'} does not exist"]
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert any("no weight file" in p for p in script.completeness_problems(folder))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors",
                                                                                    "b": "s2.safetensors"}}))
    (folder / "s1.safetensors").write_bytes(b"x")
    (folder / "s2.safetensors").write_bytes(b"")
    assert script.completeness_problems(folder) == [
        "shard s2.safetensors listed in model.safetensors.index.json is missing or empty"]
    (folder / "s2.safetensors").write_bytes(b"y")
    (folder / "s3.safetensors.part").write_bytes(b"z")
    assert script.completeness_problems(folder) == ["unfinished downloads: s3.safetensors.part"]
    (folder / "s3.safetensors.part").unlink()
    assert script.completeness_problems(folder) == []
    gguf = tmp_path / "g"
    gguf.mkdir()
    (gguf / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    assert script.completeness_problems(gguf) == []


def test_check_only_and_wait_fail_clearly(script: ModuleType, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "prefilled"
    folder.mkdir()
    assert script.main(["--dest", str(folder), "--check-only"]) == 1
    assert "not usable: config.json is missing" in capsys.readouterr().err
    assert script.main(["--dest", str(folder), "--wait", "0.05", "--poll", "0.01"]) == 1
    assert "not complete after" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--dest", "/x"], "give --source, --wait or --check-only"),
    (["--dest", "/x", "--source", "hf"], "needs --model-id"),
    (["--dest", "/x", "--source", "s3", "--uri", "gs://b/p"], "needs --uri s3://bucket/prefix"),
])
def test_bad_arguments(script: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_chart_ships_this_script(rendered: dict[str, Rendered]) -> None:
    cm = rendered["gke-base"].one("ConfigMap", "model-download")
    assert cm["data"]["download_model.py"] == SCRIPT.read_text()
