// MER-CLIP Live monitoring dashboard: every session's events over server-sent events (recent
// history first, then live) and the overview polled once a second. Plain canvas drawing, no
// libraries, no CDN.
"use strict";

const KEEP_EVENTS = 150; // windows kept per session (about 5 minutes at a 2 s hop)
const TRANSCRIPT_LINES = 12;
const OVERVIEW_EVERY_MS = 1000;
const RENDER_DELAY_MS = 50; // batch the burst of a replay into one render
const LIVE_SECONDS = 15; // a session is "live" in the list while its last event is this recent
// A tab left open for days must not grow without bound (review L7):
const MAX_SEEN_IDS = 5000; // event ids remembered against replays (a replay repeats at most 300)
const MAX_SESSIONS = 200; // sessions kept in the list; the least recently seen go first
const FORGET_SESSION_MS = 30 * 60 * 1000; // a session Redis no longer lists, silent this long
const COLORS = {
  happy: "#f2a900",
  sad: "#4f7cff",
  anger: "#e0533d",
  surprise: "#9b59b6",
  disgust: "#2e8b57",
  fear: "#555d6b",
};
const FALLBACK_COLORS = ["#f2a900", "#4f7cff", "#e0533d", "#9b59b6", "#2e8b57", "#555d6b"];
const LATENCY_ROWS = [
  ["features_ready", (ev) => ev.latency && ev.latency.features_ready_ms, "window end → features"],
  ["inference_done", (ev) => ev.latency && ev.latency.inference_done_ms, "window end → inference"],
  ["published", (ev) => ev.latency && ev.latency.published_ms, "window end → published"],
  ...["asr", "faces", "face_encoder", "text_encoder", "audio", "queue", "inference"].map((s) => [
    s,
    (ev) => ev.stage_ms && ev.stage_ms[s],
    `stage: ${s}`,
  ]),
];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Out of the address bar once read, kept for this tab (review L5; see app.js takeToken).
const token = (() => {
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem("merclip-dashboard-token", fromUrl);
    const url = new URL(location.href);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  return fromUrl || sessionStorage.getItem("merclip-dashboard-token");
})();

const state = {
  sessions: new Map(), // id -> session record
  seen: new Set(), // event ids already applied (a reconnect replays history)
  total: 0,
  selected: params.get("session"),
  pinned: Boolean(params.get("session")), // false: follow the most recently active session
  active: new Set(), // active sessions according to Redis (overview)
  dirty: false,
};

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function session(id) {
  let s = state.sessions.get(id);
  if (!s) {
    s = { id, events: [], count: 0, seqs: new Set(), minSeq: null, maxSeq: null, lastSeen: 0 };
    state.sessions.set(id, s);
  }
  return s;
}

// ---- events ------------------------------------------------------------------------------------

function applyEvent(ev) {
  if (!ev || typeof ev.session_id !== "string") return;
  if (ev.event_id) {
    if (state.seen.has(ev.event_id)) return;
    state.seen.add(ev.event_id);
    // A Set iterates in insertion order: forget the oldest ids, which no replay repeats.
    for (const id of state.seen) {
      if (state.seen.size <= MAX_SEEN_IDS) break;
      state.seen.delete(id);
    }
  }
  state.total += 1;
  const s = session(ev.session_id);
  s.count += 1;
  s.lastSeen = Date.now();
  s.seqs.add(ev.seq);
  s.minSeq = s.minSeq === null ? ev.seq : Math.min(s.minSeq, ev.seq);
  s.maxSeq = s.maxSeq === null ? ev.seq : Math.max(s.maxSeq, ev.seq);
  // Keep windows in sequence order: a redelivered window may arrive late.
  const events = s.events;
  let i = events.length;
  while (i > 0 && events[i - 1].seq > ev.seq) i -= 1;
  events.splice(i, 0, ev);
  if (events.length > KEEP_EVENTS) events.splice(0, events.length - KEEP_EVENTS);
  if (!state.pinned) state.selected = ev.session_id;
  scheduleRender();
}

function openFeed() {
  const source = new EventSource(withToken("/dashboard/events"));
  const pill = $("feed-status");
  source.onopen = () => {
    pill.textContent = "live";
    pill.className = "pill ok";
  };
  source.onmessage = (msg) => {
    try {
      applyEvent(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad event", err, msg.data);
    }
  };
  source.onerror = () => {
    // EventSource reconnects by itself (and the server replays; seen ids are skipped).
    pill.textContent = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting";
    pill.className = "pill bad";
  };
}

// ---- overview ------------------------------------------------------------------------------------

async function pollOverview() {
  try {
    const resp = await fetch(withToken("/dashboard/overview"), { cache: "no-store" });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.detail || body.error || resp.statusText);
    renderOverview(body);
    showError("");
  } catch (err) {
    showError(`overview unavailable: ${err.message || err}`);
    $("ov-redis").textContent = "unknown";
    $("ov-redis").className = "v bad";
  } finally {
    setTimeout(pollOverview, OVERVIEW_EVERY_MS);
  }
}

