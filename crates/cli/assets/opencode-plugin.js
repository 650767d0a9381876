// muster's opencode plugin. Written by `muster install opencode`; removed by
// `muster install opencode --uninstall`.
//
// opencode tells an MCP server nothing about the session calling it, and runs no
// command hooks, so this plugin does both jobs: it reports the session's turns to
// the muster daemon (as Claude Code's hooks do) and adds the daemon's answer (this
// session's identity, its unread mail) to the session as context; and it names the
// session in every call to muster's tools. Every call fails open: if the daemon is
// down or slow (2 s at most), opencode carries on as if muster were not there.

import { hostname } from "node:os";

const MUSTER_URL = (process.env.MUSTER_URL || "http://127.0.0.1:7420").replace(/\/+$/, "");

// A header value with anything but visible ASCII replaced, so an odd name cannot break the request.
const safe = (text) => String(text).replace(/[^\x20-\x7e]/g, "?");

// Who is running this opencode, as `muster hook` tells the daemon for other harnesses.
const HEADERS = {
  "content-type": "application/json",
  "x-muster-host": safe(hostname()),
  "x-muster-operator": safe(process.env.MUSTER_OPERATOR || process.env.USER || ""),
  "x-muster-pid": String(process.pid),
  ...(process.env.MUSTER_TOKEN ? { authorization: `Bearer ${process.env.MUSTER_TOKEN}` } : {}),
};

// POSTs one hook event; resolves to the daemon's JSON answer, or undefined on any failure.
async function hook(event, body) {
  try {
    const res = await fetch(`${MUSTER_URL}/hook/${event}?harness=opencode`, {
      method: "POST",
      headers: HEADERS,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(2000),
    });
    if (!res.ok) return undefined;
    const text = await res.text();
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

export const MusterPlugin = async ({ client, directory }) => {
  const post = (event, name, id, extra = {}) =>
    hook(event, { session_id: id, cwd: directory, hook_event_name: name, ...extra });

  // Context being added right now: adding it runs `chat.message` again, with this
  // text as the message, which must not report a turn (nor wait for itself).
  const injecting = new Set();

  // Adds the daemon's context to the session without starting a turn (noReply).
  const inject = async (id, answer) => {
    const text = answer?.hookSpecificOutput?.additionalContext;
    if (!id || !text) return;
    injecting.add(text);
    try {
      await client.session.prompt({ path: { id }, body: { noReply: true, parts: [{ type: "text", text }] } });
    } catch {
      // The mail stays unread in muster; `read_messages` still finds it.
    } finally {
      injecting.delete(text);
    }
  };

  // Each session is announced once per opencode process (identity and waiting mail
  // injected), before its first turn reaches the model. opencode does not await
  // `event` hooks, so `session.created` alone could lose that race; both it and the
  // first `chat.message` share one promise. A session continued in a new process
  // (`opencode run --session`) is announced again, like Claude Code's resume.
  const started = new Map();
  const start = (id, source) => {
    if (!started.has(id)) {
      started.set(id, post("session-start", "SessionStart", id, { source }).then((answer) => inject(id, answer)));
    }
    return started.get(id);
  };

  return {
    event: async ({ event }) => {
      if (event.type === "session.created") {
        const id = event.properties?.info?.id;
        if (id) await start(id, "startup");
      } else if (event.type === "session.idle") {
        const id = event.properties?.sessionID;
        if (id) await post("stop", "Stop", id);
      } else if (event.type === "session.deleted") {
        const id = event.properties?.info?.id;
        if (id) await post("session-end", "SessionEnd", id, { reason: "deleted" });
      }
    },

    // A user turn is starting: surface unread mail before the model sees the prompt.
    "chat.message": async (input, output) => {
      const id = input.sessionID;
      if (!id || output?.parts?.some((part) => part.type === "text" && injecting.has(part.text))) return;
      await start(id, "resume");
      await inject(id, await post("prompt-submit", "UserPromptSubmit", id));
    },

    // muster's tools (`muster_*`) act for the session that calls them: opencode does
    // not tell the MCP server, so the call carries it as `_session_id`.
    "tool.execute.before": async (input, output) => {
      if (input.tool?.startsWith("muster_") && output.args) output.args._session_id = input.sessionID;
      const answer = await post("pre-tool-use", "PreToolUse", input.sessionID, {
        tool_name: input.tool,
        tool_input: output.args ?? {},
      });
      // muster's edit guard: a file another session holds exclusively. Throwing
      // refuses the call; opencode hands the message to the model as the result.
      const out = answer?.hookSpecificOutput;
      if (out?.permissionDecision === "deny") throw new Error(out.permissionDecisionReason || "refused by muster");
    },
  };
};
