"""Compliance matrix per deployment mode: what leaves, audit, keys, models, export control.

The article's matrix (section 3.2) has three rows - data sovereignty, audit trail, export
control - and two columns (API, local). This module states each for dsdeploy's three modes, reading the
hybrid rules from the router's own configuration (``inference.router.config``), so the matrix says what
the deployed router will actually do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from infra.decision.currency import DecisionInputError

Mode = Literal["local-only", "hybrid", "cloud-only"]
MODES: tuple[str, ...] = ("local-only", "hybrid", "cloud-only")
# ECCN 3A090.a: "total processing performance" (TPP) >= 4800; TPP = dense TFLOP/s x bit length of the operation.
TPP_THRESHOLD = 4800

SOURCES = {
    "nvidia-8k-2022": "NVIDIA Form 8-K of 2022-08-31: on 2022-08-26 the US government imposed a license requirement, "
    "effective immediately, for any export to China (including Hong Kong) and Russia of the A100 and "
    "H100, quoted at http://www.indiandefensenews.in/2022/09/us-restricts-export-of-nvidia-computer.html",
    "bis-2022": "BIS interim final rule of 2022-10-07 (advanced computing ICs, ECCN 3A090 / 4A090; license "
    "requirement for China), summary: https://wsgr.com/en/insights/"
    "bis-implements-new-semiconductor-and-supercomputer-related-export-controls-and-end-use-controls.html",
    "bis-2023": "BIS interim final rules of 2023-10-17, effective 2023-11-17 (TPP and performance-density "
    "thresholds; license requirement extended beyond China to dozens of countries), "
    "summary: https://www.jdsupra.com/legalnews/bis-expands-export-controls-on-advanced-4995082/ "
    "and https://natlawreview.com/node/257706/printable/print; NVIDIA Form 8-K of 2023-10-17: "
    "https://sec.gov/Archives/edgar/data/1045810/000104581023000217/0001045810-23-000217.txt",
    "deepseek-privacy": 'DeepSeek privacy policy: "We store the information we collect in secure servers '
    "located in the People's Republic of China\", quoted in "
    "https://www.wired.com/story/deepseek-ai-china-privacy-data/ (2025-01-27)",
    "deepseek-aliases": "DeepSeek pricing page: deepseek-chat / deepseek-reasoner are aliases whose model "
    "changed over time (V3 -> V3.2 -> V4 Flash), https://api-docs.deepseek.com/quick_start/pricing",
    "router": "docs/router.md (policy.*, audit.*, auth.*, cloud.api_key)",
}


class ComplianceRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dimension: str
    answer: str
    rule: str  # where it is enforced or what it rests on


class ComplianceMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Mode
    router_config: str | None
    rows: list[ComplianceRow]
    gpu_tpp: dict[str, float]
    sources: list[str]
    warnings: list[str]


def _router_view(path: str | None) -> tuple[Any, Any, Any, Any]:
    """(policy, audit, auth, cloud) from a router config file, or the router's defaults."""
    from inference.router.config import (
        AuditConfig,
        AuthConfig,
        PolicyConfig,
        RouterConfigError,
        load_router_config,
    )

    if path is None:
        return PolicyConfig(), AuditConfig(), AuthConfig(), None
    try:
        cfg = load_router_config(path, resolve_env=False)
    except RouterConfigError as exc:
        raise DecisionInputError(f"--router-config: {exc}") from None
    return cfg.policy, cfg.audit, cfg.auth, cfg.cloud


def _audit_fields() -> tuple[str, ...]:
    try:
        from inference.router.audit import AUDIT_FIELDS
    except ImportError:  # router not installed: describe it generally
        return ("request id", "time", "key id", "data class", "route", "model", "tokens", "status")
    return tuple(AUDIT_FIELDS)


def gpu_tpp(gpus: dict[str, Any]) -> dict[str, float]:
    """TPP per catalog GPU from its dense datasheet figures: max(BF16 TFLOP/s x 16, FP8 TFLOP/s x 8)."""
    out = {}
    for key, g in gpus.items():
        tpp = g.bf16_tflops * 16
        if g.fp8_tflops:
            tpp = max(tpp, g.fp8_tflops * 8)
        out[key] = float(tpp)
    return out


def _export_row(mode: str, tpp: dict[str, float]) -> ComplianceRow:
    over = sorted(k for k, v in tpp.items() if v >= TPP_THRESHOLD)
    under = sorted(k for k, v in tpp.items() if v < TPP_THRESHOLD)
    below = (
        f"; below it: {', '.join(under)} (the lower TPP + performance-density test is not evaluated here)"
        if under
        else ""
    )
    gpu_text = (
        f"By dense datasheet figures, {', '.join(over) or 'none'} exceed the ECCN 3A090 threshold of TPP "
        f"{TPP_THRESHOLD} (TPP = TFLOP/s x bit length){below}. Exports of A100 and H100 to China (including "
        "Hong Kong) and Russia have needed a US license since 2022-08-26; the BIS rule of 2022-10-07 made this a "
        "rule for all chips above the threshold to China (H200 has the H100's compute and is above it too), and "
        "the 2023-10-17 rules extended the license requirement to dozens of further countries. Cloud providers "
        "apply these rules to their GPU regions and customers, and GPU machine types exist only in some regions. "
        "The rules changed again after 2023: check the current EAR for your destination before buying or "
        "renting (a factual note, not legal advice)."
    )
    if mode == "cloud-only":
        return ComplianceRow(
            dimension="Export control",
            rule="nvidia-8k-2022, bis-2022, bis-2023",
            answer="You hold no GPUs, so GPU export licensing is not your question; whether you "
            "may send your data to the provider is (see 'What leaves'). For reference: " + gpu_text,
        )
    return ComplianceRow(dimension="Export control", rule="nvidia-8k-2022, bis-2022, bis-2023", answer=gpu_text)


