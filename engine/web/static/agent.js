import { TOKEN_KEY, api, debounce, el, login, stream } from "/static/common.js";

let me = null;
let loads = 0;  // answers can overtake each other: only the latest request's is shown
let wrapTimer = null;

async function loadMe() {
  const mine = ++loads;
  const agents = await api("/api/v1/agents");
  if (agents.length !== 1) throw new Error("this page needs an agent's own token");
  if (mine !== loads) return;
  me = agents[0];
  document.getElementById("name").textContent = me.name;
  const state = document.getElementById("state");
  state.textContent = me.reason ? `${me.state.replace("_", " ")} (${me.reason})` : me.state.replace("_", " ");
  state.className = `state st-${me.state}`;
  wrapUpCountdown(state, me.state === "wrap_up" ? me.wrap_up_remaining_s : null);
}

// Wrap-up countdown. The server sends the seconds left when it answered, not an end time, so the
// browser's clock may be off by any amount; counting from this page's own receipt is off by one
// request's latency at most. Every later answer (the agent events, the 5 s refresh) re-syncs it.
// The next state comes from the server (the routing timer publishes an agent event when wrap-up
// ends), so at zero the page asks once more instead of guessing "ready" or "not ready".
function wrapUpCountdown(state, remainingS) {
  clearInterval(wrapTimer);
  wrapTimer = null;
  if (remainingS == null) return;
  const endsAt = performance.now() + remainingS * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((endsAt - performance.now()) / 1000));
    state.textContent = `wrap up ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    if (left > 0 || wrapTimer === null) return;
    clearInterval(wrapTimer);
    wrapTimer = null;
    setTimeout(() => loadMe().catch(() => {}), 500);
  };
  // Already due when sent (0): the routing timer is about to run; its event brings the next state.
  if (remainingS > 0) wrapTimer = setInterval(tick, 250);
  tick();
}

async function loadQueues() {
  const data = await api("/api/v1/queues");
  const rows = (Array.isArray(data) ? data : data.queues).map((q) =>
    el("tr", { "data-queue": q.name }, el("td", {}, q.name), el("td", { class: "num" }, String(q.waiting))));
  document.querySelector("#queues tbody").replaceChildren(...rows);
  // The agent's queues are offered as transfer targets; any other queue name or a number works too.
  const names = (Array.isArray(data) ? data : data.queues).map((q) => el("option", { value: q.name }));
  document.getElementById("transfer-queues").replaceChildren(...names);
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

// Softphone: the page's half of the daemon's WebRTC media gateway (engine/webrtc/gateway.py; the
// message types are listed there). One peer connection for the whole login: calls are connected to
// it on the server side, without renegotiation. Only agents configured with login = "webrtc" get one; the
// server tells the others with a close code, and they are not retried.
const RTC_FINAL = {
  4401: "softphone: token rejected",
  4403: "calls ring on your desk phone",
  4409: "softphone open in another window",
  4503: "softphone disabled on the server",
};
// G.711 first: with a G.711 caller the server then has no Opus to encode (the costly half of a leg).
const CODEC_RANK = { "audio/PCMU": 0, "audio/PCMA": 1, "audio/opus": 2 };

function preferG711(transceiver) {
  if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const codecs = [...RTCRtpReceiver.getCapabilities("audio").codecs];
  const rank = (c) => CODEC_RANK[c.mimeType] ?? 9;
  transceiver.setCodecPreferences(codecs.sort((a, b) => rank(a) - rank(b)));
}

// The server's ICE agent does not trickle: send the offer once gathering is complete (host
// candidates take milliseconds; a slow STUN/TURN server gets a few seconds at most).
function gathered(pc, timeoutMs = 4000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

function softphone() {
  const state = document.getElementById("rtc-state");
  const note = document.getElementById("rtc-note");
  const section = document.getElementById("softphone");
  const audio = document.getElementById("remote-audio");
  const keys = [...document.querySelectorAll("#keypad button")];
  const mute = document.getElementById("mute");
  const answer = document.getElementById("answer");
  const hangup = document.getElementById("hangup");
  const hold = document.getElementById("hold");
  const transferTo = document.getElementById("transfer-to");
  const transfer = document.getElementById("transfer");
  const incoming = document.getElementById("incoming");
  let ws = null, pc = null, mic = null, sender = null, codec = "", call = null, delayMs = 1000;

  const show = (text, up) => { state.textContent = text; state.className = `conn ${up ? "up" : "down"}`; };
  const send = (msg) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
  const enable = (on) => {
    section.setAttribute("aria-disabled", String(!on));
    for (const key of keys) key.disabled = !on;
    mute.disabled = !on;
  };
  const teardown = () => {
    enable(false);
    if (pc) pc.close();
    if (mic) for (const track of mic.getTracks()) track.stop();
    pc = mic = sender = null;
    audio.srcObject = null;
  };

  async function startMedia(hello) {
    show("softphone starting", false);
    try {
      mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    } catch (exc) {
      show("no microphone", false);
      note.textContent = `The browser did not give the page a microphone: ${exc.message}`;
      send({ type: "bye" });
      return;
    }
    pc = new RTCPeerConnection({ iceServers: hello.ice_servers });
    // The microphone goes on the sender only while a call is connected (the "media" message):
    // between calls nothing is streamed, and no renegotiation is needed to start again.
    const transceiver = pc.addTransceiver("audio", { direction: "sendrecv", streams: [mic] });
    sender = transceiver.sender;
    if (hello.media_active) await sender.replaceTrack(mic.getAudioTracks()[0]);
    preferG711(transceiver);
    pc.ontrack = (ev) => { audio.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    pc.onconnectionstatechange = () => {
      if (!pc) return;
      const up = pc.connectionState === "connected";
      show(up ? `softphone ${codec}`.trim() : `softphone ${pc.connectionState}`, up);
      enable(up);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    send({ type: "offer", sdp: pc.localDescription.sdp });
  }

  // The call is gone (answered elsewhere, caller hung up, we hung up): back to waiting.
  function callOver() {
    call = null;
    recorder.connected(null);
    incoming.hidden = true;
    answer.disabled = hangup.disabled = hold.disabled = transfer.disabled = transferTo.disabled = true;
    hold.setAttribute("aria-pressed", "false");
    hold.textContent = "Hold";
  }

  function showIncoming(msg) {
    call = msg.call_id ?? null;
    document.getElementById("incoming-caller").textContent = msg.caller ?? "";
    document.getElementById("incoming-queue").textContent = msg.queue ? `(${msg.queue})` : "";
    const rows = Object.entries(msg.data ?? {}).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]);
    document.getElementById("incoming-data").replaceChildren(...rows);
    // This caller's latest contacts on every channel (calls from the CDR store, tasks whose
    // customer has this number): when, which channel, where, who, how it ended.
    const history = (msg.history ?? []).map((h) => el("li", {},
      `${new Date(h.arrived_at * 1000).toLocaleString()} · ${h.channel ?? "voice"} · ` +
      `${h.queue ?? "-"} · ${h.agent_id ?? "no agent"} · ${h.disposition ?? h.state ?? ""}` +
      (h.subject ? ` · ${h.subject}` : "") +
      (h.talk_s ? ` · ${Math.round(h.talk_s)} s` : "")));
    document.getElementById("incoming-history").replaceChildren(...history);
    document.getElementById("incoming-history-title").hidden = history.length === 0;
    incoming.hidden = false;
    answer.disabled = false;
  }

  const open = () => {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/agent/rtc`);
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: sessionStorage.getItem(TOKEN_KEY) }));
    ws.onmessage = async (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "media") recorder.connected(msg.active ? call : null);
      if (msg.type === "hello") {
        delayMs = 1000;
        note.textContent = "";
        await startMedia(msg);
      } else if (msg.type === "answer" && pc) {
        codec = msg.codec ?? "";
        await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      } else if (msg.type === "media" && sender && mic) {
        await sender.replaceTrack(msg.active ? mic.getAudioTracks()[0] : null);
      } else if (msg.type === "incoming") {
        showIncoming(msg);
      } else if (msg.type === "call_ended" && msg.call_id === call) {
        callOver();
      } else if (msg.type === "transferred") {
        note.textContent = `Transferred to ${msg.to}`;
        transferTo.value = "";
      } else if (msg.type === "error") {
        note.textContent = msg.reason;
      }
    };
    ws.onclose = (ev) => {
      teardown();
      const final = RTC_FINAL[ev.code];
      if (final) {
        show(final, false);
        if (ev.code !== 4403 && ev.reason) note.textContent = ev.reason;
        if (ev.code === 4403) note.textContent = "";
        return;
      }
      show("softphone reconnecting", false);
      if (ev.reason) note.textContent = ev.reason;
      setTimeout(open, delayMs);
      delayMs = Math.min(delayMs * 2, 15000);
    };
  };

  for (const key of keys) key.onclick = () => send({ type: "dtmf", digits: key.dataset.digit });
  mute.onclick = () => {
    const muted = mute.getAttribute("aria-pressed") !== "true";
    for (const track of mic ? mic.getAudioTracks() : []) track.enabled = !muted;
    mute.setAttribute("aria-pressed", String(muted));
  };
  answer.onclick = () => {
    send({ type: "answer", call_id: call });
    incoming.hidden = true;
    answer.disabled = true;
    hangup.disabled = hold.disabled = transfer.disabled = transferTo.disabled = false;
  };
  // Blind transfer: the caller goes to the queue (or number) and this call ends here.
  transfer.onclick = () => {
    const target = transferTo.value.trim();
    if (!target) return;
    send({ type: "transfer", call_id: call, target });  // a queue's name, or a number
  };
  hangup.onclick = () => { send({ type: "hangup", call_id: call }); hangup.disabled = true; };
  // Hold: the caller hears the queue's music until Resume.
  hold.onclick = () => {
    const held = hold.getAttribute("aria-pressed") !== "true";
    send({ type: held ? "hold" : "unhold", call_id: call });
    hold.setAttribute("aria-pressed", String(held));
    hold.textContent = held ? "Resume" : "Hold";
  };
  // Tell the server at once instead of leaving it to notice the socket is gone.
  addEventListener("pagehide", () => send({ type: "bye" }));
  open();
}

