"""Side-by-side benchmark: the dsdeploy model server against `transformers serve --continuous-batching`
(and llama-cpp-python's server on the GGUF, if it is installed), same SmolLM2-135M-Instruct weights.

At concurrency 1, 8 and 32 it sends waves of streaming chat requests and measures output tokens/s
(tokens counted with the model's tokenizer, the same way for every server), time to first token
p50/p99, and the server process's peak RSS. Prints a table and the ratios ours / peer. It asserts
nothing: run it, read it.

    .venv/bin/python benchmarks/bench_server.py [--max-tokens 32] [--rounds 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from inference.server.model_files import prepare_model_folder, smollm2_gguf_path  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

TOPICS = [
    "a dragon",
    "the sea",
    "a robot",
    "a city at night",
    "a long train journey",
    "a lost key",
    "winter",
    "a lighthouse",
    "a chess game",
    "a small garden",
    "the moon",
    "an old library",
]


class RssPeak:
    """Samples the RSS of a process and its children every 50 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss + sum(c.memory_info().rss for c in self.process.children(True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def one_request(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int
) -> tuple[float, str]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first, parts = None, []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            text = (choices[0].get("delta") or {}).get("content") if choices else None
            if text:
                if first is None:
                    first = time.perf_counter() - started
                parts.append(text)
    return (first if first is not None else time.perf_counter() - started), "".join(parts)


async def run_level(url: str, model: str, concurrency: int, rounds: int, max_tokens: int, tokenizer) -> dict:
    ttfts: list[float] = []
    tokens = 0
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        started = time.perf_counter()
        for r in range(rounds):
            prompts = [f"Write a long story about {TOPICS[(i + r) % len(TOPICS)]}." for i in range(concurrency)]
            results = await asyncio.gather(*(one_request(client, url, model, p, max_tokens) for p in prompts))
            for ttft, text in results:
                ttfts.append(ttft)
                tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": concurrency * rounds,
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_s": round(statistics.median(ttfts), 3),
        "ttft_p99_s": round(percentile(ttfts, 99), 3),
    }


def bench(name: str, command: list[str], ready_path: str, model: str, args, tokenizer, env: dict) -> dict:
    print(f"== {name}: starting", file=sys.stderr, flush=True)
    proc = ServerProcess(command, ready_path=ready_path, env=env, start_timeout=300).launch()
    rss = RssPeak(proc.process.pid)
    try:
        proc.wait_ready()
        asyncio.run(run_level(proc.url, model, 2, 1, 4, tokenizer))  # warm-up; loads lazily-loading servers
        levels = []
        for concurrency in args.concurrency:
            level = asyncio.run(run_level(proc.url, model, concurrency, args.rounds, args.max_tokens, tokenizer))
            print(f"   {name} c={concurrency}: {level}", file=sys.stderr, flush=True)
            levels.append(level)
    finally:
        proc.stop()
        peak = rss.stop()
    return {"server": name, "peak_rss_mib": round(peak / 2**20, 1), "levels": levels}


def transformers_serve(folder: Path, slots: int) -> list[str]:
    """`transformers serve` with continuous batching, its KV cache sized for ``slots`` x 1024 tokens
    (unconfigured it grows to several GB of RSS)."""
    return [
        shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers",
        "serve",
        str(folder),
        "--continuous-batching",
        "--cb-block-size",
        "32",
        "--cb-num-blocks",
        str(slots * 32),
        "--cb-max-batch-tokens",
        "2048",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        "warning",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dsdeploy server vs transformers serve (and llama.cpp)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="waves of `concurrency` requests per level")
    parser.add_argument("--concurrency", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every server (same for all)")
    parser.add_argument("--only", help="comma-separated subset: dsdeploy,transformers,llama-cpp")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    folder = prepare_model_folder(gguf, REPO_ROOT / ".cache" / "models")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    slots = str(max(args.concurrency))
    servers = {
        "dsdeploy": (
            [
                sys.executable,
                "-m",
                "inference.server",
                "--model",
                str(folder),
                "--served-model-name",
                "smollm2",
                "--device",
                "cpu",
                "--max-model-len",
                "2048",
                "--max-num-seqs",
                slots,
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
            ],
            "/ready",
            "smollm2",
        ),
        "transformers": (transformers_serve(folder, max(args.concurrency)), "/health", str(folder)),
    }
    if importlib.util.find_spec("llama_cpp") is not None:
        servers["llama-cpp"] = (
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--n_threads",
                str(args.threads),
                "--n_ctx",
                "8192",
                "--model_alias",
                "smollm2",
            ],
            "/v1/models",
            "smollm2",
        )
    else:
        print("llama-cpp-python is not installed: its server is skipped", file=sys.stderr)
    wanted = set(args.only.split(",")) if args.only else set(servers)
    results = [
        bench(name, cmd, ready, model, args, tokenizer, env)
        for name, (cmd, ready, model) in servers.items()
        if name in wanted
    ]

    print(
        f"\nSmolLM2-135M-Instruct (float32, CPU, {args.threads} thread(s)), {args.max_tokens} max tokens, "
        f"{args.rounds} wave(s) per level, {os.cpu_count()} cores"
    )
    print(f"{'server':<14}{'conc':>5}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'peak RSS MiB':>14}")
    for result in results:
        for level in result["levels"]:
            print(
                f"{result['server']:<14}{level['concurrency']:>5}{level['tokens_per_s']:>9}"
                f"{level['ttft_p50_s']:>10}{level['ttft_p99_s']:>10}{result['peak_rss_mib']:>14}"
            )
    ours = next((r for r in results if r["server"] == "dsdeploy"), None)
    for peer in (r for r in results if r["server"] != "dsdeploy"):
        if ours is None:
            break
        print(f"\nratios dsdeploy / {peer['server']} (throughput >1 is better; TTFT and RSS <1 is better)")
        for mine, theirs in zip(ours["levels"], peer["levels"], strict=True):
            print(
                f"  c={mine['concurrency']:<3} tok/s x{mine['tokens_per_s'] / theirs['tokens_per_s']:.2f}  "
                f"TTFT p50 x{mine['ttft_p50_s'] / theirs['ttft_p50_s']:.2f}  "
                f"TTFT p99 x{mine['ttft_p99_s'] / theirs['ttft_p99_s']:.2f}"
            )
        print(f"  peak RSS x{ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
