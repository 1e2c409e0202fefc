"""GPU check of the server engine on a randomly initialised DeepSeek-R1-Distill-Qwen-7B-shaped model.

Builds the model from the architecture in the catalog (no download), saves it once (bf16 safetensors,
in /dev/shm when it fits), then loads it through the server's own loader (`inference.server.loading`)
in bf16 and in bnb-4bit and runs the server's engine (`inference.server.engine`) on it. Prints JSON:

- weight memory measured (torch.cuda.memory_allocated after load, model.get_memory_footprint())
  against the planner's prediction (`infra.planner.plan_deployment(..., tier="base")`);
- decode tokens/s at batch 1 and 32 (64 new tokens per sequence, random prompt ids, greedy, EOS ignored);
- per batch, the engine's decode step time (``engine_ms_per_step``: forward pass plus scheduling, median
  over the run's steps) beside a bare decode step of the same model right after it (``bare_ms_per_step``:
  ``model(next_ids, cache)`` plus argmax and ``.tolist()``, in a thread like the engine's) and their
  ratio, so the engine's own overhead shows directly.

Needs torch, transformers, accelerate, bitsandbytes and this repository (pydantic and PyYAML too for the
catalog and the planner; without them it uses the published config.json values and prints no prediction).
Runs in ~2-4 min on one H200.

    python benchmarks/gpu_engine_check.py               # CUDA, the 7B architecture
    python benchmarks/gpu_engine_check.py --tiny        # CPU, a tiny Qwen2 (tests the code path)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

MODEL = "deepseek-r1-distill-qwen-7b"
# DeepSeek-R1-Distill-Qwen-7B config.json, used when the catalog cannot be imported.
FALLBACK_ARCH = {
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "intermediate_size": 18944,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}
TINY_ARCH = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def architecture(tiny: bool) -> tuple[dict, str]:
    if tiny:
        return dict(TINY_ARCH), "tiny"
    try:
        from infra.catalog import load_catalog

        spec = load_catalog().model(MODEL)
        arch = {
            "hidden_size": spec.hidden_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "intermediate_size": spec.intermediate_size,
            "vocab_size": spec.vocab_size,
            "max_position_embeddings": spec.max_context,
            "tie_word_embeddings": spec.tie_word_embeddings,
        }
        return arch, "catalog"
    except Exception as exc:  # catalog missing or changed: the published config.json values
        print(f"catalog unavailable ({type(exc).__name__}: {exc}); using built-in values", file=sys.stderr)
        return dict(FALLBACK_ARCH), "builtin"


def predicted_weight_bytes(quantization: str) -> int | None:
    try:
        from infra.planner import plan_deployment

        return int(plan_deployment(MODEL, "base", quantization).weight_bytes)
    except Exception as exc:
        print(f"planner unavailable for {quantization} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


class WordTokenizer:
    """Stands in for a tokenizer: the engine only needs decode() and the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"t{i} " for i in ids)


class NullMetrics:
    """Takes every metric call and does nothing (when prometheus_client is not installed)."""

    def __getattr__(self, name: str) -> NullMetrics:
        return self

    def __call__(self, *args, **kwargs) -> NullMetrics:
        return self


def engine_metrics(quantization: str):
    try:
        from inference.server.metrics import ServerMetrics

        return ServerMetrics(f"check-{quantization}")
    except ImportError:
        return NullMetrics()


