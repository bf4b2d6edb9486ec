"""Claude Code (`claude -p`, headless) against a self-hosted model: the README's "Configure it"
config plus a three-line model entry on an OpenAI-compatible fake; Claude Code runs a tool (Read)
on the model's request and the model's final answer quotes what the tool returned.

Skipped only where `claude` is not installed (scripts/test.sh installs it with npm when it can)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fakes.selfhosted import ToolTurnFake
from tests.served_process import ServedProcess

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "sk-team-a-claude-code-0001"
pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code is not installed "
                                "(npm install -g @anthropic-ai/claude-code)")


def configure_it_config() -> dict:
    """The YAML block of the README's "Configure it" section, as documented."""
    section = README.read_text().split("## Configure it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    return yaml.safe_load(block)


def test_claude_code_completes_a_tool_turn_on_a_three_line_model(tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("the launch code is 7413\n")
    with ToolTurnFake("Read", {"file_path": str(workdir / "notes.txt")}) as model:
        config = configure_it_config()
        config.pop("redis_url")  # the embedded store: this test needs no Redis
        config.pop("usage_db_url")  # nor PostgreSQL: records go to SQLite in its own data folder
        config["providers"]["local"] = {"protocol": "openai", "base_url": model.url + "/v1"}
        config["models"].append({"id": "local/coder",
                                 "endpoints": [{"provider": "local", "upstream_model": "coder-32b"}]})
        # Claude Code's own background calls (titles, summaries) use its small model: the same one here.
        config["model_map"] = {"claude-haiku-4-5": "local/coder"}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"GATEWAY_ADMIN_KEY": "sk-admin-claude-code-test", "ANTHROPIC_API_KEY": "sk-ant-unused-upstream",
               "MOONSHOT_API_KEY": "sk-moonshot-unused", "TEAM_A_KEY": KEY,
               "GATEWAY_DATA_DIR": str(tmp_path / "data")}
        with ServedProcess(["--config", str(path)], env=env) as served:
            claude_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
                          "ANTHROPIC_BASE_URL": served.url, "ANTHROPIC_AUTH_TOKEN": KEY,
                          "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
                          "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
            run = subprocess.run(["claude", "-p", "What does notes.txt say?", "--model", "local/coder",
                                  "--allowedTools", "Read", "--output-format", "json"],
                                 cwd=workdir, env=claude_env, capture_output=True, text=True, timeout=120)
            access = served.output
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["is_error"] is False and result["num_turns"] == 2
    assert "the launch code is 7413" in result["result"]  # read by Claude Code, sent back through the gateway
    chats = model.chat_requests
    assert [c["model"] for c in chats] == ["coder-32b", "coder-32b"]
    assert "Read" in [t["function"]["name"] for t in chats[0]["tools"]]
    assert any(m["role"] == "tool" and "7413" in str(m["content"]) for m in chats[1]["messages"])
    assert access.count("POST /v1/messages 200") >= 2 and "model=local/coder provider=local" in access