function fmt(x, digits = 0) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

function renderOverview(ov) {
  const redis = ov.redis || {};
  $("ov-redis").textContent = redis.ok ? "ok" : "down";
  $("ov-redis").className = "v " + (redis.ok ? "ok" : "bad");
  $("ov-ping").textContent = redis.ok ? `ping ${fmt(redis.ping_ms, 2)} ms` : redis.error || "–";
  $("ov-sessions").textContent = fmt(ov.sessions_active);
  $("ov-rate").textContent = fmt(ov.events_per_second, 2);
  const inf = ov.inference || {};
  $("ov-pending").textContent = fmt(inf.pending);
  $("ov-stream").textContent = fmt(inf.stream_length);
  const proc = ov.process || {};
  const ingest = proc.ingest;
  const worker = proc.inference;
  if (ingest || worker) {
    const backlog = ingest
      ? ingest.windows_dropped_backlog +
        ingest.windows_dropped_windowing +
        (ingest.windows_dropped_unsent || 0)
      : 0;
    const errors = ingest ? ingest.extraction_errors + ingest.publish_errors : 0;
    const skipped = worker ? worker.skipped : 0;
    const dead = worker ? worker.dead_lettered : 0;
    $("ov-drops").textContent = String(backlog + errors + skipped + dead);
    $("ov-drops-detail").textContent =
      `ingest backlog ${backlog} · errors ${errors} · late ${skipped} · dead ${dead}`;
  }
  state.active = new Set(ov.sessions || []);
  for (const id of state.active) session(id);
  scheduleRender();
}

// ---- rendering ---------------------------------------------------------------------------------

function scheduleRender() {
  if (state.dirty) return;
  state.dirty = true;
  // A timer rather than requestAnimationFrame: a dashboard left in a background tab still
  // catches up (browsers throttle timers there to about once a second, rAF stops entirely).
  setTimeout(() => {
    state.dirty = false;
    render();
  }, RENDER_DELAY_MS);
}

function pruneSessions() {
  // The selected session and those Redis lists as active stay; others go once silent for
  // FORGET_SESSION_MS, and beyond MAX_SESSIONS the least recently seen go.
  const now = Date.now();
  const kept = (s) => s.id === state.selected || state.active.has(s.id);
  for (const s of state.sessions.values()) {
    if (!kept(s) && now - s.lastSeen > FORGET_SESSION_MS) state.sessions.delete(s.id);
  }
  const extra = state.sessions.size - MAX_SESSIONS;
  if (extra <= 0) return;
  const oldest = [...state.sessions.values()]
    .filter((s) => !kept(s))
    .sort((a, b) => a.lastSeen - b.lastSeen);
  for (const s of oldest.slice(0, extra)) state.sessions.delete(s.id);
}

function render() {
  $("total-events").textContent = String(state.total);
  pruneSessions();
  renderSessionList();
  const s = state.selected ? state.sessions.get(state.selected) : null;
  renderDetail(s || null);
}

