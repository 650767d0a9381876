// muster's opencode plugin. Written by `muster install opencode`; removed by
// `muster install opencode --uninstall`.
//
// opencode tells an MCP server nothing about the session calling it, and runs no
// command hooks, so this plugin does both jobs: it reports the session's turns to
// the muster daemon (as Claude Code's hooks do) and adds the daemon's answer (this
// session's identity, its unread mail) to the session as context; and it names the
// session in every call to muster's tools. Mail reaches the model at four moments:
// at the start of a turn (prompt-submit, injected without a reply), after each tool
// (post-tool-use, appended to the tool's result), at the end of a turn (a stop the
// daemon holds continues the session with the mail as the next prompt), and in an
// idle session (the daemon's wake stream says mail is waiting; the plugin prompts
// the session, which starts a turn). Every call fails open: if the daemon is down or
// slow (2 s at most), opencode carries on as if muster were not there. MUSTER_URL
// may list a team's several daemons, comma-separated: each call goes to the one
// that answered last, and to the others in turn only when it cannot connect.

import { randomBytes } from "node:crypto";
import { lstatSync, readFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";

// The daemons, in the order given (as every muster client reads MUSTER_URL).
const MUSTER_URLS = (() => {
  const urls = (process.env.MUSTER_URL || "")
    .split(",")
    .map((url) => url.trim().replace(/\/+$/, ""))
    .filter(Boolean);
  return urls.length ? urls : ["http://127.0.0.1:7420"];
})();

// The index of the daemon that answered last: tried first, so a dead one early
// in the list costs one refused connection, not one per call.
let answered = 0;

// What a failed connection throws: Bun's fetch (opencode's runtime) says it in
// `code`, Node's in `cause.code` (or in each of `cause.errors`, having tried
// several addresses of one name). Anything else (a timeout, a connection cut
// after the request went out) may come from a daemon that took the request.
const NOT_CONNECTED = new Set([
  "ConnectionRefused",
  "FailedToOpenSocket",
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
]);
const notConnected = (err) =>
  [err, err?.cause, ...(err?.cause?.errors ?? [])].some((e) => e && NOT_CONNECTED.has(e.code));

// fetch() of `path` at the daemon that answered last, then at each other in
// turn while none connects. A request a daemon took (whatever came of it) never
// goes to another: it may have been acted on.
async function call(path, { headers, ...init }) {
  const first = answered;
  let failure;
  for (let k = 0; k < MUSTER_URLS.length; k++) {
    const i = (first + k) % MUSTER_URLS.length;
    try {
      const res = await fetch(`${MUSTER_URLS[i]}${path}`, { ...init, headers: keyed(MUSTER_URLS[i], headers) });
      answered = i;
      return res;
    } catch (err) {
      if (!notConnected(err)) throw err;
      failure = err;
    }
  }
  throw failure;
}

// A local daemon's key, as every muster client reads it: the daemon writes it
// at each start to <runtime dir>/muster-<uid>/<port>.key, a file only its user
// can read, and takes requests from loopback only with it. Read at every
// request, for the address called (a restarted daemon has a new key, and each
// local daemon its own), sent only to a loopback address.
function localKey(base) {
  try {
    const url = new URL(base);
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (!(host === "localhost" || host === "::1" || /^127\./.test(host))) return undefined;
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    const runtime = process.env.XDG_RUNTIME_DIR?.startsWith("/") ? process.env.XDG_RUNTIME_DIR : tmpdir();
    const dir = join(runtime, `muster-${process.getuid()}`);
    const stat = lstatSync(dir);
    if (!stat.isDirectory() || stat.uid !== process.getuid() || (stat.mode & 0o077) !== 0) return undefined;
    const key = readFileSync(join(dir, `${port}.key`), "utf8").trim();
    return /^[0-9a-f]{64}$/.test(key) ? key : undefined;
  } catch {
    return undefined;
  }
}

// The headers that prove who is calling `base`: its local key, when there is one.
const keyed = (base, headers) => {
  const key = localKey(base);
  return key ? { ...headers, "x-muster-key": key } : headers;
};

// `MUSTER_WAKE=off`: the daemon must never start a turn in this opencode's sessions.
const WAKE_OFF = ["off", "0", "false", "no"].includes((process.env.MUSTER_WAKE || "").trim().toLowerCase());

// `opencode run PROMPT` runs one turn and exits as soon as its session is idle, so
// it can neither be woken nor go on after its stop: it offers no wake stream, and
// asks the daemon not to hold its stop (mail then waits for the next turn).
const ONE_SHOT = process.argv.slice(2).find((arg) => !arg.startsWith("-")) === "run";

// This opencode process's run: its hooks bind their sessions to it, and its wake
// stream (below) is where the daemon asks for a turn in one of them.
const RUN_ID = `opencode-${process.pid}-${randomBytes(8).toString("hex")}`;
const WAKEABLE = !WAKE_OFF && !ONE_SHOT;

// A header value with anything but visible ASCII replaced, so an odd name cannot break the request.
const safe = (text) => String(text).replace(/[^\x20-\x7e]/g, "?");

// A team daemon's token: MUSTER_TOKEN, else the first line of the file
// MUSTER_TOKEN_FILE names (as muster's own clients read it).
function teamToken() {
  if (process.env.MUSTER_TOKEN) return process.env.MUSTER_TOKEN.trim();
  const file = process.env.MUSTER_TOKEN_FILE;
  if (!file) return "";
  try {
    return readFileSync(file, "utf8").split("\n")[0].trim();
  } catch {
    return "";
  }
}
const TOKEN = teamToken();

// Who is running this opencode, as `muster hook` tells the daemon for other harnesses.
const IDENTITY = {
  "x-muster-host": safe(hostname()),
  "x-muster-operator": safe(process.env.MUSTER_OPERATOR || process.env.USER || ""),
  "x-muster-pid": String(process.pid),
  ...(TOKEN ? { authorization: `Bearer ${TOKEN}` } : {}),
};
const HEADERS = {
  "content-type": "application/json",
  ...IDENTITY,
  ...(WAKE_OFF ? { "x-muster-wake": "off" } : {}),
  ...(WAKEABLE ? { "x-muster-run": RUN_ID } : {}),
};

// POSTs one hook event; resolves to the daemon's JSON answer, or undefined on any failure.
async function hook(event, body) {
  try {
    const res = await call(`/hook/${event}?harness=opencode`, {
      method: "POST",
      headers: event === "stop" && ONE_SHOT ? { ...HEADERS, "x-muster-hold": "off" } : HEADERS,
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The plugin's instances in this process (opencode makes one per project
// directory it serves), each knowing the sessions it reported; a wake goes to
// the one that knows its session.
const instances = new Set();

// The daemon's stream sends a keepalive every 15 s; this long without a byte,
// the connection is taken for dead (a half-open socket never ends by itself).
const WAKE_SILENCE_MS = 45000;

// Holds the daemon's wake stream open for as long as this process lives:
// `GET /api/v1/wake?run=…&how=opencode`, server-sent events (`ready`, then one
// `wake` per turn to start; `:` lines keep it alive). Reconnects after 0.5 s,
// doubling to 5 s while the daemon stays away; never throws into opencode.
let waking = false;
function openWakeStream() {
  if (!WAKEABLE || waking) return;
  waking = true;
  const path = `/api/v1/wake?run=${encodeURIComponent(RUN_ID)}&how=opencode`;
  (async () => {
    let backoff = 500;
    for (;;) {
      const abort = new AbortController();
      let silence;
      const heard = () => {
        clearTimeout(silence);
        silence = setTimeout(() => abort.abort(), WAKE_SILENCE_MS);
      };
      try {
        heard();
        const res = await call(path, { headers: { accept: "text/event-stream", ...IDENTITY }, signal: abort.signal });
        if (res.ok && res.body) {
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            heard();
            buffer += decoder.decode(value, { stream: true }).replace(/\r/g, "");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              let name = "message";
              const data = [];
              for (const line of block.split("\n")) {
                if (line.startsWith("event:")) name = line.slice(6).trim();
                else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
              }
              if (name === "ready") backoff = 500;
              if (name === "wake") wake(data.join("\n"));
            }
          }
        } else {
          await res.body?.cancel().catch(() => {});
        }
      } catch {
        // The daemon is down or restarting: try again below.
      } finally {
        clearTimeout(silence);
        abort.abort();
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
  })().catch(() => {});
}

// One `wake` event: `{session, message_ids, prompt}`.
function wake(data) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    return;
  }
  const id = event?.session;
  if (typeof id !== "string" || !id) return;
  const prompt = typeof event.prompt === "string" && event.prompt ? event.prompt : "New muster mail for you.";
  const all = [...instances];
  const owner = all.find((instance) => instance.knows(id)) ?? all[all.length - 1];
  owner?.wake(id, prompt).catch(() => {});
}

export const MusterPlugin = async ({ client, directory }) => {
  const post = (event, name, id, extra = {}) => {
    if (id) sessions.add(id);
    return hook(event, { session_id: id, cwd: directory, hook_event_name: name, ...extra });
  };

  // The sessions this instance reported, and whether each is busy now (from
  // opencode's `session.status` events; a session never seen busy is idle).
  const sessions = new Set();
  const busy = new Set();

  // Context being added right now: adding it runs `chat.message` again, with this
  // text as the message, which must not report a turn (nor wait for itself).
  const injecting = new Set();
  // Prompts the plugin sent to continue a turn the daemon held at its stop: their
  // `chat.message` is no new user turn (the prompt itself holds the mail), so it
  // reports nothing; a prompt-submit would also restart the daemon's count of holds.
  const continuing = new Set();

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

  // Starts a turn in the session with `text` as the user's message (no noReply).
  // The prompt returns once the turn is over, so it is not awaited: the event that
  // asked for it must not wait a whole turn.
  const run = (id, text) => {
    busy.add(id);
    const sent = Promise.resolve()
      .then(() => client.session.prompt({ path: { id }, body: { parts: [{ type: "text", text }] } }))
      .catch(() => {});
    return sent;
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

  // Whether opencode says the session is running a turn (its own status, which
  // local events may lag behind); on any failure, what the events said.
  const isBusy = async (id) => {
    try {
      const res = await client.session.status();
      const status = res?.data?.[id];
      if (res?.data && typeof res.data === "object") return !!status && status.type !== "idle";
    } catch {
      // Fall back to the events.
    }
    return busy.has(id);
  };

  const instance = {
    knows: (id) => sessions.has(id),
    // The daemon says mail is waiting for this idle session: a turn with the
    // daemon's short prompt, whose prompt-submit then brings the mail in. opencode
    // may have started a turn since the daemon decided; then that turn's tool
    // boundaries and stop carry the mail instead.
    wake: async (id, prompt) => {
      if (busy.has(id) || (await isBusy(id))) return;
      run(id, prompt);
    },
  };
  instances.add(instance);
  openWakeStream();

  return {
    event: async ({ event }) => {
      if (event.type === "session.created") {
        const id = event.properties?.info?.id;
        if (id) await start(id, "startup");
      } else if (event.type === "session.status") {
        const id = event.properties?.sessionID;
        const type = event.properties?.status?.type;
        if (id && type === "idle") busy.delete(id);
        else if (id && type) busy.add(id);
      } else if (event.type === "session.idle") {
        const id = event.properties?.sessionID;
        if (!id) return;
        busy.delete(id);
        const answer = await post("stop", "Stop", id);
        // The daemon holds the stop while direct mail is unread: the session goes on
        // with the mail (the reason) as its next prompt, a turn the model answers.
        if (answer?.decision === "block" && typeof answer.reason === "string" && answer.reason) {
          const text = answer.reason;
          continuing.add(text);
          run(id, text).finally(() => continuing.delete(text));
        }
      } else if (event.type === "session.deleted") {
        const id = event.properties?.info?.id;
        if (id) await post("session-end", "SessionEnd", id, { reason: "deleted" });
      }
    },

    // A user turn is starting: surface unread mail before the model sees the prompt.
    "chat.message": async (input, output) => {
      const id = input.sessionID;
      const texts = (output?.parts ?? []).filter((part) => part.type === "text").map((part) => part.text);
      if (!id || texts.some((text) => injecting.has(text) || continuing.has(text))) return;
      busy.add(id);
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

    // A tool finished mid-turn: urgent mail (direct, or an @mention) rides on its
    // result, which is what the model reads next. Only asked for when there is a
    // result to carry it, since the daemon counts what it answers as surfaced.
    "tool.execute.after": async (input, output) => {
      if (!input?.sessionID || typeof output?.output !== "string") return;
      const answer = await post("post-tool-use", "PostToolUse", input.sessionID, { tool_name: input.tool });
      const text = answer?.hookSpecificOutput?.additionalContext;
      if (typeof text === "string" && text) output.output = output.output ? `${output.output}\n\n${text}` : text;
    },
  };
};
