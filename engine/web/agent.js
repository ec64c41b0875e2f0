import { api, debounce, el, login, stream } from "/static/common.js";

let me = null;

async function loadMe() {
  const agents = await api("/api/v1/agents");
  if (agents.length !== 1) throw new Error("this page needs an agent's own token");
  me = agents[0];
  document.getElementById("name").textContent = me.name;
  const state = document.getElementById("state");
  state.textContent = me.reason ? `${me.state.replace("_", " ")} (${me.reason})` : me.state.replace("_", " ");
  state.className = `state st-${me.state}`;
}

async function loadQueues() {
  const data = await api("/api/v1/queues");
  const rows = (Array.isArray(data) ? data : data.queues).map((q) =>
    el("tr", { "data-queue": q.name }, el("td", {}, q.name), el("td", { class: "num" }, String(q.waiting))));
  document.querySelector("#queues tbody").replaceChildren(...rows);
}

async function loadCdr() {
  const data = await api(`/api/v1/cdr?agent=${encodeURIComponent(me.id)}&limit=10`);
  const rows = (Array.isArray(data) ? data : data.items ?? data.rows ?? []).map((c) =>
    el("tr", {},
      el("td", {}, new Date(c.arrived_at * 1000).toLocaleTimeString()),
      el("td", {}, c.queue ?? ""), el("td", {}, c.caller ?? ""),
      el("td", {}, c.disposition ?? "")));
  document.querySelector("#cdr tbody").replaceChildren(...rows);
}

async function setState(state, reason = "") {
  const err = document.getElementById("action-error");
  try {
    await api(`/api/v1/agents/${encodeURIComponent(me.id)}/state`, { method: "PUT", body: JSON.stringify({ state, reason }) });
    err.textContent = "";
    await loadMe();
  } catch (exc) {
    err.textContent = exc.message;
  }
}

login(loadMe, () => {
  document.getElementById("desk").hidden = false;
  // A logged-out agent going ready logs in first: the daemon only readies a logged-in agent.
  document.getElementById("ready").onclick = async () => {
    if (me.state === "logged_out") await setState("logged_in");
    await setState("ready");
  };
  document.getElementById("not-ready").onclick = () => setState("not_ready", document.getElementById("reason").value);
  document.getElementById("logout").onclick = () => setState("logged_out");
  loadQueues();
  loadCdr().catch(() => {});
  const queuesSoon = debounce(loadQueues, 250);
  stream((ev) => {
    if (ev.type === "agent" && ev.agent_id === me.id) loadMe();
    if (ev.type === "queue") queuesSoon();
  });
  setInterval(() => { loadMe(); loadQueues(); }, 5000);
});
