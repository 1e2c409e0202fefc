"""A real ``redis-server`` (Debian package redis-server) on 127.0.0.1 and a free port, for shared-state tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
import trustme

from .harness import free_port

PASSWORD = "test-redis-password-0123"  # only for the throwaway server a test starts


class RedisServer:
    """One redis-server process with a password, no persistence, killable and restartable on its port. With
    ``tls`` it serves TLS only (rediss://), with a certificate that CA issued for ``tls_name``."""

    def __init__(self, workdir: Path, tls: trustme.CA | None = None, tls_name: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is missing: install the Debian package redis-server (make install-debian-tools)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls_args: list[str] = []
        self.ca_file: Path | None = None
        if tls is not None:
            cert = tls.issue_cert(tls_name)
            key_file, cert_file, self.ca_file = workdir / "redis.key", workdir / "redis.crt", workdir / "ca.pem"
            cert.private_key_pem.write_to_path(str(key_file))
            cert.cert_chain_pems[0].write_to_path(str(cert_file))
            tls.cert_pem.write_to_path(str(self.ca_file))
            self.tls_args = [
                *("--tls-port", str(self.port), "--port", "0"),
                *("--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)),
                *("--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"),
            ]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                *(self.tls_args or ["--port", str(self.port)]),
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def client(self) -> redis.Redis:
        # the test's own client trusts the CA but not the name: it also reaches a server whose name is wrong
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file), "ssl_check_hostname": False} if self.ca_file else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=5, **tls)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def keys_and_ttls(self) -> dict[str, int]:
        c = self.client()
        return {k.decode(): c.ttl(k) for k in c.scan_iter(count=1000)}