def compliance_matrix(mode: str, router_config: str | None = None) -> ComplianceMatrix:
    if mode not in MODES:
        raise DecisionInputError(f"--mode {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    from infra.catalog import load_catalog

    policy, audit, auth, cloud = _router_view(router_config)
    tpp = gpu_tpp(load_catalog().gpus)
    warnings: list[str] = []
    if mode == "local-only" and cloud is not None:
        warnings.append("the router config has a cloud section: with it the deployment is hybrid, not local-only")
    if mode != "local-only" and router_config is not None and cloud is None:
        warnings.append(
            f"the router config has no cloud section: nothing can leave, the deployment is local-only, not {mode}"
        )
    base_url = cloud.base_url if cloud is not None else "https://api.deepseek.com"
    per_key = sorted({k.default_class for k in auth.keys if k.default_class})
    if not audit.enabled:
        audit_text = "audit.enabled is false: the router writes no audit records."
    else:
        where = (
            "standard output (collected by your cluster's log pipeline)"
            if audit.path == "-"
            else f"the file {audit.path}"
        )
        grain = {
            "off": f"metadata only ({', '.join(_audit_fields())}), no prompt content",
            "hash": "metadata plus a SHA-256 hash of the messages (proves what was sent without storing it)",
            "full": "metadata plus the full prompt text: the audit store then holds the data itself and "
            "needs the protection of the most restricted class it contains",
        }[audit.prompts]
        audit_text = f"One JSON line per request, written by the router to {where}, under your control; granularity audit.prompts={audit.prompts}: {grain}."
    provider = (
        "Requests sent to the API are also logged by the provider under its terms; DeepSeek states it "
        "stores collected information on servers in the People's Republic of China."
    )
    rows: list[ComplianceRow] = []
    if mode == "local-only":
        rows.append(
            ComplianceRow(
                dimension="What leaves",
                rule="router: no cloud section",
                answer="Nothing: prompts and answers stay on your GPUs; the router has no cloud route.",
            )
        )
        rows.append(ComplianceRow(dimension="Audit records", rule="router audit.*", answer=audit_text))
        rows.append(
            ComplianceRow(
                dimension="Keys",
                rule="router auth.*",
                answer="Client API keys are yours; the router stores only their SHA-256 digests. No cloud key exists.",
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Models",
                rule="catalog + chart values",
                answer="You choose the weights (Hugging Face repo id) and when to change them; the same model answers until you redeploy.",
            )
        )
    elif mode == "hybrid":
        allowed = ", ".join(policy.cloud_allowed) or "none"
        rows.append(
            ComplianceRow(
                dimension="What leaves",
                rule="router policy.default_class, policy.cloud_allowed, auth.keys[].default_class",
                answer=(
                    f"Only requests whose data class is in cloud_allowed [{allowed}] may go to {base_url}, and only when "
                    f"the local pool fails or is saturated. A request without X-Data-Class is '{policy.default_class}'"
                    + (f" (per-key defaults in use: {', '.join(per_key)})" if per_key else "")
                    + ". Other classes never leave, whatever fails: the client gets an error instead."
                ),
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Audit records",
                rule="router audit.*",
                answer=audit_text + " Each record says whether the request went local or cloud. " + provider,
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Keys",
                rule="router auth.*, cloud.api_key",
                answer="Client keys: yours (digests only in the config). The cloud API key is yours, held in a "
                "Kubernetes Secret / environment variable (a literal key in the config is refused); the "
                "provider issues it and can revoke it.",
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Models",
                rule="catalog; router cloud.models",
                answer="Local: you choose the weights and when to change them. Fallback: the provider decides "
                "which model answers behind a name such as deepseek-chat and changes it over time, so "
                "answers of the two routes can differ.",
            )
        )
    else:
        rows.append(
            ComplianceRow(
                dimension="What leaves",
                rule="router: upstreams empty",
                answer=f"Every request, its prompts and answers go to {base_url}. " + provider,
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Audit records",
                rule="router audit.* (if the router is used)",
                answer=audit_text + " " + provider,
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Keys",
                rule="cloud.api_key",
                answer="The provider issues the API key and can revoke it; you hold it in a Secret.",
            )
        )
        rows.append(
            ComplianceRow(
                dimension="Models",
                rule="provider",
                answer="The provider decides which model answers behind each name and changes it over time.",
            )
        )
    rows.append(_export_row(mode, tpp))
    used = ["router", "nvidia-8k-2022", "bis-2022", "bis-2023"] + (
        ["deepseek-privacy", "deepseek-aliases"] if mode != "local-only" else []
    )
    return ComplianceMatrix(
        mode=mode,
        router_config=router_config,
        rows=rows,
        gpu_tpp=tpp,
        sources=[f"{k}: {SOURCES[k]}" for k in used],
        warnings=warnings,
    )
