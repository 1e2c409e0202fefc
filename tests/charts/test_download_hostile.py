"""Hostile listings for every source of the download script: nothing is written outside the model's folder,
no completion marker is forged, and the refusal names the object (issue #14, item 12).

Hugging Face: the real huggingface_hub against a loopback hub. S3: the real boto3 against moto's S3 server
on 127.0.0.1. GCS: the script's own JSON-API client against a loopback GCS. ModelScope: its client is not
installed here, so a stand-in module records whether it was asked to write anything (the check runs before
the client is called, which is the seam under test).
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.charts.download_fakes import FILES, FakeGcs, FakeHub

HOSTILE = [
    "../sibling/config.json",  # into a sibling model's folder
    "../sibling/.dsdeploy-complete",  # forge the sibling's completion marker
    ".dsdeploy-complete",  # forge this model's marker
    "weights/../../escape.safetensors",  # climb out through a sub-folder
    "../../volume-root.bin",  # to the volume root
    ".cache/huggingface/download/config.json.metadata",  # the hub client's resume records
    "sub//empty-segment.bin",
    "./dot-segment.bin",
]


def volume(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A cache volume with this model's folder and a complete sibling model; returns what the sibling holds."""
    root = tmp_path / "volume"
    sibling = root / "sibling"
    sibling.mkdir(parents=True)
    (sibling / "config.json").write_bytes(b'{"model_type": "sibling"}')
    (sibling / ".dsdeploy-complete").write_text(json.dumps({"identity": {"source": "hf"}, "files": {}}))
    return root / "model", sibling, snapshot(root)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(code: int, root: Path, dest: Path, before: dict[str, bytes], name: str, log: str) -> None:
    assert code == 1
    assert "refused: object name" in log and repr(name)[:60] in log, log
    assert "attempt 2/" not in log, "a hostile listing must not be retried"
    outside = {k: v for k, v in snapshot(root).items() if not k.startswith("model/")}
    assert outside == before, "something was written outside the model's folder"
    assert not (dest / ".dsdeploy-complete").exists()


