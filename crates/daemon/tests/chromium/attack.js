// A hostile page, for tests/chromium.rs: it tries every route of the muster
// daemon that changes or reveals anything, with every trick a web page has,
// and records what the page itself got. The page is served from another
// origin (a test server on another loopback port), and again inside a
// sandboxed iframe (whose origin is `null`). window.MUSTER (set by the page)
// names the daemon, the routes, the link frames and this page's role.

const { daemon, bodyRoutes, readRoutes, hello, read, role } = window.MUSTER;
const results = [];
let frames = 0;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The daemon ignores unknown query parameters; the test matches each request
// the browser sent to its attempt by this tag.
function tagged(base, path, id) {
  return base + path + (path.includes("?") ? "&" : "?") + "attempt=" + encodeURIComponent(id);
}

async function attempt(trick, route, run) {
  const id = `${role}|${trick}|${route.method} ${route.path}`;
  let got;
  try {
    got = await run(tagged(daemon, route.path, id), route);
  } catch (e) {
    got = `threw ${e.name}: ${e.message}`;
  }
  results.push({ id, got: String(got) });
}

// A form posted into a hidden frame of its own, so this page stays.
function postForm(url, enctype, fields) {
  return new Promise((resolve) => {
    const name = `sink${frames++}`;
    const frame = document.createElement("iframe");
    frame.name = name;
    document.body.appendChild(frame);
    const form = document.createElement("form");
    form.method = "POST";
    form.action = url;
    form.enctype = enctype;
    form.target = name;
    for (const [key, value] of fields) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = key;
      input.value = value;
      form.appendChild(input);
    }
    document.body.appendChild(form);
    const done = (what) => {
      clearTimeout(timer);
      frame.remove();
      form.remove();
      resolve(what);
    };
    const timer = setTimeout(() => done("posted; no load event within 5 s"), 5000);
    frame.onload = () => done("posted; the frame loaded (another origin's page: unreadable here)");
    form.submit();
  });
}

// text/plain forms send `name=value`: split the JSON so that the `=` lands
// inside a string, and the body is valid JSON (the classic CSRF trick).
function plainFields(body) {
  const json = JSON.stringify(body);
  return [[json.slice(0, -1) + ',"pad":"', '"}']];
}

const opaque = (res) => `answered: type ${res.type}, status ${res.status}` + (res.type === "opaque" ? " (hidden from the page)" : "");

function waitForLoad(element, attach) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("no load or error event within 5 s"), 5000);
    element.onload = () => {
      clearTimeout(timer);
      resolve("load event");
    };
    element.onerror = () => {
      clearTimeout(timer);
      resolve("error event");
    };
    attach(element);
  });
}

const bodyTricks = {
  "form text/plain": (url, r) => postForm(url, "text/plain", plainFields(r.body)),
  "form urlencoded": (url, r) => postForm(url, "application/x-www-form-urlencoded", [["json", JSON.stringify(r.body)]]),
  "form multipart": (url, r) => postForm(url, "multipart/form-data", [["json", JSON.stringify(r.body)]]),
  "fetch no-cors text/plain": (url, r) =>
    fetch(url, { method: r.method, mode: "no-cors", body: JSON.stringify(r.body) }).then(opaque),
  "fetch no-cors Blob application/json": (url, r) =>
    fetch(url, { method: r.method, mode: "no-cors", body: new Blob([JSON.stringify(r.body)], { type: "application/json" }) }).then(opaque),
  "fetch no-cors header application/json": (url, r) =>
    fetch(url, { method: r.method, mode: "no-cors", headers: { "content-type": "application/json" }, body: JSON.stringify(r.body) }).then(opaque),
  "fetch no-cors urlencoded": (url, r) =>
    fetch(url, { method: r.method, mode: "no-cors", body: new URLSearchParams({ json: JSON.stringify(r.body) }) }).then(opaque),
  "fetch no-cors multipart": (url, r) => {
    const form = new FormData();
    form.append("json", JSON.stringify(r.body));
    return fetch(url, { method: r.method, mode: "no-cors", body: form }).then(opaque);
  },
  "fetch cors text/plain": (url, r) => fetch(url, { method: r.method, body: JSON.stringify(r.body) }).then(opaque),
  "fetch cors application/json": (url, r) =>
    fetch(url, { method: r.method, headers: { "content-type": "application/json" }, body: JSON.stringify(r.body) }).then(opaque),
  "sendBeacon text/plain": (url, r) => `queued: ${navigator.sendBeacon(url, JSON.stringify(r.body))}`,
  "sendBeacon urlencoded": (url, r) => `queued: ${navigator.sendBeacon(url, new URLSearchParams({ json: JSON.stringify(r.body) }))}`,
  "sendBeacon multipart": (url, r) => {
    const form = new FormData();
    form.append("json", JSON.stringify(r.body));
    return `queued: ${navigator.sendBeacon(url, form)}`;
  },
  "sendBeacon Blob application/json": (url, r) =>
    `queued: ${navigator.sendBeacon(url, new Blob([JSON.stringify(r.body)], { type: "application/json" }))}`,
};

