"""Fetch model weights into the chart's model cache volume, or check that a folder is complete.

Run by the engine pod's init container (``--source``: download in place, the default on a ReadWriteOnce
cache), by the download Job (``--source``, on a ReadWriteMany cache), by the engine's init container
behind such a Job (``--wait`` for the Job's completion marker of the same model), or for an air-gapped,
pre-filled volume (``--check-only``). Standard library only at import; the hub client of the chosen
source is imported when needed (huggingface_hub, modelscope, boto3). GCS without HMAC keys uses the
JSON API with a token from the metadata server (GKE workload identity), standard library only.

Every name a hub or object store lists is checked before anything is written: a name that is absolute,
has a ``..`` or empty segment, uses this script's reserved names (``.dsdeploy-*``, the hub client's
``.cache``) or resolves outside the model's folder ends the download (no retry) naming the object, so a
hostile or broken listing can neither write into a sibling model's folder nor forge a completion marker.

Every attempt resumes the files already on the volume. The marker file is written only after the
completeness check passes, and records what was fetched (source, model id, revision, URI, allow
patterns) and every file's size as the hub or object store reported it; a marker of another model
never satisfies ``--wait``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

MARKER = ".dsdeploy-complete"
LOCK = ".dsdeploy-download.lock"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def log(message: str) -> None:
    print(f"[download-model] {message}", file=sys.stderr, flush=True)


class UnsafeName(ValueError):
    """A listed name that would be written outside the model's folder or over this script's own files."""


RESERVED_PREFIX = ".dsdeploy-"
HUB_CACHE = ".cache"  # the hub client's own resume records under the model folder


def safe_target(dest: Path, rel: str) -> Path:
    """``dest / rel`` for a name a hub or object store listed; raises UnsafeName for anything else."""
    shown = repr(rel)[:200]
    if not rel or "\x00" in rel or "\\" in rel:
        raise UnsafeName(f"object name {shown} is empty or holds a NUL or backslash")
    if rel.startswith("/"):
        raise UnsafeName(f"object name {shown} is an absolute path")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeName(f"object name {shown} has an empty, '.' or '..' segment")
    if parts[0] == HUB_CACHE or any(part.startswith(RESERVED_PREFIX) for part in parts):
        raise UnsafeName(f"object name {shown} uses a name reserved for the download's own records")
    target = dest / rel
    root = dest.resolve()
    resolved = target.resolve()  # follows any link already on the volume
    if resolved != root and root not in resolved.parents:
        raise UnsafeName(f"object name {shown} resolves to {resolved}, outside {root}")
    return target


def check_listing(dest: Path, names: Iterator[str] | list[str]) -> None:
    """Every listed name is safe (checked before the first byte is written)."""
    for rel in names:
        safe_target(dest, rel)


def _model_files(folder: Path) -> list[Path]:
    """Files of the model in ``folder``: not the hub client's .cache, not this script's own files."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(folder).parts and not p.name.startswith(".dsdeploy-")
    ]


