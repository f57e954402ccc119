// MER-CLIP Live page: camera + microphone to the server over WebRTC, this session's events back
// over server-sent events. No libraries, no CDN: the page works offline on http://localhost.
"use strict";

const TRANSCRIPT_LINES = 8;
const SHOWN_IDS = 1000; // event ids remembered to show each event once
const ICE_GATHER_TIMEOUT_MS = 3000;
// Downscale in the browser: faces need no more than 640x480 at 15 fps, and every pixel we send
// is decoded on the server whether it is used or not.
const MEDIA_CONSTRAINTS = {
  // Loudness and voice quality are emotional cues: keep echo cancellation (speakers), but no
  // automatic gain or noise suppression, which flatten them.
  audio: {
    channelCount: 1,
    echoCancellation: true,
    autoGainControl: false,
    noiseSuppression: false,
  },
  video: {
    width: { ideal: 640, max: 640 },
    height: { ideal: 480, max: 480 },
    frameRate: { ideal: 15, max: 15 },
  },
};

const $ = (id) => document.getElementById(id);

// With access control on, the page is opened as /?token=<publisher token> (see README
// "Access control"); the token goes with the offer and the event stream.
// The token is then taken out of the address bar (history, bookmarks, screen shares: review L5)
// and kept for this tab only, so a reload still works.
const ACCESS_TOKEN = takeToken("merclip-page-token");

function takeToken(key) {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(key, fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  return fromUrl || sessionStorage.getItem(key) || "";
}

const state = {
  pc: null,
  stream: null,
  events: null,
  sessionId: null,
  count: 0,
  shown: new Set(),
  partial: null, // the latest partial transcript (SSE `event: partial`)
  finalUntil: 0, // media end of the last word an event published
};

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

async function fetchConfig() {
  try {
    const resp = await fetch("/config");
    if (resp.ok) return await resp.json();
  } catch (err) {
    console.warn("no /config", err);
  }
  return { ice_servers: [] };
}

function waitForIceGathering(pc) {
  // No trickle ICE: the server answers one complete offer with one complete answer.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, ICE_GATHER_TIMEOUT_MS);
  });
}

async function join() {
  showError("");
  // A new connection's media clock starts at 0 again.
  state.partial = null;
  state.finalUntil = 0;
  $("join").disabled = true;
  try {
    setStatus("asking for camera and microphone");
    if (!window.isSecureContext) {
      throw new Error("the camera needs a secure context: open http://localhost:PORT or HTTPS");
    }
    state.stream = await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
    $("preview").srcObject = state.stream;

    const config = await fetchConfig();
    const pc = new RTCPeerConnection({
      iceServers: (config.ice_servers || []).map((url) => ({ urls: url })),
    });
    state.pc = pc;
    pc.addEventListener("connectionstatechange", () => {
      setStatus(pc.connectionState);
      if (pc.connectionState === "failed") {
        showError("the connection failed; press Join to reconnect to the same session");
        leave(false);
      }
    });
    for (const track of state.stream.getTracks()) {
      const sender = pc.addTrack(track, state.stream);
      if (track.kind === "video") capFrameRate(sender);
    }

    setStatus("connecting");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer" };
    const wanted = $("session-input").value.trim() || state.sessionId;
    if (wanted) body.session_id = wanted;
    const resp = await fetch("/offer", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        ...(ACCESS_TOKEN ? { Authorization: `Bearer ${ACCESS_TOKEN}` } : {}),
      },
      body: JSON.stringify(body),
    });
    const reply = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const retry = resp.headers.get("Retry-After");
      throw new Error(
        `server refused (${resp.status}): ${reply.detail || reply.error || resp.statusText}` +
          (retry ? ` — retry in ${retry} s` : "")
      );
    }
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    state.sessionId = reply.session_id;
    $("session-id").textContent = reply.session_id;
    $("session-input").value = reply.session_id;
    openEvents(reply.session_id);
    $("leave").disabled = false;
  } catch (err) {
    showError(String(err.message || err));
    leave(false);
  }
}

async function capFrameRate(sender) {
  try {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    params.encodings[0].maxFramerate = 15;
    await sender.setParameters(params);
  } catch (err) {
    console.warn("could not cap the frame rate", err);
  }
}

function leave(clearError = true) {
  if (clearError) showError("");
  if (state.events) state.events.close();
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.events = state.pc = state.stream = null;
  $("preview").srcObject = null;
  if ($("status").textContent !== "failed") setStatus("idle");
  $("join").disabled = false;
  $("leave").disabled = true;
}