// What a page can do with PATCH and DELETE: only fetch (no form, no beacon).
const otherMethodTricks = {
  "fetch no-cors": (url, r) => fetch(url, { method: r.method, mode: "no-cors", body: r.body && JSON.stringify(r.body) }).then(opaque),
  "fetch cors application/json": (url, r) =>
    fetch(url, { method: r.method, headers: { "content-type": "application/json" }, body: r.body && JSON.stringify(r.body) }).then(opaque),
};

const readTricks = {
  "fetch no-cors": (url) => fetch(url, { mode: "no-cors" }).then(opaque),
  "fetch cors": (url) => fetch(url).then(async (res) => `read ${res.status}: ${(await res.text()).slice(0, 200)}`),
  img: (url) => waitForLoad(new Image(), (img) => (img.src = url)),
  script: (url) =>
    waitForLoad(document.createElement("script"), (s) => {
      s.src = url;
      document.body.appendChild(s);
    }),
  iframe: (url) =>
    waitForLoad(document.createElement("iframe"), (f) => {
      f.src = url;
      document.body.appendChild(f);
    }),
  EventSource: (url) =>
    new Promise((resolve) => {
      const source = new EventSource(url);
      const got = [];
      const end = (what) => {
        source.close();
        resolve(got.concat(what).join("; "));
      };
      source.onopen = () => got.push("open");
      source.onmessage = (e) => got.push(`message ${e.data.slice(0, 200)}`);
      source.addEventListener("ready", (e) => got.push(`ready ${e.data}`));
      source.onerror = () => end(`error (readyState ${source.readyState})`);
      setTimeout(() => end("still open after 3 s"), 3000);
    }),
};

// A shim's hello naming a real session, then a read of its mail.
function webSocket(url) {
  return new Promise((resolve) => {
    const got = [];
    const socket = new WebSocket(url.replace(/^http/, "ws"));
    socket.onopen = () => {
      got.push("open");
      socket.send(JSON.stringify(hello));
      socket.send(JSON.stringify(read));
    };
    socket.onmessage = (e) => got.push(`message ${String(e.data).slice(0, 300)}`);
    socket.onerror = () => got.push("error");
    socket.onclose = (e) => {
      clearTimeout(timer);
      got.push(`closed ${e.code}`);
      resolve(got.join("; "));
    };
    const timer = setTimeout(() => socket.close(), 3000);
  });
}

async function attackAll() {
  for (const route of bodyRoutes) {
    const tricks = route.method === "POST" ? bodyTricks : otherMethodTricks;
    for (const [trick, run] of Object.entries(tricks)) {
      await attempt(trick, route, run);
    }
  }
  for (const path of readRoutes) {
    const route = { method: "GET", path };
    for (const [trick, run] of Object.entries(readTricks)) {
      if (trick === "EventSource" && !path.includes("/events") && !path.includes("/wake")) continue;
      await attempt(trick, route, run);
    }
  }
  await attempt("WebSocket with a hello for a real session", { method: "GET", path: "/ws" }, webSocket);
  // Beacons go out after the page queued them.
  await sleep(1000);
  return results;
}

window.attackAll = attackAll;
