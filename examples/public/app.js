// Shared helpers plus the code of each demo page; <body data-page="..."> picks the page.
// Plain script (no modules, no build step) kept in one file rather than inline <script> blocks,
// so the pages still work under a strict Content-Security-Policy (script-src 'self').
"use strict";

// ---------------------------------------------------------------------------------------------
// Helpers

/** The ws:/wss: URL of `path` on the host that served this page (never a hard-coded host). */
function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + path;
}

/** WebSocket.readyState values, indexed by number. */
const READY_STATES = ["CONNECTING", "OPEN", "CLOSING", "CLOSED"];

/** document.getElementById that fails loudly, so a renamed id is caught at once. */
function byId(id) {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error("missing element #" + id);
  }
  return el;
}

/** Append an <li> made of text pieces; a piece is a string or [className, string]. */
function addItem(list, className, pieces) {
  const li = document.createElement("li");
  li.className = className;
  for (const piece of pieces) {
    if (typeof piece === "string") {
      li.append(piece);
    } else {
      const span = document.createElement("span");
      span.className = piece[0];
      span.textContent = piece[1]; // server data is always text, never markup
      li.append(span);
    }
  }
  list.append(li);
  list.scrollTop = list.scrollHeight; // keep the newest entry in view
  return li;
}

/** Show a connection state in a .status element: data-state drives the colour. */
function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

/** What a close code means, in words (RFC 6455 §7.4.1; 4000-4999 belong to the application). */
const CLOSE_MEANINGS = {
  1000: "closed normally",
  1001: "the server is going away (restarting or shutting down)",
  1002: "protocol error",
  1003: "the server does not accept this kind of data",
  1005: "closed without a code",
  1006: "connection lost (network down, server unreachable, or the handshake was refused)",
  1007: "invalid data (e.g. text that is not UTF-8)",
  1008: "refused by the server's policy (origin, login or a limit)",
  1009: "message too big",
  1010: "a required extension was not agreed",
  1011: "the server hit an error",
  1012: "the service is restarting",
  1013: "try again later (the server or the room is full, or we were too slow)",
  1014: "the server's upstream failed (bad gateway)",
  1015: "TLS handshake failed",
};

function closeMeaning(code) {
  if (CLOSE_MEANINGS[code] !== undefined) {
    return CLOSE_MEANINGS[code];
  }
  return code >= 4000 && code <= 4999 ? "closed by the application" : "closed";
}

/** "disconnected: connection lost (…) [1006]" or "… [1013: room is full]". */
function describeClose(ev) {
  const why = ev.reason ? ev.code + ": " + ev.reason : String(ev.code);
  return "disconnected: " + closeMeaning(ev.code) + " [" + why + "]";
}

// Closes after which trying again cannot help (the same request would be refused the same way,
// or the close was deliberate): a page says so instead of reconnecting.
const FINAL_CLOSES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

/**
 * Reconnect with exponential back-off and full jitter (so a restarted server is not hit by
 * every page at once): the n-th wait is random in [0.5, 1] × min(max, first × 2^n) seconds.
 * `connect()` opens a socket and returns it; `onWait(seconds)` is told each whole second left.
 * The count restarts once a connection has stayed open for `stable` seconds.
 */
class Reconnector {
  constructor(connect, onWait, first = 1, max = 30, stable = 5) {
    this.connect = connect;
    this.onWait = onWait;
    this.first = first;
    this.max = max;
    this.stable = stable;
    this.attempt = 0;
    this.timer = null;
    this.openedAt = null;
  }

  opened() {
    this.openedAt = Date.now();
  }

  /** The socket closed with `ev`: schedule the next try (none after a final close). */
  closed(ev) {
    if (this.openedAt !== null && Date.now() - this.openedAt >= this.stable * 1000) {
      this.attempt = 0; // it had been up a while: this is a new outage, start small again
    }
    this.openedAt = null;
    if (FINAL_CLOSES.has(ev.code)) {
      return false;
    }
    let base = Math.min(this.max, this.first * 2 ** this.attempt);
    if (ev.code === 1013) {
      base = Math.max(base, 5); // "try again later": not at once
    }
    this.attempt += 1;
    const wait = base * (0.5 + Math.random() / 2);
    this.countdown(Date.now() + wait * 1000);
    return true;
  }

