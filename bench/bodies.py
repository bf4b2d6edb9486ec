"""The benchmark's request bodies and the fake upstream's canned Anthropic answers.

Two request shapes, each with and without `"stream": true`:
  small  ~300 B: one user turn, the smallest realistic request.
  large  ~31 KB: shaped like a coding agent's turn (what Claude Code sends): a 12 KB system prompt
         in blocks with `cache_control`, 15 tool definitions with JSON schemas, and a conversation
         of 5 user turns whose later ones carry `tool_result`s for the assistant's `tool_use`s.
The answers are what api.anthropic.com returns for a short text reply: a Message JSON, or the
exact event sequence of a stream (message_start, content_block_start, ping, 12 content_block_delta,
content_block_stop, message_delta with the final usage, message_stop).
Everything here is deterministic, so that every run sends and receives the same bytes.
"""
from __future__ import annotations

import json
from typing import Any

DEFAULT_MODEL = "claude-sonnet-4-5"
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"
MESSAGE_ID = "msg_01BenchFakeUpstream0000000"

REPLY_CHUNKS = ["Sure", " - the", " failing", " test", " expects", " a", " sorted", " list;",
                " I", " will", " fix", " the comparator."]
REPLY_USAGE = {"input_tokens": 31, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 7424, "output_tokens": len(REPLY_CHUNKS)}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- request bodies ----------------------------------------------------------------------------


def small_body(model: str = DEFAULT_MODEL, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": (
            "In two sentences: what is the difference between a process and a thread, and when "
            "would you choose one over the other for a network server written in Python? Keep the "
            "answer short and concrete, please.")}],
    }
    if stream:
        body["stream"] = True
    return _dumps(body).encode()


def large_body(model: str = DEFAULT_MODEL, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 32000,
        "system": _system_blocks(),
        "tools": _tools(),
        "messages": _conversation(),
        "metadata": {"user_id": "user_bench_0000_account_0000_session_0000"},
    }
    if stream:
        body["stream"] = True
    return _dumps(body).encode()


_GUIDELINES = [
    "Read the relevant files before you change them, and keep each change as small as the task allows.",
    "Prefer editing an existing file to creating a new one; never leave dead code or commented-out code behind.",
    "Run the project's own test command after a change and report the result honestly, including failures.",
    "When a command fails, read its output, form a hypothesis, and check it before trying something else.",
    "Match the surrounding code: naming, error handling, imports and formatting follow the file you are in.",
    "Do not add a dependency without saying why the standard library or an existing dependency is not enough.",
    "Keep secrets out of code, logs and commit messages; read them from the environment at run time.",
    "Explain what you changed and why in a few sentences; a reviewer should not need to rerun your search.",
    "If the request is ambiguous, state the assumption you are making and proceed with the most likely reading.",
    "Use the search tools to find callers before you rename or remove a public function or a configuration key.",
]


def _paragraphs(topic: str, count: int) -> str:
    lines = []
    for i in range(count):
        rule = _GUIDELINES[i % len(_GUIDELINES)]
        lines.append(f"{topic} {i + 1}. {rule}")
    return "\n".join(lines)


def _system_blocks() -> list[dict[str, Any]]:
    identity = ("You are an interactive command-line assistant for software engineering tasks. "
                "Use the tools available to you to inspect and change the user's repository.")
    rules = "# Working rules\n" + _paragraphs("Rule", 86)
    environment = ("# Environment\nWorking directory: /home/dev/projects/inventory-service\n"
                   "Platform: linux\nShell: bash\nIs a git repository: yes\n"
                   "# Repository layout\n" + "\n".join(
                       f"src/inventory/{name}.py" for name in (
                           "api", "models", "storage", "pricing", "events", "auth", "config",
                           "search", "reports", "cli", "tasks", "metrics", "errors", "cache",
                           "schemas", "exports", "imports", "webhooks", "admin", "audit"))
                   + "\n" + _paragraphs("Project note", 12))
    return [
        {"type": "text", "text": identity},
        {"type": "text", "text": rules},
        {"type": "text", "text": environment, "cache_control": {"type": "ephemeral"}},
    ]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "description": description,
            "input_schema": {"type": "object", "properties": properties, "required": required,
                             "additionalProperties": False,
                             "$schema": "http://json-schema.org/draft-07/schema#"}}