def build_random_folder(arch: dict, device: str, folder: Path) -> float:
    """Random-initialise a Qwen2 model from ``arch`` on ``device`` in bf16 and save it; return seconds."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    started = time.monotonic()
    config = Qwen2Config(**arch, use_sliding_window=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return time.monotonic() - started


async def decode_rate(engine, vocab: int, batch: int, prompt_len: int, new_tokens: int, seed: int) -> dict:
    import torch

    from inference.server.engine.sampling import SamplingParams

    generator = torch.Generator().manual_seed(seed)
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    steps_before, seconds_before = engine.decode_steps, engine.decode_seconds
    started = time.monotonic()
    handles = [
        engine.submit(torch.randint(0, vocab, (prompt_len,), generator=generator).tolist(), params, None)
        for _ in range(batch)
    ]

    async def follow(handle) -> tuple[float, int]:
        first = None
        async for event in handle.events():
            if event.kind == "delta" and first is None:
                first = time.monotonic()
            if event.kind == "error":
                raise RuntimeError(event.message)
            if event.kind == "finish":
                return first or time.monotonic(), event.completion_tokens
        raise RuntimeError("generation ended without a finish event")

    outcomes = await asyncio.gather(*(follow(h) for h in handles))
    first_token = [first for first, _ in outcomes]
    tokens = sum(n for _, n in outcomes)
    ended = time.monotonic()
    decode_start = max(first_token)
    decode_tokens = tokens - batch  # the first token of each sequence comes from the prefill
    steps = engine.decode_steps - steps_before
    step_ms = round((engine.decode_seconds - seconds_before) / steps * 1000, 2) if steps else None
    return {
        "batch": batch,
        "prompt_tokens": prompt_len,
        "new_tokens": new_tokens,
        "generated_tokens": tokens,
        "ttft_s": round(max(first_token) - started, 4),
        "wall_s": round(ended - started, 3),
        "decode_tokens_per_s": round(decode_tokens / (ended - decode_start), 1) if ended > decode_start else None,
        "end_to_end_tokens_per_s": round(tokens / (ended - started), 1),
        "engine_ms_per_step": step_ms,
    }


def bare_step_ms(model, vocab: int, batch: int, prompt_len: int, steps: int, seed: int) -> float:
    """Median ms of a bare decode step (no engine): ``model(next_ids, cache)``, argmax, ``.tolist()``.

    Runs in its own thread, as the engine's forward passes do (on a shared CPU the main thread can be
    much slower: torch's thread pool), on a fresh cache after a ``prompt_len`` prefill."""
    import threading

    import torch
    from transformers import DynamicCache

    from inference.server.engine.kv_batch import _cache_kwargs

    times: list[float] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                generator = torch.Generator().manual_seed(seed)
                ids = torch.randint(0, vocab, (batch, prompt_len), generator=generator).to(model.device)
                kwargs = _cache_kwargs(model, DynamicCache(config=model.config))
                out = model(input_ids=ids, logits_to_keep=1, **kwargs)
                next_ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                next_ids.tolist()
                for _ in range(steps):
                    begin = time.perf_counter()
                    out = model(input_ids=next_ids, **kwargs)
                    next_ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                    next_ids.tolist()
                    times.append(time.perf_counter() - begin)
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="bare-decode")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return round(sorted(times)[len(times) // 2] * 1000, 2)


def check(folder: Path, quantization: str, device: str, arch: dict, args) -> dict:
    import torch

    from inference.server.engine.scheduler import Engine, EngineLimits
    from inference.server.quantization import load_kwargs

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    started = time.monotonic()
    from transformers import AutoModelForCausalLM

    # the server's loading arguments (a random model has no tokenizer, so not load_model itself)
    model = AutoModelForCausalLM.from_pretrained(str(folder), **load_kwargs(quantization, device))
    model.eval()
    load_s = time.monotonic() - started
    result: dict = {
        "quantization": quantization,
        "load_s": round(load_s, 2),
        "memory_footprint_bytes": int(model.get_memory_footprint()),
    }
    if device == "cuda":
        torch.cuda.synchronize()
        result["memory_allocated_bytes"] = int(torch.cuda.memory_allocated() - base)
    predicted = None if args.tiny else predicted_weight_bytes(quantization)
    result["predicted_weight_bytes"] = predicted
    measured = result.get("memory_allocated_bytes", result["memory_footprint_bytes"])
    result["measured_over_predicted"] = round(measured / predicted, 3) if predicted else None

    limits = EngineLimits(
        max_num_seqs=max(args.batches),
        max_queue=max(args.batches) + 1,
        max_model_len=args.prompt_len + args.new_tokens + 8,
        prefix_cache_tokens=0,
    )
    engine = Engine(
        model, WordTokenizer(arch["vocab_size"]), limits, eos_ids=set(), pad_id=0, metrics=engine_metrics(quantization)
    )

    async def run(engine: Engine) -> list[dict]:
        engine.start()
        await decode_rate(engine, arch["vocab_size"], 2, 16, 4, seed=0)  # warm-up (kernels, allocator)
        rates = []
        for b in args.batches:
            rate = await decode_rate(engine, arch["vocab_size"], b, args.prompt_len, args.new_tokens, seed=b)
            # the same model's bare decode step right after, on the same prompt length (engine idle)
            rate["bare_ms_per_step"] = bare_step_ms(
                engine.model, arch["vocab_size"], b, args.prompt_len, max(args.new_tokens - 1, 1), seed=b
            )
            if rate["engine_ms_per_step"] and rate["bare_ms_per_step"]:
                rate["engine_over_bare"] = round(rate["engine_ms_per_step"] / rate["bare_ms_per_step"], 2)
            rates.append(rate)
        return rates

    try:
        result["decode"] = asyncio.run(run(engine))
    finally:
        engine.shutdown()
    if device == "cuda":
        result["peak_memory_allocated_bytes"] = int(torch.cuda.max_memory_allocated() - base)
    del engine, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def scratch_dir(need_bytes: int) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > need_bytes * 1.2:
        return Path(tempfile.mkdtemp(prefix="dsdeploy-gpu-check-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="dsdeploy-gpu-check-"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny Qwen2 on CPU (tests the code path)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quantizations", default="bf16,bnb-4bit")
    parser.add_argument("--batches", default="1,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 with --tiny, else torch's "
        "choice; on a small shared CPU several OpenMP threads make step times erratic)",
    )
    args = parser.parse_args(argv)

    import torch
    import transformers

    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    )
    arch, arch_source = architecture(args.tiny)
    started = time.monotonic()
    report: dict = {
        "model": "tiny-qwen2" if args.tiny else MODEL,
        "architecture": arch,
        "architecture_source": arch_source,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "results": [],
    }
    try:
        import bitsandbytes

        report["versions"]["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        report["versions"]["bitsandbytes"] = None
    params = (
        arch["num_hidden_layers"] * (4 * arch["hidden_size"] ** 2 + 3 * arch["hidden_size"] * arch["intermediate_size"])
        + 2 * arch["vocab_size"] * arch["hidden_size"]
    )
    folder = scratch_dir(2 * params)
    try:
        report["build_and_save_s"] = round(build_random_folder(arch, device, folder), 2)
        for quantization in args.quantizations.split(","):
            try:
                report["results"].append(check(folder, quantization, device, arch, args))
            except Exception as exc:  # report what failed and go on with the next one
                report["results"].append({"quantization": quantization, "error": f"{type(exc).__name__}: {exc}"})
            print(json.dumps(report["results"][-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report["total_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if all("error" not in r for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