// Recording controls: record the connected call from now on (queues with record = "on_demand"), and
// pause/resume the recording while the caller reads out card data (PCI). The server decides (the
// queue's policy, the call's state); the page shows its answer, with its reason when it refuses.
// Agents cannot list calls, so the page does not know up front whether a call is being recorded:
// the server's "already being recorded" (409) to Record tells it.
function recordingControls() {
  const record = document.getElementById("record");
  const pause = document.getElementById("record-pause");
  const status = document.getElementById("record-state");
  let callId = null;

  const show = (text, cls = "") => { status.textContent = text; status.className = cls; };
  const showRecording = (paused) => {
    record.disabled = true;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume recording" : "Pause recording";
    show(paused ? "recording paused" : "recording", paused ? "rec-paused" : "rec-on");
  };

  // PUT /api/v1/calls/{id}/recording; the server's problem detail when it refuses.
  async function put(body) {
    const forCall = callId;
    let resp, answer = {};
    try {
      resp = await fetch(`/api/v1/calls/${encodeURIComponent(forCall)}/recording`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      answer = await resp.json().catch(() => ({}));
    } catch (exc) {
      return { current: forCall === callId, ok: false, status: 0, reason: `no answer from the server (${exc.message})` };
    }
    const reason = answer.detail || answer.title || `HTTP ${resp.status}`;
    return { current: forCall === callId, ok: resp.ok, status: resp.status, reason, answer };
  }

  record.onclick = async () => {
    record.disabled = true;
    show("starting recording…");
    const r = await put({ record: true });
    if (!r.current) return;  // the call ended meanwhile
    if (r.ok || (r.status === 409 && r.reason.includes("already being recorded"))) {
      showRecording(Boolean(r.answer?.recording_paused));
    } else {
      show(`not recording: ${r.reason}`, "error");
      record.disabled = false;  // e.g. not bridged yet: a second try may succeed
    }
  };
  pause.onclick = async () => {
    const paused = pause.getAttribute("aria-pressed") !== "true";
    pause.disabled = true;
    const r = await put({ paused });
    if (!r.current) return;
    pause.disabled = false;
    if (r.ok) showRecording(r.answer.recording_paused);
    else show(`${paused ? "pause" : "resume"} refused: ${r.reason}`, "error");
  };

  // Hanging up ends the call from this side: the controls go at once, not when the server confirms.
  document.getElementById("hangup").addEventListener("click", () => controls.connected(null));
  // The softphone says when a call's audio is connected (its id) and when it is over (null).
  const controls = {
    connected(id) {
      if (id === callId) return;
      callId = id;
      record.disabled = pause.disabled = id === null;
      pause.setAttribute("aria-pressed", "false");
      pause.textContent = "Pause recording";
      show("");
    },
  };
  return controls;
}
const recorder = recordingControls();

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
  softphone();
});