function renderSessionList() {
  const list = $("session-list");
  const sessions = [...state.sessions.values()].sort((a, b) => b.lastSeen - a.lastSeen);
  $("no-sessions").hidden = sessions.length > 0;
  const now = Date.now();
  const rows = sessions.map((s) => {
    let li = list.querySelector(`li[data-session="${CSS.escape(s.id)}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.session = s.id;
      li.innerHTML = '<div><span class="dot"></span><span class="sid"></span></div>' +
        '<div class="meta"></div>';
      li.querySelector(".sid").textContent = s.id;
      li.addEventListener("click", () => {
        state.selected = s.id;
        state.pinned = true;
        scheduleRender();
      });
    }
    const last = s.events[s.events.length - 1];
    const age = s.lastSeen ? Math.round((now - s.lastSeen) / 1000) : null;
    const top = last ? topEmotion(last) : "";
    li.querySelector(".meta").textContent =
      `${s.count} events · window ${s.maxSeq ?? "–"}` +
      (age !== null ? ` · ${age} s ago` : "") +
      (top ? ` · ${top}` : "") +
      (last && last.sentiment ? ` · ${last.sentiment}` : "");
    li.dataset.count = String(s.count);
    li.classList.toggle("live", age !== null && age <= LIVE_SECONDS);
    li.classList.toggle("selected", s.id === state.selected);
    return li;
  });
  list.replaceChildren(...rows);
}

function topEmotion(ev) {
  const probs = ev.emotion_probs || [];
  let best = -1;
  probs.forEach((p, i) => {
    if (best < 0 || p > probs[best]) best = i;
  });
  return best >= 0 ? `${(ev.emotion_labels || [])[best]} ${Number(probs[best]).toFixed(2)}` : "";
}

function renderDetail(s) {
  $("detail-session").textContent = s ? s.id : "–";
  const events = s ? s.events : [];
  const last = events[events.length - 1];
  $("detail-count").textContent = String(s ? s.count : 0);
  $("detail-last-seq").textContent = last
    ? `${last.seq} (${fmt(last.media_start, 1)}–${fmt(last.media_end, 1)} s)`
    : "–";
  const missing = s && s.maxSeq !== null ? s.maxSeq - s.minSeq + 1 - s.seqs.size : 0;
  $("detail-drops").textContent = String(missing);
  setPresence($("detail-face"), last && last.face_present, "in view", "no face");
  setPresence($("detail-speech"), last && last.speech_present, "speaking", "silence");
  $("detail-sentiment").textContent = last
    ? `${last.sentiment || "– no words"} (${(last.sentiment_labels || [])
        .map((l, i) => `${l} ${fmt((last.sentiment_probs || [])[i], 2)}`)
        .join(" · ")})`
    : "–";
  $("detail-emotions").textContent = last
    ? (last.emotions_predicted || []).join(", ") || "none above threshold"
    : "–";
  $("detail-model").textContent = last
    ? `${last.model_name} ${last.model_version}`.trim()
    : "–";
  renderBanner(last);
  drawEmotions(events);
  drawSentiment(events);
  drawPresence(events);
  renderLatency(events);
  renderTranscript(events);
}

function setPresence(el, present, yes, no) {
  if (typeof present !== "boolean") {
    el.textContent = "–";
    el.className = "presence";
    return;
  }
  el.textContent = present ? yes : no;
  el.className = "presence " + (present ? "yes" : "no");
}

function renderBanner(ev) {
  const notes = [];
  if (ev && ev.pretrained === false) {
    notes.push("CLIP weights are randomly initialised (pretrained = false): predictions are meaningless.");
  }
  if (ev && ev.zero_shot) notes.push("Zero-shot: no trained MER-CLIP checkpoint is loaded.");
  $("banner").textContent = notes.join(" ");
  $("banner").hidden = notes.length === 0;
}

function renderLatency(events) {
  const body = $("latency-table").querySelector("tbody");
  const rows = [];
  for (const [name, get, title] of LATENCY_ROWS) {
    const values = events.map(get).filter((v) => typeof v === "number" && Number.isFinite(v));
    if (!values.length) continue;
    const tr = document.createElement("tr");
    tr.dataset.stage = name;
    tr.title = title;
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    for (const text of [name, values[values.length - 1], mean, Math.max(...values)]) {
      const td = document.createElement("td");
      td.textContent = typeof text === "number" ? text.toFixed(0) : text;
      tr.appendChild(td);
    }
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function renderTranscript(events) {
  // The running transcript: each event's new_text (the words it owns; the overlapping windows'
  // transcripts say most words twice), one line per event in seq order.
  const items = events
    .filter((ev) => (ev.new_text || "").trim())
    .slice(-TRANSCRIPT_LINES)
    .map((ev) => {
      const li = document.createElement("li");
      const t = document.createElement("span");
      t.className = "t";
      const first = (ev.words || [])[0];
      t.textContent = `${fmt(first ? first.media_start : ev.media_start, 1)}s`;
      li.append(t, document.createTextNode(ev.new_text.trim()));
      return li;
    });
  const list = $("detail-transcript");
  list.replaceChildren(...items);
  list.scrollTop = list.scrollHeight;
}

// ---- charts (canvas) -----------------------------------------------------------------------

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = Number(canvas.getAttribute("height")) || canvas.clientHeight;
  canvas.style.height = `${height}px`;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  const want = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  if (canvas.height !== want) canvas.height = want;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

const PAD = { left: 44, right: 8, top: 6, bottom: 16 };

function xScale(events, width) {
  const t0 = events.length ? events[0].media_end : 0;
  const t1 = events.length ? events[events.length - 1].media_end : 1;
  const span = Math.max(t1 - t0, 1e-6);
  const inner = width - PAD.left - PAD.right;
  return (t) => PAD.left + (events.length > 1 ? ((t - t0) / span) * inner : inner);
}

function drawAxes(ctx, width, height, events, ticks) {
  const inner = height - PAD.top - PAD.bottom;
  ctx.strokeStyle = "#dde1e7";
  ctx.fillStyle = "#6b7280";
  ctx.font = "10px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (const v of ticks) {
    const y = PAD.top + (1 - v) * inner;
    ctx.beginPath();
    ctx.moveTo(PAD.left, y);
    ctx.lineTo(width - PAD.right, y);
    ctx.stroke();
    ctx.fillText(v.toFixed(1), 4, y + 3);
  }
  if (events.length) {
    const first = events[0].media_end;
    const last = events[events.length - 1].media_end;
    ctx.fillText(`${first.toFixed(0)} s`, PAD.left, height - 3);
    const label = `${last.toFixed(0)} s`;
    ctx.fillText(label, width - PAD.right - ctx.measureText(label).width, height - 3);
  }
  return (v) => PAD.top + (1 - Math.min(1, Math.max(0, v))) * inner;
}

function drawLine(ctx, events, x, y, get, color, dash = []) {
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.6;
  ctx.setLineDash(dash);
  ctx.beginPath();
  events.forEach((ev, i) => {
    const v = Number(get(ev));
    if (!Number.isFinite(v)) return;
    const px = x(ev.media_end);
    const py = y(v);
    if (i === 0) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
    if (events.length === 1) ctx.arc(px, py, 2, 0, 2 * Math.PI);
  });
  ctx.stroke();
  ctx.setLineDash([]);
}

function drawEmotions(events) {
  const { ctx, width, height } = setupCanvas($("emotion-chart"));
  const y = drawAxes(ctx, width, height, events, [0, 0.5, 1]);
  const x = xScale(events, width);
  const last = events[events.length - 1];
  const labels = last ? last.emotion_labels || [] : Object.keys(COLORS);
  if (last && typeof last.emotion_threshold === "number") {
    ctx.strokeStyle = "#999";
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(PAD.left, y(last.emotion_threshold));
    ctx.lineTo(width - PAD.right, y(last.emotion_threshold));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  labels.forEach((label, i) => {
    const color = COLORS[label] || FALLBACK_COLORS[i % FALLBACK_COLORS.length];
    drawLine(ctx, events, x, y, (ev) => (ev.emotion_probs || [])[i], color);
  });
  renderLegend(labels, last);
}

function renderLegend(labels, last) {
  const legend = $("legend");
  const items = labels.map((label, i) => {
    const span = document.createElement("span");
    span.dataset.label = label;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = COLORS[label] || FALLBACK_COLORS[i % FALLBACK_COLORS.length];
    const p = last ? (last.emotion_probs || [])[i] : null;
    span.append(sw, document.createTextNode(`${label} ${fmt(p, 2)}`));
    return span;
  });
  legend.replaceChildren(...items);
}

function drawSentiment(events) {
  const { ctx, width, height } = setupCanvas($("sentiment-chart"));
  const y = drawAxes(ctx, width, height, events, [0, 0.5, 1]);
  const x = xScale(events, width);
  const positive = (ev) => {
    const i = (ev.sentiment_labels || []).indexOf("positive");
    return i >= 0 ? (ev.sentiment_probs || [])[i] : NaN;
  };
  const smoothed = (ev) => {
    const i = (ev.sentiment_labels || []).indexOf("positive");
    return i >= 0 ? (ev.sentiment_smoothed || [])[i] : NaN;
  };
  drawLine(ctx, events, x, y, positive, "#177245");
  drawLine(ctx, events, x, y, smoothed, "#1d2330", [2, 2]);
}

function drawPresence(events) {
  const { ctx, width, height } = setupCanvas($("presence-chart"));
  if (!events.length) return;
  const x = xScale(events, width);
  const row = (height - 6) / 2;
  const inner = width - PAD.left - PAD.right;
  const w = Math.max(2, inner / Math.max(events.length, 1) - 1);
  ctx.fillStyle = "#6b7280";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText("face", 2, row - 4);
  ctx.fillText("speech", 2, 2 * row);
  for (const ev of events) {
    const px = Math.min(x(ev.media_end) - w, width - PAD.right - w);
    ctx.fillStyle = ev.face_present ? "#177245" : "#e5e7eb";
    ctx.fillRect(Math.max(PAD.left, px), 2, w, row - 2);
    ctx.fillStyle = ev.speech_present ? "#4f7cff" : "#e5e7eb";
    ctx.fillRect(Math.max(PAD.left, px), row + 3, w, row - 2);
  }
}

window.addEventListener("resize", scheduleRender);
openFeed();
pollOverview();
scheduleRender();
