"""Fakes for self-hosted setups: a private CA, an https OpenAI-compatible server signed by it, a
vLLM-like server that lists its models, and a real HTTP proxy (Debian's tinyproxy) on loopback."""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import RecordedRequest, Reply, free_port
from tests.fakes.openai import OpenAIFake, StreamScript, ToolCall, Usage, chat_json, chat_stream


@dataclass(frozen=True)
class PrivateCA:
    """A CA of its own, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.ca_cert)
        return context


def make_private_ca(folder: Path) -> PrivateCA:
    """Made by the openssl command (scripts/test.sh installs it where it is missing)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test Private CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=gateway-client")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *extra)
    return PrivateCA(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key")


class TLSOpenAIFake(OpenAIFake):
    """The OpenAI fake behind TLS, with a certificate only the private CA vouches for."""

    def __init__(self, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()


class VLLMFake(OpenAIFake):
    """An OpenAI-compatible server that lists its models as vLLM does (`max_model_len`); a model
    can be deployed on it while a test runs."""

    def __init__(self, models: dict[str, int | None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models: dict[str, int | None] = dict(models or {})
        self.listing_fails = False

    def deploy(self, model_id: str, max_model_len: int | None = None) -> None:
        self.models[model_id] = max_model_len

    @property
    def listings(self) -> int:
        return sum(1 for r in self.requests if r.method == "GET" and r.path == "/v1/models")

    def next_reply(self, request: RecordedRequest) -> Reply:
        if request.method == "GET" and request.path == "/v1/models":
            if self.listing_fails:
                return Reply(status=503, chunks=[b'{"error":{"message":"loading"}}'])
            data = [{"id": model_id, "object": "model", "created": 1764547200, "owned_by": "vllm",
                     "root": model_id, **({"max_model_len": length} if length else {})}
                    for model_id, length in self.models.items()]
            return Reply(chunks=[orjson.dumps({"object": "list", "data": data})])
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            model = request.json().get("model")
            if model not in self.models:
                return Reply(status=404, chunks=[orjson.dumps({"error": {
                    "message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}})])
        return super().next_reply(request)


class Tinyproxy:
    """Debian's tinyproxy on a free loopback port, with its own config and log file (scripts/test.sh
    installs it where it is missing). `credentials` ("user:password") makes it demand them."""

    def __init__(self, folder: Path, credentials: str | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        self.log_file = folder / f"tinyproxy-{self.port}.log"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 60", f'LogFile "{self.log_file}"',
                 "LogLevel Connect", "MaxClients 100", "Allow 127.0.0.1"]
        if credentials:
            user, password = credentials.split(":", 1)
            lines.append(f"BasicAuth {user} {password}")
        self.config = folder / f"tinyproxy-{self.port}.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("tinyproxy") is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Tinyproxy:
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("tinyproxy exited: " + self.log())
                time.sleep(0.05)
        raise RuntimeError("tinyproxy did not start")

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def requests(self) -> list[str]:
        """What clients asked of it: `CONNECT host:port HTTP/1.1`, `POST http://... HTTP/1.1`."""
        return [line.split("): ", 1)[1] for line in self.log().splitlines() if "Request (file descriptor" in line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Tinyproxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ToolTurnFake(OpenAIFake):
    """An OpenAI-compatible model that, offered a `tool` tool, calls it once with `arguments`, and
    after the tool's result answers with that result quoted: an agent's tool turn, scripted."""

    def __init__(self, tool: str, arguments: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(validate=False, **kwargs)
        self.tool = tool
        self.arguments = arguments

    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return super().auto_reply(request)
        body = request.json()
        offered = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        results = [m.get("content") for m in body.get("messages", []) if m.get("role") == "tool"]
        calls: list[ToolCall] = []
        if results:
            text, finish = f"The tool returned: {results[-1]}", "stop"
        elif self.tool in offered:
            calls, text, finish = [ToolCall(id="call_tool_0001", name=self.tool,
                                            arguments=[orjson.dumps(self.arguments).decode()])], "", "tool_calls"
        else:
            text, finish = "ok", "stop"
        usage = Usage(prompt_tokens=50, completion_tokens=5)
        if body.get("stream"):
            return chat_stream(StreamScript(text=[text] if text else [], tool_calls=calls, finish_reason=finish,
                                            usage=usage))
        return chat_json(text or None, tool_calls=calls, finish_reason=finish, usage=usage)
