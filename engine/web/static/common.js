// Shared by both pages: token handling (sessionStorage, never the URL), API calls, event stream.
export const TOKEN_KEY = "acd-token";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

export async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const resp = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  if (resp.status === 401 || resp.status === 403) throw new Error("token rejected: check it and try again");
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

// Ask once for a token, verify it with `probe`, then call `start`.
export function login(probe, start) {
  const form = document.getElementById("login");
  const error = document.getElementById("error");
  const attempt = async () => {
    try {
      await probe();
      form.hidden = true;
      start();
    } catch (exc) {
      sessionStorage.removeItem(TOKEN_KEY);
      error.textContent = exc.message;
      form.hidden = false;
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    attempt();
  });
  if (sessionStorage.getItem(TOKEN_KEY)) attempt(); else { form.hidden = false; document.getElementById("token").focus(); }
}

// WebSocket with exponential backoff; the indicator says when the stream is down.
export function stream(onEvent) {
  const conn = document.getElementById("conn");
  let delayMs = 500;
  const show = (up, text) => { conn.textContent = text; conn.className = `conn ${up ? "up" : "down"}`; };
  const open = () => {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/events`;
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: sessionStorage.getItem(TOKEN_KEY) }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "hello") { delayMs = 500; show(true, "live"); return; }
      onEvent(msg);
    };
    ws.onclose = () => {
      show(false, "disconnected");
      setTimeout(open, delayMs);
      delayMs = Math.min(delayMs * 2, 15000);
    };
  };
  open();
}

export function debounce(fn, waitMs) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, waitMs); };
}