@pytest.mark.parametrize("name", HOSTILE + ["/absolute.bin"])
def test_hugging_face_listing(
    script: ModuleType, hub: FakeHub, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, dest, before = (tmp_path / "volume", *volume(tmp_path)[::2])
    hub.extra[name] = b"x" * 16
    code = script.main(["--source", "hf", "--model-id", "org/model", "--dest", str(dest), "--backoff", "0.01"])
    assert_refused(code, root, dest, before, name, capsys.readouterr().err)
    assert hub.downloads == [], "nothing may be fetched once the listing is refused"


@pytest.fixture
def modelscope(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """A stand-in for the modelscope client: lists `files`, and writes them all if snapshot_download runs."""
    state: dict[str, object] = {"files": {}, "snapshots": 0}

    def snapshot_download(model_id: str, revision: str, local_dir: str, allow_patterns: object) -> None:
        state["snapshots"] = int(state["snapshots"]) + 1  # type: ignore[call-overload]
        for rel, data in state["files"].items():  # type: ignore[union-attr]
            target = Path(local_dir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    class HubApi:
        def login(self, token: str) -> None:
            pass

        def get_model_files(self, model_id: str, revision: str, recursive: bool) -> list[dict[str, object]]:
            return [{"Path": rel, "Size": len(data), "Type": "blob"} for rel, data in state["files"].items()]  # type: ignore[union-attr]

    package = types.ModuleType("modelscope")
    package.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    hub_pkg, api = types.ModuleType("modelscope.hub"), types.ModuleType("modelscope.hub.api")
    api.HubApi = HubApi  # type: ignore[attr-defined]
    for name, module in (("modelscope", package), ("modelscope.hub", hub_pkg), ("modelscope.hub.api", api)):
        monkeypatch.setitem(sys.modules, name, module)
    yield state


@pytest.mark.parametrize("name", HOSTILE + ["/absolute.bin"])
def test_modelscope_listing(
    script: ModuleType, modelscope: dict[str, object], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, dest, before = (tmp_path / "volume", *volume(tmp_path)[::2])
    modelscope["files"] = {**FILES, name: b"x" * 16}
    code = script.main(["--source", "modelscope", "--model-id", "org/model", "--dest", str(dest), "--backoff", "0.01"])
    assert_refused(code, root, dest, before, name, capsys.readouterr().err)
    assert modelscope["snapshots"] == 0


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="weights")
    yield client
    for obj in client.list_objects_v2(Bucket="weights").get("Contents", []):
        client.delete_object(Bucket="weights", Key=obj["Key"])
    client.delete_bucket(Bucket="weights")


@pytest.mark.parametrize("name", HOSTILE)
def test_s3_listing(
    script: ModuleType, bucket: object, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, dest, before = (tmp_path / "volume", *volume(tmp_path)[::2])
    for rel, data in {**FILES, name: b"x" * 16}.items():
        bucket.put_object(Bucket="weights", Key=f"deepseek/r1/{rel}", Body=data)  # type: ignore[attr-defined]
    code = script.main(
        ["--source", "s3", "--uri", "s3://weights/deepseek/r1", "--dest", str(dest), "--backoff", "0.01"]
    )
    assert_refused(code, root, dest, before, name, capsys.readouterr().err)
    assert not dest.exists() or not any(p.suffix == ".safetensors" for p in dest.rglob("*")), (
        "the refusal comes before the first object is copied"
    )


def test_s3_prefix_is_a_folder(script: ModuleType, bucket: object, tmp_path: Path) -> None:
    """s3://weights/deepseek/r1 copies deepseek/r1/*, never the objects of deepseek/r1-zero/."""
    for rel, data in FILES.items():
        bucket.put_object(Bucket="weights", Key=f"deepseek/r1/{rel}", Body=data)  # type: ignore[attr-defined]
    bucket.put_object(Bucket="weights", Key="deepseek/r1-zero/extra.bin", Body=b"z")  # type: ignore[attr-defined]
    dest = tmp_path / "model"
    assert (
        script.main(["--source", "s3", "--uri", "s3://weights/deepseek/r1", "--dest", str(dest), "--attempts", "1"])
        == 0
    )
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(FILES)


@pytest.mark.parametrize("name", HOSTILE)
def test_gcs_listing(
    script: ModuleType, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, dest, before = (tmp_path / "volume", *volume(tmp_path)[::2])
    fake = FakeGcs({f"deepseek/r1/{rel}": data for rel, data in {**FILES, name: b"x" * 16}.items()})
    monkeypatch.setenv("GCE_METADATA_HOST", fake.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{fake.host}")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    try:
        code = script.main(
            ["--source", "gcs", "--uri", "gs://weights/deepseek/r1", "--dest", str(dest), "--backoff", "0.01"]
        )
    finally:
        fake.server.shutdown()
    assert_refused(code, root, dest, before, name, capsys.readouterr().err)
    assert not [p for p, _, _ in fake.requests if "alt=media" in p or p.endswith(".safetensors")]


def test_a_link_on_the_volume_does_not_redirect_a_write(
    script: ModuleType, hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, dest, before = (tmp_path / "volume", *volume(tmp_path)[::2])
    dest.mkdir()
    (dest / "weights").symlink_to(root / "sibling", target_is_directory=True)
    before = snapshot(root)
    hub.extra["weights/config.json"] = b"{}"
    code = script.main(["--source", "hf", "--model-id", "org/model", "--dest", str(dest), "--backoff", "0.01"])
    log = capsys.readouterr().err
    assert code == 1 and "resolves to" in log and "outside" in log
    assert (root / "sibling" / "config.json").read_bytes() == before["sibling/config.json"]


def test_a_forged_marker_naming_files_outside_is_not_complete(script: ModuleType, tmp_path: Path) -> None:
    _root, dest, _ = (tmp_path / "volume", *volume(tmp_path)[::2])
    dest.mkdir()
    for rel, data in FILES.items():
        (dest / rel).write_bytes(data)
    files = {rel: len(data) for rel, data in FILES.items()} | {"../sibling/config.json": 25}
    problems = script.completeness_problems(dest, files)
    assert any("'../sibling/config.json'" in p and "'..' segment" in p for p in problems), problems
