"""An OpenAI-compatible model that searches the web the way an agent's model does, for Claude Code's
WebSearch: offered the client's `WebSearch` tool it calls it; inside the search request the gateway
makes of that (where it is offered the gateway's `web_search` function) it calls the function with
a query of its own, then answers citing the first result; given the WebSearch tool's result it
answers quoting it. Every request is answered by what it holds, in JSON or as a chunk stream."""
from __future__ import annotations

import re
from typing import Any

import orjson

from tests.fakes.base import RecordedRequest, Reply
from tests.fakes.openai import OpenAIFake, StreamScript, ToolCall, Usage, chat_json, chat_stream

MODEL_QUERY = "gateway web search release notes"
_URL = re.compile(r"URL: (\S+)")


class SearchingAgentFake(OpenAIFake):
    def __init__(self, *, client_tool: str = "WebSearch", **kwargs: Any) -> None:
        super().__init__(validate=False, **kwargs)
        self.client_tool = client_tool

    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return super().auto_reply(request)
        body = request.json()
        offered = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        results = [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]
        calls: list[ToolCall] = []
        if "web_search" in offered and not results:
            calls = [ToolCall("call_search_0001", "web_search", orjson.dumps({"query": MODEL_QUERY}).decode())]
        elif "web_search" in offered:
            urls = _URL.findall(results[-1])
            text = f"The release is described at [the first result]({urls[0]})." if urls else "Nothing found."
        elif self.client_tool in offered and not results:
            calls = [ToolCall("call_client_0001", self.client_tool,
                              orjson.dumps({"query": "what did the gateway release"}).decode())]
        elif results:
            text = f"The search tool returned: {results[-1]}"
        else:
            text = "ok"
        usage = Usage(prompt_tokens=50, completion_tokens=5)
        finish = "tool_calls" if calls else "stop"
        text = "" if calls else text
        if body.get("stream"):
            return chat_stream(StreamScript(text=[text] if text else [], tool_calls=calls, finish_reason=finish,
                                            usage=usage))
        return chat_json(text or None, tool_calls=calls, finish_reason=finish, usage=usage)
