// The official OpenAI Node SDK against the gateway: one chat completion, one streamed tool call, two
// refusals. Prints what it saw as one JSON object; the Python test scripts the upstream and checks it.
const OpenAI = require(process.env.OPENAI_MODULE);

async function main() {
  const { BASE_URL, KEY, MODEL } = process.env;
  const client = new OpenAI({ baseURL: BASE_URL, apiKey: KEY, maxRetries: 0 });
  const seen = {};
  const completion = await client.chat.completions.create({
    model: MODEL, messages: [{ role: "user", content: "Hi" }], max_completion_tokens: 50 });
  seen.create = { content: completion.choices[0].message.content, finish: completion.choices[0].finish_reason,
                  usage: completion.usage };
  const stream = await client.chat.completions.create({
    model: MODEL, stream: true, stream_options: { include_usage: true },
    tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
    messages: [{ role: "user", content: "Weather?" }] });
  const calls = {};
  let finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    finish = choice.finish_reason || finish;
    for (const call of choice.delta.tool_calls || []) {
      calls[call.index] = calls[call.index] || { id: call.id, name: call.function.name, arguments: "" };
      calls[call.index].arguments += call.function.arguments || "";
    }
  }
  seen.stream = { calls: Object.values(calls), finish, usage };
  for (const [name, options] of [["bad_key", { apiKey: "sk-not-a-key-0000" }], ["unknown_model", {}]]) {
    try {
      await new OpenAI({ baseURL: BASE_URL, apiKey: KEY, maxRetries: 0, ...options }).chat.completions.create({
        model: name === "unknown_model" ? "nobody/nothing" : MODEL, messages: [{ role: "user", content: "Hi" }] });
      seen[name] = "answered";
    } catch (error) {
      seen[name] = { class: error.constructor.name, status: error.status, code: error.code };
    }
  }
  console.log(JSON.stringify(seen));
}

main().catch((error) => { console.error(error); process.exit(1); });
