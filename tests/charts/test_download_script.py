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


def safetensors(n: int, fill: bytes) -> bytes:
    """A valid safetensors file holding one uint8 tensor of n bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return len(header).to_bytes(8, "little") + header + fill * n


FILES = {
    "config.json": b'{"model_type": "qwen2"}',
    "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                               "b": "model-00002-of-00002.safetensors"}}).encode(),
    "model-00001-of-00002.safetensors": safetensors(4096, b"\x01"),
    "model-00002-of-00002.safetensors": safetensors(4096, b"\x02"),
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
        self.listed_size: dict[str, int] = {}  # file -> the size the tree API claims (when it differs)
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
    assert marker["identity"] == {"source": "hf", "model_id": "org/model", "revision": "main", "uri": "",
                                  "allow_patterns": []}
    # the sizes the hub listed are recorded, so the engine's wait can check them offline
    assert marker["files"] == {name: len(data) for name, data in FILES.items()}
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
    (folder / "s1.safetensors").write_bytes(safetensors(16, b"x"))
    (folder / "s2.safetensors").write_bytes(b"")
    assert script.completeness_problems(folder) == [
        "shard s2.safetensors listed in model.safetensors.index.json is missing or empty"]
    (folder / "s2.safetensors").write_bytes(safetensors(16, b"y"))
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


def wait(script: ModuleType, dest: Path, *identity: str) -> int:
    return script.main(["--dest", str(dest), "--wait", "0.05", "--poll", "0.01", *identity])


def test_wait_needs_the_marker_of_the_same_model(script: ModuleType, hub: FakeHub, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "1") == 0
    same = ("--source", "hf", "--model-id", "org/model")
    assert wait(script, dest, *same) == 0
    capsys.readouterr()
    # A marker left by the previous model (or revision, or file patterns) does not let the engine start.
    assert wait(script, dest, "--source", "hf", "--model-id", "org/other") == 1
    assert "the marker is for" in capsys.readouterr().err
    assert wait(script, dest, *same, "--revision", "v2") == 1
    assert wait(script, dest, *same, "--allow-pattern", "*.safetensors") == 1


def test_truncated_shard_is_caught_by_its_size(script: ModuleType, hub: FakeHub, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "1") == 0
    shard = dest / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # a copy cut short after the marker was written
    assert wait(script, dest, "--source", "hf", "--model-id", "org/model") == 1
    err = capsys.readouterr().err
    assert "model-00002-of-00002.safetensors is" in err
    # the next download run notices it too and fetches the shard again
    hub.downloads.clear()
    assert run(script, dest, "--attempts", "1") == 0
    assert "model-00002-of-00002.safetensors" in hub.downloads
    assert shard.read_bytes() == FILES["model-00002-of-00002.safetensors"]


def test_size_the_hub_lists_must_match(script: ModuleType, hub: FakeHub, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    hub.listed_size["config.json"] = len(FILES["config.json"]) + 7  # what arrived is not what the hub has
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "1") == 1
    assert "the source says" in capsys.readouterr().err
    assert not (dest / script.MARKER).exists()


def test_safetensors_header_check(script: ModuleType, tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    good.write_bytes(safetensors(64, b"a"))
    assert script.safetensors_problem(good) is None
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(safetensors(64, b"a")[:-1])
    assert "its header says" in script.safetensors_problem(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 32)
    assert "not safetensors" in script.safetensors_problem(junk)


def test_second_download_waits_for_the_first(script: ModuleType, hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    result: list[int] = []
    with script.download_lock(dest):
        worker = threading.Thread(target=lambda: result.append(run(script, dest, "--attempts", "1")))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not hub.downloads  # blocked on the lock, fetched nothing
    worker.join(30)
    assert result == [0] and (dest / script.MARKER).is_file()


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


def test_gcs_with_workload_identity(script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = {f"deepseek/r1/{name}": data for name, data in FILES.items()}
    fake = FakeGcs(objects)
    monkeypatch.setenv("GCE_METADATA_HOST", fake.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{fake.host}")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    dest = tmp_path / "model"
    dest.mkdir()
    shard = "model-00001-of-00002.safetensors"
    (dest / f"{shard}.part").write_bytes(FILES[shard][:1000])  # left by an interrupted attempt
    try:
        assert script.main(["--source", "gcs", "--uri", "gs://weights/deepseek/r1", "--dest", str(dest),
                            "--attempts", "1"]) == 0
    finally:
        fake.server.shutdown()
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert all(auth == "Bearer ya29.test" for path, auth, _ in fake.requests if path.startswith("/storage/"))
    assert (f"/storage/v1/b/weights/o/deepseek%2Fr1%2F{shard}", "Bearer ya29.test", "bytes=1000-") in fake.requests
    marker = json.loads((dest / script.MARKER).read_text())
    assert marker["identity"]["uri"] == "gs://weights/deepseek/r1" and marker["files"][shard] == len(FILES[shard])