def _string(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


def _tools() -> list[dict[str, Any]]:
    path = _string("Absolute path of the file or folder, inside the working directory.")
    tools = [
        _tool("read_file", "Reads a file from the local filesystem. Returns numbered lines. Use offset "
              "and limit for long files; read a whole file when it is short enough.",
              {"path": path, "offset": {"type": "integer", "minimum": 0, "description": "First line to read."},
               "limit": {"type": "integer", "minimum": 1, "description": "How many lines to read."}}, ["path"]),
        _tool("write_file", "Writes a file, replacing it if it exists. Read an existing file first; "
              "prefer edit_file for changes to part of a file.",
              {"path": path, "content": _string("The complete new content of the file.")}, ["path", "content"]),
        _tool("edit_file", "Replaces an exact string in a file. The old string must occur exactly once "
              "unless replace_all is set; include enough context to make it unique.",
              {"path": path, "old_string": _string("Text to replace, exactly as it appears."),
               "new_string": _string("Replacement text."),
               "replace_all": {"type": "boolean", "default": False,
                               "description": "Replace every occurrence instead of exactly one."}},
              ["path", "old_string", "new_string"]),
        _tool("multi_edit", "Applies several exact-string edits to one file in order, atomically: "
              "either every edit applies or none does.",
              {"path": path, "edits": {"type": "array", "minItems": 1, "items": {
                  "type": "object", "properties": {"old_string": {"type": "string"},
                                                   "new_string": {"type": "string"}},
                  "required": ["old_string", "new_string"]}}}, ["path", "edits"]),
        _tool("list_directory", "Lists the entries of a folder with their kinds and sizes.",
              {"path": path, "ignore": {"type": "array", "items": {"type": "string"},
                                        "description": "Glob patterns to leave out."}}, ["path"]),
        _tool("glob", "Finds files whose paths match a glob pattern such as src/**/*.py, newest first.",
              {"pattern": _string("The glob pattern."), "path": path}, ["pattern"]),
        _tool("grep", "Searches file contents with a regular expression and returns matching lines "
              "or file names. Supports context lines and file-type filters.",
              {"pattern": _string("Regular expression."), "path": path,
               "glob": _string("Only files matching this glob."),
               "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
               "context": {"type": "integer", "minimum": 0, "maximum": 20},
               "case_insensitive": {"type": "boolean"}}, ["pattern"]),
        _tool("run_command", "Runs a shell command in the working directory and returns its output "
              "and exit status. Long-running commands may be sent to the background.",
              {"command": _string("The command line."), "description": _string("What it does, in 5-10 words."),
               "timeout_ms": {"type": "integer", "minimum": 1000, "maximum": 600000},
               "background": {"type": "boolean"}}, ["command"]),
        _tool("read_output", "Reads new output of a background command started with run_command.",
              {"command_id": _string("The id run_command returned."),
               "filter": _string("Only lines matching this regular expression.")}, ["command_id"]),
        _tool("stop_command", "Stops a background command.", {"command_id": _string("The id to stop.")},
              ["command_id"]),
        _tool("fetch_url", "Fetches a web page and returns it as markdown, trimmed to the part that "
              "answers the prompt.",
              {"url": {"type": "string", "format": "uri"}, "prompt": _string("What to look for.")},
              ["url", "prompt"]),
        _tool("web_search", "Searches the web and returns result titles, addresses and snippets.",
              {"query": _string("Search terms."), "allowed_domains": {"type": "array", "items": {"type": "string"}},
               "blocked_domains": {"type": "array", "items": {"type": "string"}}}, ["query"]),
        _tool("todo_write", "Replaces the session's task list. Use it for work of three or more steps "
              "and keep exactly one task in progress.",
              {"todos": {"type": "array", "items": {"type": "object", "properties": {
                  "content": {"type": "string", "minLength": 1},
                  "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                  "id": {"type": "string"}}, "required": ["content", "status", "id"]}}}, ["todos"]),
        _tool("notebook_edit", "Replaces, inserts or deletes one cell of a Jupyter notebook.",
              {"notebook_path": path, "cell_id": _string("The cell to change."),
               "new_source": _string("The new source of the cell."),
               "cell_type": {"type": "string", "enum": ["code", "markdown"]},
               "edit_mode": {"type": "string", "enum": ["replace", "insert", "delete"]}},
              ["notebook_path", "new_source"]),
        _tool("delegate_task", "Starts a sub-agent with its own context for a self-contained search or "
              "analysis task and returns its final report.",
              {"description": _string("A short name for the task."), "prompt": _string("The full task."),
               "agent_type": {"type": "string", "enum": ["general", "explore", "plan"]}},
              ["description", "prompt"]),
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return tools


def _source_listing(name: str, lines: int) -> str:
    out = []
    for i in range(lines):
        out.append(f"{i + 1:>5}\t    def {name}_step_{i}(self, items: list[Item]) -> list[Item]:"
                   f" return sorted(items, key=lambda it: (it.sku, it.price))[:{i + 10}]")
    return "\n".join(out)


def _conversation() -> list[dict[str, Any]]:
    task = ("The test tests/test_pricing.py::test_bulk_discount_sorted fails after my last change. "
            "Find out why and fix it without changing the test.")
    steps = [
        ("I'll run the failing test first to see the error.", "run_command",
         {"command": "python -m pytest tests/test_pricing.py -x -q", "description": "Run the failing test"},
         "F\n=== FAILURES ===\n___ test_bulk_discount_sorted ___\n" + _source_listing("trace", 16)
         + "\nAssertionError: assert [Item(sku='B'), Item(sku='A')] == [Item(sku='A'), Item(sku='B')]\n1 failed in 0.41s"),
        ("The order is wrong. Let me look for the comparator.", "grep",
         {"pattern": "def bulk_discount", "path": "/home/dev/projects/inventory-service/src",
          "output_mode": "content", "context": 3},
         "src/inventory/pricing.py:88:    def bulk_discount(self, items):\n" + _source_listing("match", 10)),
        ("Reading the pricing module around that function.", "read_file",
         {"path": "/home/dev/projects/inventory-service/src/inventory/pricing.py", "offset": 60, "limit": 80},
         _source_listing("pricing", 34)),
        ("The key sorts by price before sku. I'll fix the key.", "edit_file",
         {"path": "/home/dev/projects/inventory-service/src/inventory/pricing.py",
          "old_string": "key=lambda it: (it.price, it.sku)", "new_string": "key=lambda it: (it.sku, it.price)"},
         "The file /home/dev/projects/inventory-service/src/inventory/pricing.py has been updated.\n"
         + _source_listing("edited", 6)),
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
    for n, (thought, tool, arguments, result) in enumerate(steps):
        tool_id = f"toolu_01Bench{n:02d}{'X' * 14}"
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": thought},
            {"type": "tool_use", "id": tool_id, "name": tool, "input": arguments}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": result}]})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages


# --- the fake upstream's answers -------------------------------------------------------------


def message_json() -> str:
    """The non-streaming answer: one Message with a text block and usage incl. cache reads."""
    return _dumps({
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": UPSTREAM_MODEL,
        "content": [{"type": "text", "text": "".join(REPLY_CHUNKS)}],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": REPLY_USAGE,
    })


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {_dumps(data)}\n\n"


def stream_events() -> list[str]:
    """The streaming answer, one string per server-sent event."""
    start_usage = dict(REPLY_USAGE, output_tokens=1)
    events = [
        _event("message_start", {"type": "message_start", "message": {
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": UPSTREAM_MODEL,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        _event("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
        _event("ping", {"type": "ping"}),
    ]
    for chunk in REPLY_CHUNKS:
        events.append(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": chunk}}))
    events += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": REPLY_USAGE}),
        _event("message_stop", {"type": "message_stop"}),
    ]
    return events


def count_tokens_json() -> str:
    return _dumps({"input_tokens": REPLY_USAGE["input_tokens"] + REPLY_USAGE["cache_read_input_tokens"]})


def models_json() -> str:
    return _dumps({"data": [{"type": "model", "id": UPSTREAM_MODEL, "display_name": "Claude Sonnet 4.5",
                             "created_at": "2025-09-29T00:00:00Z"}],
                   "has_more": False, "first_id": UPSTREAM_MODEL, "last_id": UPSTREAM_MODEL})
