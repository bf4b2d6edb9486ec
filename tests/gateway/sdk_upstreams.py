"""What the end-to-end tests of translated upstreams share: `gateway serve` run with a config file
whose providers point at fakes, the official Anthropic SDK against it, and request material."""
from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anthropic
import yaml

from tests.conftest import TEAM_KEY
from tests.served_process import ServedProcess

# A tool whose schema has what Anthropic accepts and some upstreams do not ($schema, additionalProperties).
WEATHER_TOOL = {"name": "get_weather", "description": "Current weather",
                "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                                 "properties": {"city": {"type": "string"}}, "required": ["city"],
                                 "additionalProperties": False}}
# A 1x1 PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def image_question(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "text", "text": text}]}


@contextlib.contextmanager
def serve(folder: Path, providers: Mapping[str, Mapping[str, str]]) -> Iterator[ServedProcess]:
    """`gateway serve` with these providers and the team key."""
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump({"providers": dict(providers), "keys": [{"key": TEAM_KEY, "team": "team-a"}]}))
    with ServedProcess(["--config", str(path)]) as process:
        yield process


def sdk(served: ServedProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=TEAM_KEY, max_retries=0)
