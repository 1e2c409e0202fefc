"""The chart's model download script (files/download_model.py) against a loopback stand-in of the hub."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import ModuleType

import pytest

from tests.charts.conftest import Rendered
from tests.charts.download_fakes import FILES, SCRIPT, FakeGcs, FakeHub, safetensors


def run(script: ModuleType, dest: Path, *extra: str) -> int:
    return script.main(["--source", "hf", "--model-id", "org/model", "--dest", str(dest), "--backoff", "0.01", *extra])


def test_download_completes_and_writes_marker(script: ModuleType, hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "1") == 0
    assert (dest / "model-00002-of-00002.safetensors").read_bytes() == FILES["model-00002-of-00002.safetensors"]
    marker = json.loads((dest / script.MARKER).read_text())
    assert marker["identity"] == {
        "source": "hf",
        "model_id": "org/model",
        "revision": "main",
        "uri": "",
        "allow_patterns": [],
    }
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


def test_gives_up_without_marker(
    script: ModuleType, hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.fail_next["config.json"] = 1000
    dest = tmp_path / "model"
    assert run(script, dest, "--attempts", "2") == 1
    assert not (dest / script.MARKER).exists()
    assert "giving up after 2 attempt(s)" in capsys.readouterr().err


def test_token_is_read_from_the_mounted_secret(
    script: ModuleType,
    hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
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
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})
    )
    (folder / "s1.safetensors").write_bytes(safetensors(16, b"x"))
    (folder / "s2.safetensors").write_bytes(b"")
    assert script.completeness_problems(folder) == [
        "shard s2.safetensors listed in model.safetensors.index.json is missing or empty"
    ]
    (folder / "s2.safetensors").write_bytes(safetensors(16, b"y"))
    (folder / "s3.safetensors.part").write_bytes(b"z")
    assert script.completeness_problems(folder) == ["unfinished downloads: s3.safetensors.part"]
    (folder / "s3.safetensors.part").unlink()
    assert script.completeness_problems(folder) == []
    gguf = tmp_path / "g"
    gguf.mkdir()
    (gguf / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    assert script.completeness_problems(gguf) == []


def test_check_only_and_wait_fail_clearly(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "prefilled"
    folder.mkdir()
    assert script.main(["--dest", str(folder), "--check-only"]) == 1
    assert "not usable: config.json is missing" in capsys.readouterr().err
    assert script.main(["--dest", str(folder), "--wait", "0.05", "--poll", "0.01"]) == 1
    assert "not complete after" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dest", "/x"], "give --source, --wait or --check-only"),
        (["--dest", "/x", "--source", "hf"], "needs --model-id"),
        (["--dest", "/x", "--source", "s3", "--uri", "gs://b/p"], "needs --uri s3://bucket/prefix"),
    ],
)
def test_bad_arguments(script: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_chart_ships_this_script(rendered: dict[str, Rendered]) -> None:
    cm = rendered["gke-base"].one("ConfigMap", "model-download")
    assert cm["data"]["download_model.py"] == SCRIPT.read_text()


def wait(script: ModuleType, dest: Path, *identity: str) -> int:
    return script.main(["--dest", str(dest), "--wait", "0.05", "--poll", "0.01", *identity])


def test_wait_needs_the_marker_of_the_same_model(
    script: ModuleType, hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_truncated_shard_is_caught_by_its_size(
    script: ModuleType, hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_size_the_hub_lists_must_match(
    script: ModuleType, hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
        assert (
            script.main(
                ["--source", "gcs", "--uri", "gs://weights/deepseek/r1", "--dest", str(dest), "--attempts", "1"]
            )
            == 0
        )
    finally:
        fake.server.shutdown()
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert all(auth == "Bearer ya29.test" for path, auth, _ in fake.requests if path.startswith("/storage/"))
    assert (f"/storage/v1/b/weights/o/deepseek%2Fr1%2F{shard}", "Bearer ya29.test", "bytes=1000-") in fake.requests
    marker = json.loads((dest / script.MARKER).read_text())
    assert marker["identity"]["uri"] == "gs://weights/deepseek/r1" and marker["files"][shard] == len(FILES[shard])
