"""`dsdeploy report`: one Markdown document with plan, cost (chart next to it) and compliance."""

from __future__ import annotations

import pytest

from dsdeploy.cli import main


def test_report_file_with_chart(tmp_path, capsys):
    out = tmp_path / "decision.md"
    router = tmp_path / "router.yaml"
    router.write_text(
        "upstreams: [{url: 'http://127.0.0.1:8001'}]\ncloud: {api_key: '${K}'}\n"
        "policy: {default_class: internal, cloud_allowed: [public]}\naudit: {prompts: full}\n"
    )
    rc = main(
        [
            "report",
            "--model",
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "--tier",
            "base",
            "--volume",
            "2000000",
            "--router-config",
            str(router),
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    assert "report written to" in capsys.readouterr().out
    text = out.read_text()
    chart = tmp_path / "decision-cost.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("# Deployment decision", "## 1. Deployment plan", "## 2. Cost", "## 3. Compliance"):
        assert heading in text
    assert "![Annual cost against volume, break-even points marked](decision-cost.png)" in text
    assert "engine flags" in text and "--tensor-parallel-size" in text
    # the plan shown is the one the cost is computed from: 1,024 tokens for 500 + 500, not the planner's 32K
    assert "| max model length | 1,024 tokens |" in text and "--max-model-len 1024" in text
    assert "| concurrent sequences | 256 |" in text and "Total cost over 3 years" in text
    assert "| base on-prem |" in text and "Break-even volume" in text
    assert "audit.prompts=full" in text and "cloud_allowed [public]" in text
    assert "Sources:" in text and "2022-10-07" in text


def test_report_to_stdout_and_bad_mode(capsys):
    rc = main(
        [
            "report",
            "--model",
            "r1-distill-qwen-7b",
            "--tier",
            "base",
            "--volume",
            "1e5",
            "--mode",
            "local-only",
            "--throughput-tokens-per-s",
            "800",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "## 3. Compliance" in text and "Nothing: prompts and answers stay" in text
    assert "![" not in text  # no chart without -o
    rc = main(["report", "--model", "r1-distill-qwen-7b", "--tier", "base", "--volume", "-3"])
    assert rc == 2 and "--volume: -3.0 is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "offline"], "argument --mode: invalid choice: 'offline'"),
        (["--model", ""], "argument --model: must not be empty"),
        (["--volume", "inf"], "argument --volume: 'inf' is not allowed; give a finite number"),
        (["-o", ""], "argument -o/--output: must not be empty"),
        (["--router-config", ""], "argument --router-config: must not be empty"),
    ],
)
def test_report_bad_arguments_are_one_line_errors(capsys, argv, message):
    args = ["--model", "r1-distill-qwen-7b", "--tier", "base", "--volume", "1e5", *argv]  # the last value wins
    with pytest.raises(SystemExit) as exit_:
        main(["report", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
