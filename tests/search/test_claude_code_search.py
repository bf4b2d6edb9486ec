"""Claude Code's WebSearch (`claude -p`, headless) on a model behind an OpenAI-compatible fake: Claude
Code sends the `web_search_20250305` server tool, the gateway runs the search with the model's own
query on the SearXNG fake, and Claude Code's answer carries the fake backend's results.

Skipped only where `claude` is not installed (scripts/test.sh installs it with npm when it can)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.fakes.searching_model import MODEL_QUERY, SearchingAgentFake
from tests.served_process import ServedProcess

KEY = "sk-team-a-claude-code-0001"
pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code is not installed "
                                "(npm install -g @anthropic-ai/claude-code)")


def test_claude_codes_web_search_completes_with_the_backends_results(tmp_path, fake_servers):
    searxng = fake_servers["searxng"]
    with SearchingAgentFake() as model:
        config = {"providers": {"local": {"protocol": "openai", "base_url": model.url + "/v1"}},
                  "models": [{"id": "local/coder",
                              "endpoints": [{"provider": "local", "upstream_model": "coder-32b"}]}],
                  "model_map": {"claude-haiku-4-5": "local/coder"},
                  "keys": [{"key": KEY, "team": "team-a"}],
                  "search": {"searxng_url": searxng.url}}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        with ServedProcess(["--config", str(path)], env={"GATEWAY_DATA_DIR": str(tmp_path / "data")}) as served:
            claude_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
                          "ANTHROPIC_BASE_URL": served.url, "ANTHROPIC_AUTH_TOKEN": KEY,
                          "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
                          "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
            run = subprocess.run(["claude", "-p", "Search the web: what did the gateway release?",
                                  "--model", "local/coder", "--allowedTools", "WebSearch", "--output-format", "json"],
                                 cwd=tmp_path, env=claude_env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["is_error"] is False
    # Claude Code read the gateway's web_search_tool_result blocks: the fake backend's links.
    for r in searxng.results:
        assert r.url in result["result"]
    assert result["modelUsage"]["local/coder"]["webSearchRequests"] == 1
    assert searxng.queries == [MODEL_QUERY]  # the model's query, not Claude Code's prompt
    searching = [c for c in model.chat_requests if [t["function"]["name"] for t in c.get("tools") or []]
                 == ["web_search"]]
    assert len(searching) == 2  # the model asked, then answered from the results
    assert any(m["role"] == "tool" and "https://www.example.com/news/1" in m["content"]
               for m in searching[1]["messages"])
