/*
 * Parley web chat widget. One file, no dependencies, no build step.
 *
 * Embed it on any page with one tag (served by the Parley backend at /chat):
 *
 *   <script src="https://backend.example/chat" async></script>
 *
 * Optional data attributes on that tag:
 *   data-title="Chat with us"        the panel's heading
 *   data-open="true"                 open the panel when the page loads
 *   data-socket-url="https://..."    where Rasa's socket.io is (default: what the backend says)
 *   data-backend-url="https://..."   the backend (default: where this script came from)
 *
 * How it works: the backend issues a signed session token (POST /chat/sessions), kept in
 * localStorage and renewed on every visit, so a reload or a new tab continues the same
 * conversation (GET /chat/history shows it again). Messages travel over socket.io to the
 * Rasa web chat channel; this file speaks that protocol itself (Engine.IO 4 / Socket.IO 5
 * over a WebSocket): the channel lets the socket in only with the session's token.
 * Bot text is never parsed as HTML: every message is built from DOM nodes, and only
 * http(s) links become links.
 */
(function () {
  "use strict";

  var script = document.currentScript || document.querySelector("script[src$='/chat']");
  if (!script || window.__parleyChat) return;
  window.__parleyChat = true;

  var data = script.dataset || {};
  var scriptUrl = new URL(script.src, location.href);
  var BACKEND = (data.backendUrl || scriptUrl.origin + scriptUrl.pathname.replace(/\/chat\/?$/, "")).replace(/\/$/, "");
  var TITLE = data.title || "Chat with us";
  var STORE_KEY = "parley-chat:" + BACKEND;
  var MAX_MESSAGE = 5000;
  var TYPING_TIMEOUT_MS = 20000;

  // ---- storage (localStorage may be unavailable: private windows, blocked storage) ----

  function load() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch (e) { return null; }
  }
  function save(value) {
    try {
      if (value) localStorage.setItem(STORE_KEY, JSON.stringify(value));
      else localStorage.removeItem(STORE_KEY);
    } catch (e) { /* the session then lasts as long as the page */ }
  }

  // ---- the backend: session tokens and history ----

  function request(method, path, body, token) {
    var headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(BACKEND + path, {
      method: method, headers: headers, credentials: "omit", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  // A usable session: the stored one renewed, else a new one. Resolves {session, isNew}.
  async function obtainSession() {
    var stored = load();
    if (stored && stored.token) {
      var renewed = await request("POST", "/chat/sessions", { token: stored.token });
      if (renewed.ok) return { session: remember(await renewed.json()), isNew: false };
      if (renewed.status !== 401) throw new Error("session renewal failed: " + renewed.status);
      save(null); // expired or no longer valid: start afresh
    }
    var started = await request("POST", "/chat/sessions", {});
    if (!started.ok) throw new Error("could not start a chat session: " + started.status);
    return { session: remember(await started.json()), isNew: true };
  }

  function remember(session) {
    save({ token: session.token, session_id: session.session_id, expires_at: session.expires_at,
           socket_url: session.socket_url });
    return session;
  }

  async function fetchHistory(token) {
    var response = await request("GET", "/chat/history", undefined, token);
    if (!response.ok) throw new Error("history: " + response.status);
    return (await response.json()).messages || [];
  }

  // ---- a minimal Socket.IO 5 client over Engine.IO 4, WebSocket transport only ----

  function ChatSocket(url, options) {
    this.url = url.replace(/^http/, "ws").replace(/\/$/, "") + "/socket.io/?EIO=4&transport=websocket";
    // {auth(): {token}, onConnect(): Promise, onEvent(name, data), onRefused(), onStatus(text)}
    this.options = options;
    this.ws = null;
    this.connected = false; // socket.io connected
    this.ready = false;     // ...and onConnect has run: queued events may go
    this.queue = [];
    this.attempt = 0;
    this.timer = null;
    this.watchdog = null;
    this.stopped = false;
  }

  ChatSocket.prototype.open = function () {
    var self = this;
    clearTimeout(this.timer);
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    var ws;
    try { ws = new WebSocket(this.url); } catch (e) { this.retry(); return; }
    this.ws = ws;
    ws.onmessage = function (event) { if (self.ws === ws) self.receive(String(event.data)); };
    ws.onclose = function () {
      if (self.ws !== ws) return;
      self.ws = null;
      self.connected = self.ready = false;
      clearTimeout(self.watchdog);
      self.retry();
    };
    ws.onerror = function () { /* onclose follows */ };
  };

  ChatSocket.prototype.retry = function () {
    if (this.stopped) return;
    var delay = Math.min(30000, 500 * Math.pow(2, this.attempt++)) * (0.5 + Math.random() / 2);
    this.options.onStatus(this.attempt > 1 ? "Reconnecting…" : "Connecting…");
    var self = this;
    this.timer = setTimeout(function () { self.open(); }, delay);
  };

  ChatSocket.prototype.now = function () {
    clearTimeout(this.timer);
    this.attempt = 0;
    this.open();
  };

  ChatSocket.prototype.close = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.ws) this.ws.close();
  };

  // Closes a connection the server has gone quiet on (no ping within interval + timeout).
  ChatSocket.prototype.alive = function () {
    var self = this;
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(function () { if (self.ws) self.ws.close(); },
                               (this.pingInterval || 25000) + (this.pingTimeout || 20000));
  };

  ChatSocket.prototype.receive = function (packet) {
    this.alive();
    var type = packet.charAt(0);
    if (type === "0") { // Engine.IO open: say which socket.io session we are, with our token
      var handshake = JSON.parse(packet.slice(1));
      this.pingInterval = handshake.pingInterval;
      this.pingTimeout = handshake.pingTimeout;
      this.ws.send("40" + JSON.stringify(this.options.auth()));
    } else if (type === "2") { // ping
      this.ws.send("3");
    } else if (type === "1") { // the server closes
      this.ws.close();
    } else if (type === "4") {
      this.message(packet.slice(1));
    }
  };

  ChatSocket.prototype.message = function (packet) {
    var kind = packet.charAt(0);
    if (kind === "0") { // CONNECT accepted
      var self = this, ws = this.ws;
      this.connected = true;
      this.attempt = 0;
      this.options.onStatus("");
      Promise.resolve(this.options.onConnect()).catch(function () {}).then(function () {
        if (self.ws !== ws || !self.connected) return;
        while (self.queue.length) ws.send(self.queue.shift());
        self.ready = true;
      });
    } else if (kind === "4") { // CONNECT_ERROR: the token was refused
      this.connected = false;
      this.options.onRefused();
    } else if (kind === "1") { // DISCONNECT by the server (for example, an expired token)
      this.connected = this.ready = false;
      this.ws.close();
    } else if (kind === "2") { // EVENT, possibly with an ack id: 2<id>["name", data]
      var body = packet.slice(1).replace(/^\d+/, "");
      var event;
      try { event = JSON.parse(body); } catch (e) { return; }
      if (Array.isArray(event)) this.options.onEvent(event[0], event[1]);
    }
  };

  // Sends an event now if connected and ready, else when the connection is (`urgent`
  // events, such as the session request made while connecting, skip the queue).
  ChatSocket.prototype.emit = function (name, payload, urgent) {
    var packet = "42" + JSON.stringify([name, payload]);
    var open = this.connected && this.ws && this.ws.readyState === 1;
    if (open && (this.ready || urgent)) this.ws.send(packet);
    else this.queue.push(packet);
  };

  ChatSocket.prototype.waiting = function () { return this.queue.length > 0; };

  // ---- the widget ----

  var STYLE = [
    ":host { all: initial; }",
    "*, *::before, *::after { box-sizing: border-box; }",
    "[hidden] { display: none !important; }",
    ".root { --accent: #2150c8; --text: #1f2933; --muted: #52606d; --line: #d9dee5;",
    "  font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: var(--text); }",
    ".launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 60px; height: 60px;",
    "  border: 0; border-radius: 50%; background: var(--accent); color: #fff; cursor: pointer;",
    "  box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; }",
    ".launcher svg { width: 28px; height: 28px; fill: currentColor; }",
    ".badge { position: absolute; top: -4px; right: -4px; min-width: 22px; height: 22px; padding: 0 6px;",
    "  border-radius: 11px; background: #c81e1e; color: #fff; font-size: 13px; line-height: 22px; text-align: center; }",
    ".panel { position: fixed; right: 20px; bottom: 92px; z-index: 2147483000; width: 370px; height: min(600px, calc(100vh - 112px));",
    "  display: flex; flex-direction: column; background: #fff; border-radius: 12px; overflow: hidden;",
    "  box-shadow: 0 8px 30px rgba(0,0,0,.25); }",
    "header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: var(--accent); color: #fff; }",
    "h2 { flex: 1; margin: 0; font-size: 16px; font-weight: 600; }",
    ".close { border: 0; background: transparent; color: #fff; font-size: 24px; line-height: 1; width: 36px; height: 36px;",
    "  border-radius: 6px; cursor: pointer; }",
    ".status { padding: 0 14px; font-size: 13px; color: var(--muted); }",
    ".status:not(:empty) { padding: 6px 14px; background: #fff7e0; }",
    ".log { flex: 1; overflow-y: auto; margin: 0; padding: 14px; list-style: none; display: flex; flex-direction: column; gap: 8px; }",
    ".msg { max-width: 85%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere; }",
    ".bot { align-self: flex-start; background: #eef1f6; border-bottom-left-radius: 4px; }",
    ".user { align-self: flex-end; background: var(--accent); color: #fff; border-bottom-right-radius: 4px; }",
    ".msg a { color: inherit; text-decoration: underline; }",
    ".msg img { display: block; max-width: 100%; border-radius: 8px; }",
    ".bot.image { padding: 4px; background: transparent; }",
    ".choices { align-self: flex-start; display: flex; flex-wrap: wrap; gap: 6px; max-width: 100%; }",
    ".choices button { border: 1px solid var(--accent); background: #fff; color: var(--accent); border-radius: 16px;",
    "  padding: 6px 12px; font: inherit; cursor: pointer; }",
    ".choices button:hover { background: #eef3ff; }",
    ".typing { align-self: flex-start; padding: 0 14px 6px; color: var(--muted); font-size: 13px; }",
    "form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid var(--line); }",
    "input { flex: 1; min-width: 0; padding: 9px 12px; border: 1px solid #9aa5b1; border-radius: 20px; font: inherit; font-size: 16px; color: var(--text); }",
    "form button { border: 0; border-radius: 20px; padding: 0 16px; background: var(--accent); color: #fff; font: inherit; font-weight: 600; cursor: pointer; }",
    ".visually-hidden { position: absolute; width: 1px; height: 1px; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }",
    "button:focus-visible, input:focus-visible, a:focus-visible, .log:focus-visible {",
    "  outline: 3px solid #f5b700; outline-offset: 2px; }",
    "@media (max-width: 480px) {",
    "  .panel { inset: 0; width: 100%; height: 100%; border-radius: 0; }",
    "  .open .launcher { display: none; }",
    "}",
    "@media (prefers-reduced-motion: no-preference) { .panel { transition: opacity .15s; } }"
  ].join("\n");

  var ICON = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z";

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") node.textContent = attributes[name];
      else node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function safeUrl(value) {
    try {
      var url = new URL(String(value), location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) { return null; }
  }

  // Text with its http(s) links made clickable, as DOM nodes (never HTML).
  function linkify(text) {
    var fragment = document.createDocumentFragment();
    var pattern = /https?:\/\/[^\s<>"']+/g;
    var last = 0, match;
    while ((match = pattern.exec(text))) {
      var raw = match[0].replace(/[.,;:!?)\]]+$/, "");
      var href = safeUrl(raw);
      fragment.appendChild(document.createTextNode(text.slice(last, match.index)));
      if (href) {
        fragment.appendChild(el("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow", text: raw }));
      } else {
        fragment.appendChild(document.createTextNode(raw));
      }
      last = match.index + raw.length;
      pattern.lastIndex = last;
    }
    fragment.appendChild(document.createTextNode(text.slice(last)));
    return fragment;
  }

  var host = el("div", { id: "parley-chat" });
  var shadow = host.attachShadow({ mode: "open" });
  var badge = el("span", { class: "badge", hidden: "" });
  var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICON);
  svg.appendChild(path);
  var launcher = el("button", { type: "button", class: "launcher", "aria-label": "Open chat",
                                "aria-expanded": "false", "aria-controls": "parley-panel" }, [svg, badge]);
  var closeButton = el("button", { type: "button", class: "close", "aria-label": "Close chat", text: "×" });
  var heading = el("h2", { id: "parley-title", text: TITLE });
  var status = el("div", { class: "status", role: "status" });
  var log = el("ol", { class: "log", "aria-live": "polite", "aria-relevant": "additions",
                       "aria-label": "Conversation", tabindex: "0" });
  var typing = el("div", { class: "typing", hidden: "", text: "The bot is typing…" });
  var input = el("input", { id: "parley-input", type: "text", autocomplete: "off", maxlength: String(MAX_MESSAGE),
                            placeholder: "Type a message" });
  var form = el("form", {}, [
    el("label", { for: "parley-input", class: "visually-hidden", text: "Your message" }),
    input,
    el("button", { type: "submit", text: "Send" })
  ]);
  var panel = el("section", { id: "parley-panel", class: "panel", role: "dialog", "aria-modal": "false",
                              "aria-labelledby": "parley-title", hidden: "" },
                 [el("header", {}, [heading, closeButton]), status, log, typing, form]);
  var root = el("div", { class: "root" }, [panel, launcher]);
  shadow.appendChild(el("style", { text: STYLE }));
  shadow.appendChild(root);

  var socket = null;
  var session = null;
  var starting = null;
  var unread = 0;
  var typingTimer = null;
  var loadingHistory = false;
  var arrivedWhileLoading = [];
  var unsent = []; // what the visitor typed before the socket was ready, as shown

  function isOpen() { return !panel.hidden; }

  function openPanel() {
    panel.hidden = false;
    root.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Chat is open");
    unread = 0;
    showUnread();
    input.focus();
    log.scrollTop = log.scrollHeight;
    start().catch(function () {});
  }

  function closePanel() {
    panel.hidden = true;
    root.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    showUnread();
    launcher.focus();
  }

  function showUnread() {
    badge.hidden = unread === 0;
    badge.textContent = String(unread);
    if (!isOpen()) {
      launcher.setAttribute("aria-label", unread ? "Open chat (" + unread + " new)" : "Open chat");
    }
  }

  function setTyping(on) {
    clearTimeout(typingTimer);
    typing.hidden = !on;
    if (on) typingTimer = setTimeout(function () { typing.hidden = true; }, TYPING_TIMEOUT_MS);
  }

  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function dropQuickReplies() {
    Array.prototype.forEach.call(log.querySelectorAll(".quick"), function (node) { node.remove(); });
  }

  function choiceGroup(choices, quick) {
    var group = el("li", { class: "choices" + (quick ? " quick" : ""), role: "group",
                           "aria-label": quick ? "Quick replies" : "Choices" });
    choices.forEach(function (choice) {
      var button = el("button", { type: "button", text: choice.title });
      button.addEventListener("click", function () { send(choice.payload, choice.title); });
      group.appendChild(button);
    });
    return group;
  }

  // Adds one message, in the shape the channel sends and the history returns.
  function render(message, sender) {
    var nodes = [];
    if (message.text) {
      nodes.push(el("li", { class: "msg " + sender }, [linkify(String(message.text))]));
    }
    var image = message.image && safeUrl(message.image);
    if (image) {
      nodes.push(el("li", { class: "msg bot image" }, [
        el("img", { src: image, alt: message.alt || "Image sent by the bot", loading: "lazy" })
      ]));
    }
    var attachment = message.attachment && message.attachment.payload;
    var link = attachment && safeUrl(attachment.src || attachment.url);
    if (link) {
      nodes.push(el("li", { class: "msg bot" }, [
        el("a", { href: link, target: "_blank", rel: "noopener noreferrer nofollow", text: "Open the attachment" })
      ]));
    }
    if (Array.isArray(message.buttons) && message.buttons.length) nodes.push(choiceGroup(message.buttons, false));
    if (Array.isArray(message.quick_replies) && message.quick_replies.length) nodes.push(choiceGroup(message.quick_replies, true));
    nodes.forEach(function (node) { log.appendChild(node); });
    scrollDown();
    return nodes.length > 0;
  }

  function botSays(message) {
    if (loadingHistory) { arrivedWhileLoading.push(message); return; }
    setTyping(false);
    dropQuickReplies();
    if (render(message, "bot") && !isOpen()) { unread += 1; showUnread(); }
  }

  function send(text, shown) {
    text = String(text || "").trim();
    if (!text) return;
    dropQuickReplies();
    render({ text: shown || text }, "user");
    var node = log.lastChild;
    setTyping(true);
    if (!socket || !socket.ready) unsent.push(node);
    start().then(function () {
      socket.emit("user_uttered", { message: text.slice(0, MAX_MESSAGE), session_id: session.session_id });
    }, function () { setTyping(false); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    input.value = "";
    send(text);
    input.focus();
  });
  launcher.addEventListener("click", function () { if (isOpen()) closePanel(); else openPanel(); });
  closeButton.addEventListener("click", closePanel);
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { event.stopPropagation(); closePanel(); }
  });
  window.addEventListener("online", function () { if (socket) socket.now(); });

  function same(a, b) {
    return JSON.stringify([a.text, a.buttons, a.quick_replies, a.image]) ===
           JSON.stringify([b.text, b.buttons, b.quick_replies, b.image]);
  }

  // Shows the conversation as the backend has it, then what the visitor typed meanwhile;
  // a brand-new conversation is started, so that the bot introduces itself.
  async function showHistory() {
    loadingHistory = true;
    arrivedWhileLoading = [];
    var messages;
    try {
      messages = await fetchHistory(session.token);
    } catch (e) {
      messages = null; // keep what is shown
    }
    loadingHistory = false;
    if (messages && messages.length) {
      while (log.firstChild) log.removeChild(log.firstChild);
      messages.forEach(function (message) { render(message, message.sender === "user" ? "user" : "bot"); });
      dropQuickRepliesExceptLast(messages);
      unsent.forEach(function (node) { log.appendChild(node); });
      scrollDown();
    } else if (messages && !socket.waiting()) {
      setTyping(true);
      socket.emit("user_uttered", { message: "/session_start", session_id: session.session_id }, true);
    }
    unsent = [];
    var tail = (messages || []).slice(-arrivedWhileLoading.length);
    arrivedWhileLoading.forEach(function (message) {
      if (!tail.some(function (old) { return same(old, message); })) botSays(message);
    });
    arrivedWhileLoading = [];
  }

  function dropQuickRepliesExceptLast(messages) {
    var last = messages[messages.length - 1];
    if (!last || !last.quick_replies) dropQuickReplies();
  }

  function connect() {
    var socketUrl = data.socketUrl || session.socket_url;
    socket = new ChatSocket(socketUrl, {
      auth: function () { return { token: session.token }; },
      onConnect: function () {
        socket.emit("session_request", { session_id: session.session_id }, true);
        return showHistory();
      },
      onEvent: function (name, payload) {
        if (name === "bot_uttered" && payload && typeof payload === "object") botSays(payload);
        else if (name === "user_echo" && payload && payload.text) render({ text: String(payload.text) }, "user");
      },
      onRefused: function () {
        // The token was refused (expired, or the keys changed): get a valid session
        // (a new one if need be) and connect again.
        obtainSession().then(function (obtained) {
          if (obtained.session.session_id !== session.session_id) {
            while (log.firstChild) log.removeChild(log.firstChild);
          }
          session = obtained.session;
          if (socket.ws) socket.ws.close();
        }, function () { if (socket.ws) socket.ws.close(); });
      },
      onStatus: function (text) { status.textContent = text; }
    });
    socket.open();
  }

  // Starts (once) what the chat needs: a session and a socket.
  function start() {
    if (!starting) {
      status.textContent = "Connecting…";
      starting = obtainSession().then(function (obtained) {
        session = obtained.session;
        connect();
      }, function (error) {
        starting = null;
        status.textContent = "The chat is unavailable right now. Please try again later.";
        throw error;
      });
    }
    return starting;
  }

  function mount() {
    document.body.appendChild(host);
    // A returning visitor is connected at once, so what the bot sends later arrives.
    if (load()) start().catch(function () {});
    if (data.open === "true") openPanel();
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