  countdown(deadline) {
    this.cancel();
    const tick = () => {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.timer = null;
        this.connect();
        return;
      }
      this.onWait(Math.ceil(left / 1000));
      this.timer = setTimeout(tick, left % 1000 || 1000); // when the whole seconds change
    };
    tick();
  }

  /** Try now (the browser came back online, or the user asked). */
  now() {
    if (this.timer !== null) {
      this.cancel();
      this.connect();
    }
  }

  cancel() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  get waiting() {
    return this.timer !== null;
  }
}

/** Parse a JSON object sent by the server; anything else gives null. */
function parseObject(data) {
  if (typeof data !== "string") {
    return null;
  }
  try {
    const value = JSON.parse(data);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch (_err) {
    return null;
  }
}

/** Wire a form so that submitting it (button or Enter) calls handler without reloading. */
function onSubmit(form, handler) {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    handler();
  });
}

// ---------------------------------------------------------------------------------------------
// echo.html: every WebSocket event, logged, with the live readyState.

function initEcho() {
  const stateEl = byId("state");
  const urlEl = byId("url");
  const log = byId("log");
  const message = byId("message");
  const sendBtn = byId("send");
  const sendBinaryBtn = byId("send-binary");
  const connectBtn = byId("connect");
  const disconnectBtn = byId("disconnect");
  const closeCode = byId("close-code");
  const closeReason = byId("close-reason");
  let ws = null;

  function readyState() {
    return ws === null ? WebSocket.CLOSED : ws.readyState;
  }

  // Called after every event and action: the whole point of the page is watching this change.
  function showState() {
    const rs = readyState();
    setStatus(stateEl, String(rs), READY_STATES[rs] + " (" + rs + ")");
    connectBtn.disabled = rs !== WebSocket.CLOSED;
    disconnectBtn.disabled = rs !== WebSocket.CONNECTING && rs !== WebSocket.OPEN;
    sendBtn.disabled = rs !== WebSocket.OPEN;
    sendBinaryBtn.disabled = rs !== WebSocket.OPEN;
  }

  function logEntry(kind, detail) {
    const when = new Date().toLocaleTimeString(undefined, { hour12: false });
    const li = addItem(log, "ev ev-" + kind, [
      ["when", when],
      ["name", kind],
      ["detail", detail],
      ["rs", "readyState " + readyState()],
    ]);
    showState();
    return li;
  }

  function hexPreview(bytes) {
    const shown = Array.from(bytes.subarray(0, 16), (b) => b.toString(16).padStart(2, "0"));
    return shown.join(" ") + (bytes.length > 16 ? " …" : "");
  }

  function describeData(data) {
    if (typeof data === "string") {
      return "text, " + data.length + " chars: " + data;
    }
    const bytes = new Uint8Array(data); // binaryType "arraybuffer": data is an ArrayBuffer
    return "binary, " + bytes.length + " bytes: " + hexPreview(bytes);
  }

  function connect() {
    const url = wsUrl("/echo");
    urlEl.textContent = url;
    const sock = new WebSocket(url);
    sock.binaryType = "arraybuffer"; // default "blob" would need async reads to show bytes
    ws = sock;
    logEntry("note", "new WebSocket(" + JSON.stringify(url) + ")");
    sock.addEventListener("open", () => {
      logEntry("open", "protocol=" + JSON.stringify(sock.protocol));
    });
    sock.addEventListener("message", (ev) => {
      const li = logEntry("message", describeData(ev.data));
      li.dataset.kind = typeof ev.data === "string" ? "text" : "binary";
    });
    sock.addEventListener("error", () => {
      // The error event deliberately carries no details (browsers hide them); close follows.
      logEntry("error", "the connection failed or broke; a close event follows");
    });
    sock.addEventListener("close", (ev) => {
      const li = logEntry(
        "close",
        "code=" + ev.code + " reason=" + JSON.stringify(ev.reason) + " wasClean=" + ev.wasClean +
          " (" + closeMeaning(ev.code) + ")",
      );
      li.dataset.code = String(ev.code);
      li.dataset.reason = ev.reason;
      li.dataset.wasClean = String(ev.wasClean);
    });
    showState();
  }

  function disconnect() {
    if (ws === null) {
      return;
    }
    const codeText = closeCode.value.trim();
    const reason = closeReason.value;
    try {
      if (codeText === "" && reason === "") {
        ws.close();
      } else {
        // A reason needs a code; 1000 (normal closure) is the neutral choice.
        ws.close(codeText === "" ? 1000 : Number(codeText), reason);
      }
      logEntry("note", "close() called");
    } catch (err) {
      // e.g. InvalidAccessError for a code outside 1000 and 3000-4999.
      logEntry("note", "close() refused: " + err.name + ": " + err.message);
    }
  }

  function send(binary) {
    if (ws === null || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    const text = message.value;
    if (binary) {
      const bytes = new TextEncoder().encode(text);
      ws.send(bytes);
      logEntry("send", "binary, " + bytes.length + " bytes: " + hexPreview(bytes));
    } else {
      ws.send(text);
      logEntry("send", "text, " + text.length + " chars: " + text);
    }
  }

  onSubmit(byId("send-form"), () => send(false));
  sendBinaryBtn.addEventListener("click", () => send(true));
  connectBtn.addEventListener("click", connect);
  onSubmit(byId("close-form"), disconnect);
  byId("clear").addEventListener("click", () => log.replaceChildren());
  connect();
}

// ---------------------------------------------------------------------------------------------
// chat.html: a room on /chat/{room}; plain text up, JSON events down.

function initChat() {
  const status = byId("status");
  const roomInput = byId("room");
  const roomName = byId("room-name");
  const members = byId("members");
  const messages = byId("messages");
  const text = byId("text");
  const sendBtn = byId("send");
  let ws = null;
  let room = (new URLSearchParams(location.search).get("room") || "").trim() || "lobby";
  const retry = new Reconnector(
    () => connect(true),
    (seconds) => setStatus(status, "closed", lastClose + " · reconnecting in " + seconds + " s"),
  );
  let lastClose = "";

  function notice(message, extraClass) {
    addItem(messages, "notice" + (extraClass ? " " + extraClass : ""), [message]);
  }

  function setOpen(open) {
    sendBtn.disabled = !open;
  }

  function handle(data) {
    const event = parseObject(data);
    if (event === null) {
      notice("(unparsed) " + String(data));
      return;
    }
    switch (event.type) {
      case "message":
        addItem(messages, "msg", [
          ["user", String(event.user)],
          ["text", String(event.text)],
        ]);
        break;
      case "join":
      case "leave":
        notice(String(event.user) + (event.type === "join" ? " joined" : " left"));
        if (event.members !== undefined) {
          members.textContent = String(event.members);
        }
        if (Number.isInteger(event.max_message_chars)) {
          text.maxLength = event.max_message_chars; // the server's limit, not a guess
        }
        break;
      case "cut":
        notice(
          "your message was cut to " + String(event.max_message_chars) + " characters (" +
            String(event.dropped) + " left out)",
          "error",
        );
        if (Number.isInteger(event.max_message_chars)) {
          text.maxLength = event.max_message_chars;
        }
        break;
      case "error":
        notice("error: " + String(event.text), "error");
        break;
      default:
        notice("(unknown event) " + data);
    }
  }

  function connect(again) {
    retry.cancel();
    if (ws !== null) {
      const old = ws;
      ws = null; // its late events are ignored below
      old.close(1000, "switching rooms");
    }
    roomInput.value = room;
    roomName.textContent = room;
    members.textContent = "–";
    document.title = "Chat: " + room + " · gateway";
    notice((again ? "reconnecting to" : "joining") + " room “" + room + "”…");
    const sock = new WebSocket(wsUrl("/chat/" + encodeURIComponent(room)));
    ws = sock;
    setStatus(status, "connecting", "connecting…");
    setOpen(false);
    sock.addEventListener("open", () => {
      if (ws !== sock) return;
      retry.opened();
      setStatus(status, "open", "connected");
      setOpen(true);
    });
    sock.addEventListener("message", (ev) => {
      if (ws !== sock) return;
      handle(ev.data);
    });
    sock.addEventListener("close", (ev) => {
      if (ws !== sock) return;
      ws = null;
      members.textContent = "–"; // not in the room any more: no count to show
      setOpen(false);
      lastClose = describeClose(ev);
      if (retry.closed(ev)) {
        notice(lastClose + "; reconnecting", "error");
      } else {
        setStatus(status, "closed", lastClose);
        notice(lastClose + "; press Join to reconnect", "error");
      }
    });
  }

  window.addEventListener("online", () => retry.now()); // the network is back: do not wait

  onSubmit(byId("room-form"), () => {
    room = roomInput.value.trim() || "lobby";
    // Keep the address bar shareable: reloading or sending the link rejoins this room.
    const url = new URL(location.href);
    url.searchParams.set("room", room);
    history.replaceState(null, "", url);
    connect(false);
  });

  onSubmit(byId("chat-form"), () => {
    const line = text.value;
    if (line.trim() === "" || ws === null || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    ws.send(line);
    text.value = "";
    text.focus();
  });

  connect(false);
}

// ---------------------------------------------------------------------------------------------
// clock.html: a hello, then a time tick every interval; every text we send is acked.

function initClock() {
  const status = byId("status");
  const greeting = byId("greeting");
  const interval = byId("interval");
  const time = byId("time");
  const ticks = byId("ticks");
  const acks = byId("acks");
  const pingText = byId("ping-text");
  const pingBtn = byId("ping");
  const reconnectBtn = byId("reconnect");
  let ws = null;
  let count = 0;
  let lastClose = "";
  const retry = new Reconnector(connect, (seconds) =>
    setStatus(status, "closed", lastClose + " · reconnecting in " + seconds + " s"),
  );

  function setOpen(open) {
    pingBtn.disabled = !open;
    reconnectBtn.disabled = open;
  }

  function handle(data) {
    const event = parseObject(data);
    if (event === null) {
      addItem(acks, "notice", ["(unparsed) " + String(data)]);
      return;
    }
    switch (event.type) {
      case "hello":
        greeting.textContent = String(event.text);
        interval.textContent = String(event.interval) + " s";
        break;
      case "time": {
        count += 1;
        ticks.textContent = String(count);
        // Format from epoch in the reader's locale and zone; keep the server's ISO string too.
        time.textContent = new Date(Number(event.epoch) * 1000).toLocaleString(undefined, {
          dateStyle: "medium",
          timeStyle: "medium",
        });
        time.dateTime = String(event.now);
        time.title = "server time: " + String(event.now);
        break;
      }
      case "ack":
        addItem(acks, "ack", ["ack: ", ["received", String(event.received)]]);
        break;
      default:
        addItem(acks, "notice", ["(unknown event) " + data]);
    }
  }

  function connect() {
    retry.cancel();
    const sock = new WebSocket(wsUrl("/clock"));
    ws = sock;
    setStatus(status, "connecting", "connecting…");
    setOpen(false);
    reconnectBtn.disabled = true;
    sock.addEventListener("open", () => {
      retry.opened();
      setStatus(status, "open", "connected");
      setOpen(true);
    });
    sock.addEventListener("message", (ev) => handle(ev.data));
    sock.addEventListener("close", (ev) => {
      lastClose = describeClose(ev);
      setOpen(false); // the button reconnects at once, whether or not a retry is pending
      if (!retry.closed(ev)) {
        setStatus(status, "closed", lastClose);
      }
    });
  }

  window.addEventListener("online", () => retry.now());

  onSubmit(byId("ping-form"), () => {
    const line = pingText.value;
    if (ws === null || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    ws.send(line);
    pingText.value = "";
  });
  reconnectBtn.addEventListener("click", connect);
  connect();
}

// ---------------------------------------------------------------------------------------------

const PAGES = { echo: initEcho, chat: initChat, clock: initClock };

document.addEventListener("DOMContentLoaded", () => {
  const init = PAGES[document.body.dataset.page];
  if (init !== undefined) {
    init();
  }
});
