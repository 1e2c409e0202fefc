"""Compliance matrix per mode, read from a real router config file."""

from __future__ import annotations

import pytest

from infra.decision.compliance import TPP_THRESHOLD, compliance_matrix
from infra.decision.currency import DecisionInputError

ROUTER_YAML = """
upstreams:
  - url: http://127.0.0.1:8001
cloud:
  base_url: https://api.deepseek.com
  api_key: ${DEEPSEEK_API_KEY}
policy:
  default_class: restricted
  cloud_allowed: [public, internal]
audit:
  path: /var/log/dsdeploy/audit.jsonl
  prompts: hash
"""


def _rows(matrix):
    return {r.dimension: r.answer for r in matrix.rows}


def test_hybrid_reads_the_router_policy_and_audit_granularity(tmp_path):
    cfg = tmp_path / "router.yaml"
    cfg.write_text(ROUTER_YAML)
    m = compliance_matrix("hybrid", str(cfg))
    rows = _rows(m)
    assert set(rows) == {"What leaves", "Audit records", "Keys", "Models", "Export control"}
    assert "[public, internal]" in rows["What leaves"] and "'restricted'" in rows["What leaves"]
    assert "never leave" in rows["What leaves"]
    assert "/var/log/dsdeploy/audit.jsonl" in rows["Audit records"] and "audit.prompts=hash" in rows["Audit records"]
    assert "SHA-256" in rows["Audit records"]
    assert "People's Republic of China" in rows["Audit records"]
    assert not m.warnings


def test_defaults_without_a_config_follow_the_router_defaults():
    rows = _rows(compliance_matrix("hybrid"))
    assert "[public]" in rows["What leaves"] and "'internal'" in rows["What leaves"]
    assert "audit.prompts=off" in rows["Audit records"] and "no prompt content" in rows["Audit records"]
    local = _rows(compliance_matrix("local-only"))
    assert local["What leaves"].startswith("Nothing")
    cloud = _rows(compliance_matrix("cloud-only"))
    assert cloud["What leaves"].startswith("Every request")
    assert "no GPUs" in cloud["Export control"]


def test_export_control_note_uses_catalog_gpus_and_cites_rules():
    m = compliance_matrix("local-only")
    # A100: 312 dense BF16 TFLOP/s x 16 = 4,992; H100: 1,979 dense FP8 x 8 = 15,832; L4: 121 x 16 = 1,936
    assert m.gpu_tpp["A100-40GB"] == pytest.approx(4992)
    assert m.gpu_tpp["H100-80GB"] == pytest.approx(15832)
    assert m.gpu_tpp["L4-24GB"] < TPP_THRESHOLD
    text = _rows(m)["Export control"]
    assert "A100-40GB" in text and "H100-80GB" in text and "H200-141GB" in text and "China" in text
    assert any("2022-10-07" in s for s in m.sources) and any("2023-10-17" in s for s in m.sources)


def test_mode_and_config_mismatches(tmp_path):
    cfg = tmp_path / "router.yaml"
    cfg.write_text(ROUTER_YAML)
    assert any("hybrid, not local-only" in w for w in compliance_matrix("local-only", str(cfg)).warnings)
    with pytest.raises(DecisionInputError, match="--mode 'offline' is not allowed"):
        compliance_matrix("offline")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cloud:\n  api_key: sk-literal\n")
    with pytest.raises(DecisionInputError, match="--router-config"):
        compliance_matrix("hybrid", str(bad))


def test_compliance_command_prints_the_matrix_of_a_mode(tmp_path, capsys):
    import json

    from dsdeploy.cli import main

    cfg = tmp_path / "router.yaml"
    cfg.write_text(ROUTER_YAML)
    assert main(["compliance", "--mode", "hybrid", "--router-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    # the answer quotes the policy's list literally (rich markup must not swallow "[public, internal]" as a tag)
    assert "Compliance matrix: hybrid" in out and "[public," in out and "Sources" in out
    assert main(["compliance", "--mode", "local-only", "--router-config", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "local-only" and len(data["rows"]) == 5
    assert [r["dimension"] for r in data["rows"]][0] == "What leaves"
    assert any("cloud section" in w for w in data["warnings"])
    assert main(["compliance", "--mode", "hybrid", "--router-config", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: --router-config: ")
    for argv in (["--mode", "offline"], [], ["--mode", "hybrid", "--router-config", ""]):
        with pytest.raises(SystemExit) as exit_:
            main(["compliance", *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