def safetensors_problem(path: Path) -> str | None:
    """A truncated or corrupt .safetensors file: its size must be 8 + header + the last tensor's end."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is truncated ({size} bytes)"
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
            return f"{path.name} is truncated or not safetensors (header of {header_len} bytes, file {size})"
        try:
            header = json.loads(f.read(header_len))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return f"{path.name} has an unreadable safetensors header"
    if size != 8 + header_len + end:
        return f"{path.name} is {size} bytes but its header says {8 + header_len + end}"
    return None


def completeness_problems(folder: Path, expected: dict[str, int] | None = None) -> list[str]:
    """What is missing for ``folder`` to hold a loadable model; empty when complete.

    ``expected`` maps file paths (relative to ``folder``) to the sizes the hub or object store
    reported; every one of them must be there with that size.
    """
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    problems: list[str] = []
    files = _model_files(folder)
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
    for path in files:
        if path.suffix == ".safetensors" and path.stat().st_size > 0 and (problem := safetensors_problem(path)):
            problems.append(problem)
    wrong = []
    for rel, size in sorted((expected or {}).items()):
        try:
            path = safe_target(folder, rel)
        except UnsafeName as exc:
            wrong.append(str(exc))
            continue
        if not path.is_file():
            wrong.append(f"{rel} is missing")
        elif path.stat().st_size != size:
            wrong.append(f"{rel} is {path.stat().st_size} bytes, the source says {size}")
    if wrong:
        problems.append("; ".join(wrong[:5]) + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    return problems


def remove_damaged(folder: Path, expected: dict[str, int] | None) -> list[str]:
    """Delete files of the wrong size or with a broken safetensors header, and the hub client's record of
    them (which would otherwise make it skip them), so that the next attempt fetches them again."""
    removed = []
    for path in _model_files(folder) if folder.is_dir() else []:
        rel = str(path.relative_to(folder))
        wrong_size = expected is not None and rel in expected and path.stat().st_size != expected[rel]
        broken = path.suffix == ".safetensors" and safetensors_problem(path) is not None
        if wrong_size or broken:
            path.unlink()
            (folder / ".cache" / "huggingface" / "download" / f"{rel}.metadata").unlink(missing_ok=True)
            removed.append(rel)
    if removed:
        log(f"removed damaged file(s), fetched again: {', '.join(sorted(removed)[:5])}")
    return removed


def read_token() -> str | None:
    path = os.environ.get("DSDEPLOY_TOKEN_FILE")
    if not path:
        return None
    token = Path(path).read_text().strip()
    return token or None


def wanted(rel: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(rel, p) for p in patterns)


def fetch_hf(args: argparse.Namespace, dest: Path) -> dict[str, int] | None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile

    endpoint = os.environ.get("HF_ENDPOINT") or None
    sizes: dict[str, int] | None
    try:
        tree = HfApi(endpoint=endpoint).list_repo_tree(
            args.model_id, revision=args.revision, recursive=True, token=read_token()
        )
        sizes = {f.path: int(f.size) for f in tree if isinstance(f, RepoFile)}
    except Exception as exc:  # a mirror without the tree API: the header and index checks still apply
        log(f"file sizes unknown ({type(exc).__name__}: {str(exc)[:200]}); checking headers and index only")
        sizes = None
    if sizes is not None:
        check_listing(dest, list(sizes))  # every name, wanted or not: the listing is hostile or it is not
    snapshot_download(
        repo_id=args.model_id,
        revision=args.revision,
        local_dir=str(dest),
        token=read_token(),
        endpoint=endpoint,
        allow_patterns=args.allow_pattern or None,
        max_workers=args.max_workers,
    )
    if sizes is None:
        return None
    return {rel: size for rel, size in sizes.items() if wanted(rel, args.allow_pattern)}


def fetch_modelscope(args: argparse.Namespace, dest: Path) -> dict[str, int] | None:
    from modelscope import snapshot_download
    from modelscope.hub.api import HubApi

    token = read_token()
    api = HubApi()
    if token:
        api.login(token)
    sizes: dict[str, int] | None
    try:
        files = api.get_model_files(args.model_id, revision=args.revision, recursive=True)
        sizes = {f["Path"]: int(f["Size"]) for f in files if f.get("Type") != "tree"}
    except Exception as exc:
        log(f"file sizes unknown ({type(exc).__name__}: {str(exc)[:200]}); checking headers and index only")
        sizes = None
    if sizes is not None:
        check_listing(dest, list(sizes))
    snapshot_download(
        args.model_id, revision=args.revision, local_dir=str(dest), allow_patterns=args.allow_pattern or None
    )
    if sizes is None:
        return None
    return {rel: size for rel, size in sizes.items() if wanted(rel, args.allow_pattern)}


def _split_uri(uri: str) -> tuple[str, str]:
    """Bucket and key prefix; the prefix names a folder, so ``s3://b/r1`` never lists ``r1-zero/``."""
    parts = urlsplit(uri)
    prefix = parts.path.lstrip("/")
    return parts.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _relative(key: str, prefix: str) -> str:
    return key[len(prefix) :].lstrip("/")