function openEvents(sessionId) {
  const query = ACCESS_TOKEN ? `?token=${encodeURIComponent(ACCESS_TOKEN)}` : "";
  const source = new EventSource(`/events/${encodeURIComponent(sessionId)}${query}`);
  state.events = source;
  source.onmessage = (msg) => {
    try {
      render(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad event", err, msg.data);
    }
  };
  // Partial transcripts (SSE `event: partial`): the words heard since the last event's, shown
  // after the transcript until events carry them.
  source.addEventListener("partial", (msg) => {
    try {
      renderPartial(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad partial", err, msg.data);
    }
  });
  source.onerror = () => {
    // EventSource reconnects by itself; say so instead of failing silently.
    if (source.readyState === EventSource.CONNECTING) console.warn("events: reconnecting");
  };
}

// ---- rendering -------------------------------------------------------------------------------

function render(ev) {
  // /events replays the session's recent events first, again when EventSource reconnects or
  // the page joins the session again: each event is shown once, or the transcript would repeat.
  if (ev.event_id) {
    if (state.shown.has(ev.event_id)) return;
    state.shown.add(ev.event_id);
    if (state.shown.size > SHOWN_IDS) state.shown.delete(state.shown.values().next().value);
  }
  state.count += 1;
  $("event-count").textContent = String(state.count);
  renderBanner(ev);
  renderBars(ev);
  renderSentiment(ev);
  renderTranscript(ev);
  setPresence($("face"), ev.face_present, "in view", "no face");
  setPresence($("speech"), ev.speech_present, "speaking", "silence");
  const lat = ev.latency || {};
  if (typeof lat.published_ms === "number") {
    $("latency").textContent =
      `${Math.round(lat.published_ms)} ms after window end ` +
      `(features ${Math.round(lat.features_ready_ms)} · inference ${Math.round(
        lat.inference_done_ms
      )})`;
  }
  const trained = ev.trained_on ? ` · trained on ${ev.trained_on}` : "";
  $("model").textContent = `${ev.model_name || "?"} ${ev.model_version || ""}`.trim() + trained;
}

function renderBanner(ev) {
  const notes = [];
  if (ev.pretrained === false) {
    notes.push(
      "The encoders are randomly initialised (pretrained = false): these predictions are " +
        "meaningless. Use the shipped checkpoint (model.checkpoint = \"bundled\") or " +
        "configure clip.pretrained."
    );
  }
  if (ev.zero_shot) {
    notes.push(
      "Zero-shot mode: no trained MER-CLIP checkpoint is loaded; scores are raw CLIP " +
        "similarities to the label words."
    );
  }
  const el = $("banner");
  el.textContent = notes.join(" ");
  el.hidden = notes.length === 0;
}

function renderBars(ev) {
  const labels = ev.emotion_labels || [];
  const probs = ev.emotion_probs || [];
  const smoothed = ev.emotion_smoothed || [];
  const predicted = new Set(ev.emotions_predicted || []);
  const threshold = typeof ev.emotion_threshold === "number" ? ev.emotion_threshold : null;
  const box = $("bars");
  labels.forEach((label, i) => {
    let row = box.querySelector(`.bar[data-label="${CSS.escape(label)}"]`);
    if (!row) {
      row = document.createElement("div");
      row.className = "bar";
      row.dataset.label = label;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "track";
      for (const cls of ["fill", "smoothed", "threshold"]) {
        const part = document.createElement("div");
        part.className = cls;
        track.appendChild(part);
      }
      const value = document.createElement("span");
      value.className = "value";
      row.append(name, track, value);
      box.appendChild(row);
    }
    const p = clamp01(probs[i]);
    row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".smoothed").style.left = `${(clamp01(smoothed[i] ?? p) * 100).toFixed(1)}%`;
    const th = row.querySelector(".threshold");
    th.hidden = threshold === null;
    if (threshold !== null) th.style.left = `${threshold * 100}%`;
    row.querySelector(".value").textContent = p.toFixed(2);
    row.classList.toggle("predicted", predicted.has(label));
    row.dataset.prob = p.toFixed(3);
  });
}

function renderSentiment(ev) {
  const el = $("sentiment");
  el.textContent = "";
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = ev.sentiment || (ev.sentiment === null ? "– (no words)" : "–");
  el.appendChild(label);
  const parts = (ev.sentiment_labels || []).map(
    (l, i) => `${l} ${clamp01((ev.sentiment_probs || [])[i]).toFixed(2)}`
  );
  if (parts.length) el.appendChild(document.createTextNode(`  (${parts.join(" · ")})`));
}

function renderPartial(p) {
  // A later partial replaces an earlier one; only the words after what events published show.
  state.partial = p;
  showPartial();
}

function showPartial() {
  const list = $("transcript");
  let item = list.querySelector("li.partial");
  const p = state.partial;
  const after = state.finalUntil || 0;
  const words = p ? (p.words || []).filter((w) => Number(w.media_end) > after) : [];
  if (!words.length) {
    if (item) item.remove();
    return;
  }
  if (!item) {
    item = document.createElement("li");
    item.className = "partial";
    item.title = "partial: the next event may spell these words differently";
  }
  item.textContent = words.map((w) => w.text).join(" ");
  list.appendChild(item); // always last
  list.scrollTop = list.scrollHeight;
}

function renderTranscript(ev) {
  // new_text: the words this event adds. Each word of the session is in one event only, while
  // ev.transcript is its whole window, which the overlapping next window says again.
  const text = (ev.new_text || "").trim();
  const last = (ev.words || [])[(ev.words || []).length - 1];
  if (last) state.finalUntil = Math.max(state.finalUntil || 0, Number(last.media_end) || 0);
  if (!text) {
    showPartial();
    return;
  }
  const list = $("transcript");
  const item = document.createElement("li");
  const t = document.createElement("span");
  t.className = "t";
  const first = (ev.words || [])[0];
  t.textContent = `${Number((first && first.media_start) || ev.media_start || 0).toFixed(1)}s`;
  item.append(t, document.createTextNode(text));
  list.appendChild(item);
  while (list.children.length > TRANSCRIPT_LINES) list.removeChild(list.firstChild);
  showPartial(); // after the final words, without those they now carry
}

function setPresence(el, present, yes, no) {
  if (typeof present !== "boolean") return;
  el.textContent = present ? yes : no;
  el.classList.toggle("yes", present);
  el.classList.toggle("no", !present);
}

function clamp01(x) {
  const v = Number(x);
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

$("join").addEventListener("click", join);
$("leave").addEventListener("click", () => leave(true));
const fromUrl = new URLSearchParams(location.search).get("session");
if (fromUrl) $("session-input").value = fromUrl;
window.addEventListener("beforeunload", () => leave(false));
