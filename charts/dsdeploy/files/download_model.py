"""Fetch model weights into the chart's model cache volume, or check that a folder is complete.

Run by the chart's download Job (``--source``), and by the engine's init container (``--wait`` for the
Job's completion marker, or ``--check-only`` for an air-gapped, pre-filled volume). Standard library
only at import; the hub client of the chosen source is imported when needed (huggingface_hub,
modelscope, boto3 are all in the vLLM image). Every attempt resumes the files already on the volume;
the marker file is written only after the completeness check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

MARKER = ".dsdeploy-complete"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def log(message: str) -> None:
    print(f"[download-model] {message}", file=sys.stderr, flush=True)


def completeness_problems(folder: Path) -> list[str]:
    """What is missing for ``folder`` to hold a loadable model; empty when complete."""
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    problems: list[str] = []
    files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts]
    ggufs = [p for p in files if p.suffix == ".gguf"]
    if not (folder / "config.json").is_file() and not ggufs:
        problems.append("config.json is missing (and there is no .gguf file)")
    for index in folder.glob("*.index.json"):
        try:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        except (OSError, ValueError) as exc:
            problems.append(f"{index.name} is unreadable: {exc}")
            continue
        for shard in shards:
            path = folder / shard
            if not path.is_file() or path.stat().st_size == 0:
                problems.append(f"shard {shard} listed in {index.name} is missing or empty")
    if not any(p.suffix in WEIGHT_SUFFIXES and p.stat().st_size > 0 for p in files):
        problems.append(f"no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    partial = [p.name for p in files if p.name.endswith((".incomplete", ".part"))]
    if partial:
        problems.append(f"unfinished downloads: {', '.join(sorted(partial)[:5])}")
    return problems


def read_token() -> str | None:
    path = os.environ.get("DSDEPLOY_TOKEN_FILE")
    if not path:
        return None
    token = Path(path).read_text().strip()
    return token or None


def fetch_hf(args: argparse.Namespace, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=args.model_id,
        revision=args.revision,
        local_dir=str(dest),
        token=read_token(),
        endpoint=os.environ.get("HF_ENDPOINT") or None,
        allow_patterns=args.allow_pattern or None,
        max_workers=args.max_workers,
    )


def fetch_modelscope(args: argparse.Namespace, dest: Path) -> None:
    from modelscope import snapshot_download
    from modelscope.hub.api import HubApi

    token = read_token()
    if token:
        HubApi().login(token)
    snapshot_download(args.model_id, revision=args.revision, local_dir=str(dest),
                      allow_patterns=args.allow_pattern or None)


def fetch_object_store(args: argparse.Namespace, dest: Path) -> None:
    """Copy every object under an s3:// or gs:// prefix; objects already present with the same size are kept."""
    import boto3

    parts = urlsplit(args.uri)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or (
        "https://storage.googleapis.com" if parts.scheme == "gs" else None)
    client = boto3.client("s3", endpoint_url=endpoint)
    paginator = client.get_paginator("list_objects_v2")
    count = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/")
            if not rel or rel.endswith("/"):
                continue
            target = dest / rel
            if target.is_file() and target.stat().st_size == obj["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            client.download_file(bucket, obj["Key"], str(part))
            part.replace(target)
            count += 1
    log(f"copied {count} object(s) from {args.uri}")


FETCHERS = {"hf": fetch_hf, "modelscope": fetch_modelscope, "s3": fetch_object_store, "gcs": fetch_object_store}


def marker_identity(args: argparse.Namespace) -> dict[str, str]:
    return {"source": args.source, "model_id": args.model_id or "", "revision": args.revision or "",
            "uri": args.uri or ""}


def download(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    marker = dest / MARKER
    identity = marker_identity(args)
    if marker.is_file() and json.loads(marker.read_text()).get("identity") == identity \
            and not completeness_problems(dest):
        log(f"{dest} already holds {identity}; nothing to do")
        return 0
    marker.unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.deadline
    for attempt in range(1, args.attempts + 1):
        try:
            log(f"attempt {attempt}/{args.attempts}: {args.source} -> {dest}")
            FETCHERS[args.source](args, dest)
            problems = completeness_problems(dest)
            if not problems:
                marker.write_text(json.dumps({"identity": identity, "completed_at": time.time()}))
                log("complete")
                return 0
            log("incomplete after download: " + "; ".join(problems))
        except Exception as exc:  # any failure is retried, then reported
            log(f"attempt {attempt} failed: {type(exc).__name__}: {str(exc)[:300]}")
        wait = min(300.0, args.backoff * 2 ** (attempt - 1))
        if attempt == args.attempts or time.monotonic() + wait > deadline:
            break
        time.sleep(wait)
    log(f"giving up after {attempt} attempt(s); the files kept on the volume are resumed by the next run")
    return 1


def wait_for_marker(dest: Path, timeout_s: float, poll_s: float = 10.0) -> int:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if (dest / MARKER).is_file() and not completeness_problems(dest):
            log(f"{dest} is complete")
            return 0
        time.sleep(poll_s)
    log(f"{dest} not complete after {timeout_s:.0f}s: " + "; ".join(completeness_problems(dest) or ["no marker"]))
    return 1


def check_only(dest: Path) -> int:
    problems = completeness_problems(dest)
    if problems:
        log(f"model folder {dest} is not usable: " + "; ".join(problems))
        return 1
    log(f"{dest} is complete")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, help="model folder on the cache volume")
    parser.add_argument("--source", choices=sorted(FETCHERS))
    parser.add_argument("--model-id")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--uri", help="s3://bucket/prefix or gs://bucket/prefix")
    parser.add_argument("--allow-pattern", action="append", default=[])
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=10800, help="seconds for all attempts")
    parser.add_argument("--backoff", type=float, default=10.0, help="seconds before the 2nd attempt (doubles)")
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the download marker")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between checks with --wait")
    parser.add_argument("--check-only", action="store_true", help="only check the folder is complete")
    args = parser.parse_args(argv)
    if not (args.wait or args.check_only or args.source):
        parser.error("give --source, --wait or --check-only")
    if args.source in ("hf", "modelscope") and not args.model_id:
        parser.error(f"--source {args.source} needs --model-id")
    if args.source in ("s3", "gcs"):
        scheme = "s3" if args.source == "s3" else "gs"
        if not args.uri or urlsplit(args.uri).scheme != scheme or not urlsplit(args.uri).netloc:
            parser.error(f"--source {args.source} needs --uri {scheme}://bucket/prefix, got {args.uri!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dest = Path(args.dest)
    if args.check_only:
        return check_only(dest)
    if args.wait:
        return wait_for_marker(dest, args.wait, args.poll)
    return download(args)


if __name__ == "__main__":
    sys.exit(main())
