"""`dsdeploy local up` / `make run`: start the local stack, tell the user how to call it, stop on Ctrl-C.

It stops the same way on Ctrl-C, SIGTERM, a closed terminal (SIGHUP) and the death of whatever started it
(`make`, a shell: a parent-death SIGHUP), giving requests in flight a short grace; a second Ctrl-C stops at
once. Started under `nohup` (SIGHUP ignored) it keeps running when the terminal goes away, as asked.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import NoReturn

from pydantic import ValidationError
from rich.console import Console

from dsdeploy.local_stack import ROUTER_POLICY, LocalStack, LocalStackError, LocalStackOptions
from dsdeploy.parent_death import set_parent_death_signal
from inference.router.config import DATA_CLASSES


def options_from_args(args) -> LocalStackOptions:
    values = {
        "model": args.model,
        "served_model_name": args.served_model_name,
        "host": args.host,
        "router_port": args.router_port,
        "server_port": args.server_port,
        "max_num_seqs": args.max_num_seqs,
        "max_model_len": args.max_model_len,
        "quantization": args.quantization,
        "cloud_base_url": args.cloud_base_url,
        "work_dir": args.work_dir,
        "startup_timeout_s": args.startup_timeout,
        "engine": getattr(args, "engine", None),
        "vllm_python": getattr(args, "vllm_python", None),
        "drain_grace_s": getattr(args, "drain_grace", None),
    }
    return LocalStackOptions(**{k: v for k, v in values.items() if v is not None})


def usage_text(stack: LocalStack) -> str:
    o = stack.options
    url = stack.router_url
    leave = " and ".join(repr(c) for c in ROUTER_POLICY.cloud_allowed)
    stay = " and ".join(repr(c) for c in DATA_CLASSES if c not in ROUTER_POLICY.cloud_allowed)
    if o.cloud_enabled():
        fallback = (
            f"cloud fallback: ON for data class {leave} ({o.cloud_base_url}); {stay} requests never leave this machine"
        )
    else:
        fallback = f"cloud fallback: OFF (local only); set DEEPSEEK_API_KEY to enable it for {leave} requests"
    return f"""[bold green]dsdeploy is serving {o.served_model_name} on {url}[/bold green]
  model server ({"vLLM" if o.engine == "vllm" else "dsdeploy serve"}) {stack.server_url} · router {url} · {fallback}
  audit log {stack.audit_path}

[bold]curl[/bold]
  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{o.served_model_name}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 64}}'

[bold]openai client[/bold]
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="unused")
  reply = client.chat.completions.create(model="{o.served_model_name}", max_tokens=64,
      messages=[{{"role": "user", "content": "Hello!"}}], extra_headers={{"X-Data-Class": "internal"}})
  print(reply.choices[0].message.content)

[bold]dsdeploy[/bold]
  dsdeploy chat "Hello!" --url {url}     dsdeploy smoke --url {url}

Press Ctrl-C to stop both services (closing this terminal stops them too)."""


def watch_services(stack: LocalStack, err: Console) -> NoReturn:
    """Run until interrupted. A dead router ends the stack; a dead model server does not: the router
    keeps answering (public requests from the DeepSeek API when enabled, others get its 503)."""
    server, router = stack.services
    warned = False
    while True:
        if router.process.poll() is not None:
            raise LocalStackError(
                f"the router exited with code {router.process.returncode}; last lines of its log:\n{router.log_tail()}"
            )
        if not warned and server.process.poll() is not None:
            warned = True
            err.print(
                f"[yellow]warning:[/yellow] the model server exited with code {server.process.returncode};"
                " the router keeps answering (cloud fallback for allowed data classes, 503 otherwise)."
                f" Its log: {server.log_path}"
            )
        time.sleep(0.5)


class Stop(KeyboardInterrupt):
    """SIGTERM, SIGHUP or the parent's death: stop as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # stop signals received (a hang-up can also surface as an OSError on output)
_REASONS: dict[int | None, str] = {signal.SIGHUP: "the terminal went away", signal.SIGTERM: "SIGTERM"}


def _raise_stop(signum, frame) -> None:
    _received.append(signum)
    raise Stop(signum)


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP stop the stack; so does the death of the parent (make, the shell), by SIGHUP.
    An ignored SIGHUP (`nohup`) is left ignored: the user asked for the stack to outlive the terminal."""
    signal.signal(signal.SIGTERM, _raise_stop)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _raise_stop)
        set_parent_death_signal(signal.SIGHUP)


def _say(console: Console, text: str) -> None:
    """Print if the terminal is still there (after a hang-up, writing to it fails)."""
    with contextlib.suppress(OSError):
        console.print(text, highlight=False)


def stop_stack(stack: LocalStack, console: Console, reason: str | None) -> None:
    """Stop both services; requests in flight get the grace, and the terminal says so."""
    if not stack.services:
        return
    waiting = stack.in_flight()
    why = f" ({reason})" if reason else ""
    if waiting:
        _say(
            console,
            f"\nstopping{why}: {waiting} request(s) in flight get up to "
            f"{stack.options.drain_grace_s:g} s to finish (Ctrl-C again to stop at once)…",
        )
    else:
        _say(console, f"\nstopping the router and the model server{why}…")
    try:
        stack.stop()
    except KeyboardInterrupt:
        _say(console, "stopping at once")
        stack.kill()


def run_local_stack(args) -> int:
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    try:
        options = options_from_args(args)
    except ValidationError as exc:
        for e in exc.errors():
            err.print(f"[red]error:[/red] {'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})")
        return 2
    install_stop_signals()
    stack = LocalStack(options)
    reason: str | None = None
    try:
        with console.status("starting") as status:
            stack.start(on_status=lambda message: status.update(message))
        console.print(usage_text(stack))
        watch_services(stack, err)
    except LocalStackError as exc:
        _say(err, f"[red]error:[/red] {exc}")
        return 1
    except KeyboardInterrupt as exc:
        reason = _REASONS.get(getattr(exc, "signum", None))
        return 0
    except OSError:
        if not _received:
            raise
        reason = _REASONS.get(_received[-1])  # the terminal went away while the spinner wrote to it
        return 0
    finally:
        stop_stack(stack, console, reason)
        stack.cleanup()
