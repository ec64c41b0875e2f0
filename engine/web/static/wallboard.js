import { api, debounce, el, login, stream } from "/static/common.js";

// Agent states as the routing core names them; "reserved" is an agent whose phone is ringing.
const STATES = ["available", "reserved", "busy", "wrap_up", "not_ready"];
const LABELS = { reserved: "ringing", wrap_up: "wrap up", not_ready: "not ready" };
let fetchedAt = performance.now();
let queues = [];

function slClass(sl) {
  if (sl === null || sl === undefined) return "sl-none";
  return sl >= 0.8 ? "sl-good" : sl >= 0.6 ? "sl-warn" : "sl-bad";
}

function fmtWait(s) {
  const t = Math.floor(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}

function render() {
  const board = document.getElementById("board");
  const elapsed = (performance.now() - fetchedAt) / 1000;
  board.replaceChildren(...queues.map((q) => {
    const sl = q.today.service_level;
    const wait = q.waiting > 0 ? q.oldest_wait_s + elapsed : 0;
    const agents = STATES.map((s) => el("span", { class: `ag ag-${s}`, "data-state": s }, `${LABELS[s] ?? s} ${q.agents[s] ?? 0}`));
    return el("section", { class: "queue", "data-queue": q.name },
      el("h2", {}, q.name),
      el("div", { class: "big waiting" }, el("small", {}, "waiting"), String(q.waiting)),
      el("div", { class: "big oldest" }, el("small", {}, "oldest"), fmtWait(wait)),
      el("div", { class: `big sl ${slClass(sl)}` }, el("small", {}, "SL today"), sl === null ? "–" : `${Math.round(sl * 100)}%`),
      el("div", { class: "figs" }, `answered ${q.today.answered} · abandoned ${q.today.abandoned}`,
        // today's post-call survey (queues[].csat): mean score 1-5 and how many answered
        q.today.csat_responses ? el("span", { class: "csat" }, ` · CSAT ${q.today.csat_average.toFixed(1)} (${q.today.csat_responses})`) : ""),
      el("div", { class: "agents" }, ...agents));
  }));
}

async function refresh() {
  try {
    const data = await api("/api/v1/queues");
    queues = Array.isArray(data) ? data : data.queues;
    fetchedAt = performance.now();
    render();
  } catch (exc) {
    document.getElementById("conn").textContent = exc.message;
  }
}

login(refresh, () => {
  const soon = debounce(refresh, 250);
  // Today's figures (answered, abandoned, SL) come from the CDR store, which is written in batches
  // (every half second): a second look after the events settle picks up the call that just ended.
  const settled = debounce(refresh, 1500);
  stream(() => { soon(); settled(); });
  setInterval(refresh, 5000);
  setInterval(render, 1000);
});