def fetch_s3(args: argparse.Namespace, dest: Path) -> dict[str, int]:
    """Copy every object under an s3:// prefix (or gs:// with HMAC keys); same-size objects are kept.

    Credentials: the default boto3 chain (IRSA / EKS Pod Identity / env vars from credentialsSecret).
    """
    import boto3

    bucket, prefix = _split_uri(args.uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or (
        "https://storage.googleapis.com" if args.uri.startswith("gs://") else None
    )
    client = boto3.client("s3", endpoint_url=endpoint)
    listed = [
        (obj["Key"], int(obj["Size"]))
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    return copy_objects(
        dest, prefix, listed, args, lambda key, size, part: client.download_file(bucket, key, str(part)), args.uri
    )


def copy_objects(
    dest: Path,
    prefix: str,
    listed: list[tuple[str, int]],
    args: argparse.Namespace,
    fetch: Callable[[str, int, Path], None],
    uri: str,
) -> dict[str, int]:
    """Copy the listed objects under ``prefix`` into ``dest`` (same-size files are kept); every name is
    checked before the first byte is written."""
    todo: list[tuple[str, str, int]] = []
    for key, size in listed:
        rel = _relative(key, prefix)
        if not rel or rel.endswith("/") or not wanted(rel, args.allow_pattern):
            continue
        safe_target(dest, rel)
        todo.append((key, rel, size))
    sizes: dict[str, int] = {}
    count = 0
    for key, rel, size in todo:
        sizes[rel] = size
        target = safe_target(dest, rel)  # again: a link made meanwhile must not redirect the write
        if target.is_file() and target.stat().st_size == size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        fetch(key, size, part)
        if part.stat().st_size != size:
            raise OSError(f"{key}: got {part.stat().st_size} of {size} bytes")
        part.replace(target)
        count += 1
    log(f"copied {count} object(s) from {uri}")
    return sizes


class GcsClient:
    """The GCS JSON API with an access token from the metadata server (GKE workload identity)."""

    def __init__(self) -> None:
        host = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
        self.base = host if "://" in host else f"http://{host}"
        self.metadata = os.environ.get("GCE_METADATA_HOST") or "169.254.169.254"
        self._token, self._expires = "", 0.0

    def token(self) -> str:
        if time.monotonic() > self._expires - 300:
            req = urllib.request.Request(
                f"http://{self.metadata}/computeMetadata/v1/instance/service-accounts/default/token",
                headers={"Metadata-Flavor": "Google"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.loads(resp.read())
            self._token, self._expires = body["access_token"], time.monotonic() + float(body.get("expires_in", 3600))
        return self._token

    def _open(self, url: str, headers: dict[str, str] | None = None):  # noqa: ANN202 - an http response
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token()}", **(headers or {})})
        return urllib.request.urlopen(req, timeout=300)

    def objects(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        page = ""
        while True:
            query = urllib.parse.urlencode(
                {"prefix": prefix, "fields": "items(name,size),nextPageToken", **({"pageToken": page} if page else {})}
            )
            with self._open(f"{self.base}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?{query}") as resp:
                body = json.loads(resp.read())
            for item in body.get("items", []):
                yield item["name"], int(item["size"])
            page = body.get("nextPageToken", "")
            if not page:
                return

    def download(self, bucket: str, name: str, size: int, part: Path) -> None:
        """Into ``part``, resuming a partial file with a Range request."""
        have = part.stat().st_size if part.is_file() else 0
        if have > size:
            part.unlink()
            have = 0
        url = (
            f"{self.base}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
            f"{urllib.parse.quote(name, safe='')}?alt=media"
        )
        with self._open(url, {"Range": f"bytes={have}-"} if have else None) as resp:
            mode = "ab" if have and resp.status == 206 else "wb"
            with part.open(mode) as out:
                while chunk := resp.read(8 * 1024 * 1024):
                    out.write(chunk)


def fetch_gcs(args: argparse.Namespace, dest: Path) -> dict[str, int]:
    """Copy every object under a gs:// prefix. With HMAC keys (AWS_ACCESS_KEY_ID from credentialsSecret)
    through the S3-compatible XML API, otherwise the JSON API as the pod's workload identity."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return fetch_s3(args, dest)
    bucket, prefix = _split_uri(args.uri)
    client = GcsClient()
    return copy_objects(
        dest,
        prefix,
        list(client.objects(bucket, prefix)),
        args,
        lambda name, size, part: client.download(bucket, name, size, part),
        args.uri,
    )


FETCHERS = {"hf": fetch_hf, "modelscope": fetch_modelscope, "s3": fetch_s3, "gcs": fetch_gcs}


def marker_identity(args: argparse.Namespace) -> dict[str, object]:
    """What a marker must name to stand for this download (any change means another download)."""
    if args.source in ("s3", "gcs"):
        model_id, revision, uri = "", "", args.uri or ""
    else:
        model_id, revision, uri = args.model_id or "", args.revision or "", ""
    return {
        "source": args.source,
        "model_id": model_id,
        "revision": revision,
        "uri": uri,
        "allow_patterns": sorted(args.allow_pattern),
    }


def read_marker(dest: Path) -> dict | None:
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def marker_problems(dest: Path, identity: dict[str, object] | None) -> list[str]:
    """Why the marker in ``dest`` does not vouch for a complete copy of ``identity``; empty when it does."""
    marker = read_marker(dest)
    if marker is None:
        return ["no completion marker yet"]
    if identity is not None and marker.get("identity") != identity:
        return [f"the marker is for {marker.get('identity')}, not {identity}"]
    return completeness_problems(dest, marker.get("files"))


@contextlib.contextmanager
def download_lock(dest: Path) -> Iterator[None]:
    """One download per folder at a time (two engine pods on one node, or a Job and a retry)."""
    with (dest / LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another download into {dest} is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def download(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    identity = marker_identity(args)
    if not marker_problems(dest, identity):
        log(f"{dest} already holds {identity}; nothing to do")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    with download_lock(dest):
        if not marker_problems(dest, identity):  # the download we waited for did it
            log(f"{dest} holds {identity}; nothing to do")
            return 0
        return _download_locked(args, dest, identity)


def _download_locked(args: argparse.Namespace, dest: Path, identity: dict[str, object]) -> int:
    marker = dest / MARKER
    old = read_marker(dest)
    if old and old.get("identity") != identity:
        log(f"{dest} held {old.get('identity')}; replacing it with {identity}")
    elif old:
        remove_damaged(dest, old.get("files"))
    marker.unlink(missing_ok=True)
    deadline = time.monotonic() + args.deadline
    for attempt in range(1, args.attempts + 1):
        try:
            log(f"attempt {attempt}/{args.attempts}: {args.source} -> {dest}")
            expected = FETCHERS[args.source](args, dest)
            problems = completeness_problems(dest, expected)
            if not problems:
                files = (
                    expected
                    if expected is not None
                    else {str(p.relative_to(dest)): p.stat().st_size for p in _model_files(dest)}
                )
                marker.write_text(json.dumps({"identity": identity, "files": files, "completed_at": time.time()}))
                log(f"complete: {len(files)} file(s), {sum(files.values()) / 1e9:.1f} GB")
                return 0
            log("incomplete after download: " + "; ".join(problems))
            remove_damaged(dest, expected)
        except UnsafeName as exc:  # a hostile or broken listing: retrying cannot help
            log(f"refused: {exc}; nothing was written for it and no marker was made")
            return 1
        except Exception as exc:  # any failure is retried, then reported
            log(f"attempt {attempt} failed: {type(exc).__name__}: {str(exc)[:300]}")
        wait = min(300.0, args.backoff * 2 ** (attempt - 1))
        if attempt == args.attempts or time.monotonic() + wait > deadline:
            break
        time.sleep(wait)
    log(f"giving up after {attempt} attempt(s); the files kept on the volume are resumed by the next run")
    return 1


def wait_for_marker(
    dest: Path, timeout_s: float, poll_s: float = 10.0, identity: dict[str, object] | None = None
) -> int:
    """Wait for a marker of ``identity`` (the download Job's); a marker of another model does not count."""
    end = time.monotonic() + timeout_s
    said = ""
    problems = ["no completion marker yet"]
    while time.monotonic() < end:
        problems = marker_problems(dest, identity)
        if not problems:
            log(f"{dest} is complete")
            return 0
        if problems[0] != said:
            log(f"waiting for {dest}: {problems[0]}")
            said = problems[0]
        time.sleep(poll_s)
    log(f"{dest} not complete after {timeout_s:.0f}s: " + "; ".join(problems))
    return 1


def check_only(dest: Path) -> int:
    marker = read_marker(dest)
    problems = completeness_problems(dest, marker.get("files") if marker else None)
    if problems:
        log(f"model folder {dest} is not usable: " + "; ".join(problems))
        return 1
    log(f"{dest} is complete")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, help="model folder on the cache volume")
    parser.add_argument(
        "--source",
        choices=sorted(FETCHERS),
        help="download from here (with --wait: only the marker of this source, model, revision and patterns counts)",
    )
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
        return wait_for_marker(dest, args.wait, args.poll, marker_identity(args) if args.source else None)
    return download(args)


if __name__ == "__main__":
    sys.exit(main())
