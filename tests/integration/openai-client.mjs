// SPDX-License-Identifier: MIT
//
// The official OpenAI client against inferd: completions and chat, streamed and
// not, the model list, and a refused key. test_http.py copies this next to the
// node_modules it installed the `openai` package into, runs it with
//     OPENAI_BASE_URL=http://HOST:PORT/v1 OPENAI_API_KEY=KEY MODEL=NAME node openai-client.mjs
// and checks the one JSON object it prints.
import OpenAI from "openai";

const model = process.env.MODEL;
const client = new OpenAI({ maxRetries: 0, timeout: 120000 });
const prompt = "Once upon a time";
const messages = [{ role: "user", content: "Tell me a story." }];
const out = {};

const models = await client.models.list();
out.models = [];
for await (const m of models)
        out.models.push(m.id);

const c = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0 });
out.completion = { text: c.choices[0].text, finish_reason: c.choices[0].finish_reason, usage: c.usage, object: c.object };

let text = "", finish = null, chunks = 0;
const cs = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0, stream: true });
for await (const chunk of cs) {
        chunks++;
        text += chunk.choices[0]?.text ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
}
out.completion_stream = { text, finish_reason: finish, chunks };

const ch = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
out.chat = { content: ch.choices[0].message.content, role: ch.choices[0].message.role,
             finish_reason: ch.choices[0].finish_reason, usage: ch.usage, object: ch.object };

let content = "", role = null, usage = null;
finish = null;
chunks = 0;
const chs = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true,
                                                  stream_options: { include_usage: true } });
for await (const chunk of chs) {
        chunks++;
        const choice = chunk.choices[0];
        content += choice?.delta?.content ?? "";
        role = choice?.delta?.role ?? role;
        finish = choice?.finish_reason ?? finish;
        usage = chunk.usage ?? usage;
}
out.chat_stream = { content, role, finish_reason: finish, usage, chunks };

try {
        await new OpenAI({ apiKey: "sk-inferd-wrong", maxRetries: 0 }).completions.create({ model, prompt });
        out.wrong_key = { status: 200 };
} catch (e) {
        out.wrong_key = { status: e.status, name: e.constructor.name, code: e.code ?? null };
}

try {
        await client.completions.create({ model: "no-such-model", prompt });
        out.unknown_model = { status: 200 };
} catch (e) {
        out.unknown_model = { status: e.status, name: e.constructor.name, code: e.code ?? null };
}

console.log(JSON.stringify(out));
