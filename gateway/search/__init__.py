"""Web search for every model: search backends, the results cache, Anthropic's web search blocks,
the gateway-run search loop, and the `plugins` field (`web`, `response-healing`).

The backends and the cache do I/O, and `run` puts it all on the request path (one hook in the
app: `WebSearch.prepare`, then `Job.serve` in place of the executor's run); everything else here
is pure functions of data: `blocks` (Anthropic's shapes and SSE events), `loop` (the state machine
of model asks → gateway searches → model continues), `plugins` and `healing`.
"""
