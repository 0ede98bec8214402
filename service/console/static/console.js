// The ops console (served at /console; see service/console/__init__.py).
// Every piece of text from a request or a response is written with textContent, never as HTML:
// item titles are attacker-controlled. No dependencies, no build step.
"use strict";

const KEY_STORE = "relevance.console.apiKey";
const SCORE_KEY_STORE = "relevance.console.scoreKey";

const HELP = {
  paste:
    "One item per line: 'id<TAB>title', 'id | title' or just a title (ids are then item-1, item-2…); " +
    "or a JSON array of items such as [{\"id\": \"sku-1\", \"title\": \"…\", \"attributes\": {\"brand\": \"…\"}}].",
  ids: "One item id per line, as POST /score saw it: the items are read from the item store (Redis).",
};

// What the page says for each error code of /score and /explain (service/errors.py, engine.py).
const ERROR_TITLES = {
  explain_timeout: "The teacher timed out",
  breaker_open: "The teacher's circuit breaker is open",
  teacher_failed: "The teacher backend failed",
  teacher_unavailable: "The teacher is not available",
  rate_limited: "Rate limited",
  unauthorized: "Not authorised",
  item_store_unavailable: "The item store is down",
  item_store_disabled: "The item store is disabled",
  overloaded: "The service is overloaded",
  deadline_exceeded: "Not scored in time",
};

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmt(x, digits = 3) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

class ApiError extends Error {
  constructor(status, body, headers) {
    const detail = (body && body.error) || {};
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail.code || `http_${status}`;
    this.field = detail.field || null;
    this.retryAfter = headers.get("Retry-After");
  }
}

async function call(method, path, body, key) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  return { data, headers: response.headers };
}

function describeError(err) {
  if (!(err instanceof ApiError)) return `Request failed: ${err.message}`;
  const title = ERROR_TITLES[err.code] || `HTTP ${err.status} (${err.code})`;
  const where = err.field ? ` [field ${err.field}]` : "";
  const retry = err.retryAfter ? ` (Retry-After: ${err.retryAfter} s)` : "";
  return `${title}: ${err.message}${where}${retry}`;
}

function showBanner(node, text, kind) {
  node.textContent = text;
  node.className = `banner ${kind}`;
  node.hidden = false;
}

// --- input ---

function parseItems(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("no items: paste at least one");
  if (trimmed.startsWith("[")) {
    let items;
    try {
      items = JSON.parse(trimmed);
    } catch (e) {
      throw new Error(`items are not valid JSON: ${e.message}`);
    }
    if (!Array.isArray(items)) throw new Error("items JSON must be an array of objects");
    items.forEach((item, i) => {
      if (typeof item !== "object" || item === null || Array.isArray(item))
        throw new Error(`items[${i}] must be an object with an id and a title`);
    });
    return items;
  }
  const items = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let id = null;
    let title = line;
    const tab = line.indexOf("\t");
    const bar = line.indexOf(" | ");
    if (tab >= 0) {
      id = line.slice(0, tab).trim();
      title = line.slice(tab + 1);
    } else if (bar >= 0) {
      id = line.slice(0, bar).trim();
      title = line.slice(bar + 3);
    }
    if (id === "") throw new Error(`line ${i + 1}: the id before the separator is empty`);
    if (!title.trim()) throw new Error(`line ${i + 1}: the title is empty`);
    items.push({ id: id || `item-${items.length + 1}`, title: title.trim() });
  });
  return items;
}

function parseIds(text) {
  const ids = text.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!ids.length) throw new Error("no ids: enter at least one item id");
  return ids;
}

function parseServerTiming(value) {
  const out = {};
  (value || "").split(",").forEach((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) out[name] = Number(dur.slice(4));
  });
  return out;
}

// --- state ---

const state = { query: "", items: new Map(), scores: [] };

function apiKey() {
  return $("api-key").value.trim();
}

function scoreKey() {
  return $("score-key").value.trim() || apiKey();
}

// --- scoring ---

async function scoreClicked() {
  const errorBox = $("request-error");
  errorBox.hidden = true;
  $("lookup-note").hidden = true;
  const query = $("query").value;
  if (!query.trim()) {
    showBanner(errorBox, "Enter a query.", "error");
    return;
  }
  const source = document.querySelector("input[name=source]:checked").value;
  let items;
  try {
    if (source === "ids") {
      const ids = parseIds($("items").value);
      const { data } = await call("POST", "/explain/items", { ids }, apiKey());
      items = data.items;
      const notes = [];
      if (data.missing.length) notes.push(`not in the item store: ${data.missing.join(", ")}`);
      const ambiguous = Object.keys(data.ambiguous);
      if (ambiguous.length) notes.push(`stored differently by several /score callers: ${ambiguous.join(", ")}`);
      if (notes.length) showBanner($("lookup-note"), `Left out, ${notes.join("; ")}.`, "warn");
      if (!items.length) throw new Error("none of the ids is in the item store");
    } else {
      items = parseItems($("items").value);
    }
    const started = performance.now();
    const { data, headers } = await call(
      "POST",
      "/score",
      { query, items, top_n: items.length },
      scoreKey(),
    );
    const roundTrip = performance.now() - started;
    state.query = query;
    state.items = new Map(items.map((item, i) => [i, item]));
    state.scores = data.scores;
    renderRanking(data, parseServerTiming(headers.get("Server-Timing")), roundTrip);
  } catch (err) {
    showBanner(errorBox, err instanceof ApiError ? describeError(err) : err.message, "error");
  }
}

function gradeBars(grades) {
  const box = el("div", null, "grades");
  if (!grades) {
    box.append(el("span", "no grade head", "muted"));
    return box;
  }
  for (const [level, p] of Object.entries(grades)) {
    const row = el("div", null, "grade");
    row.append(el("span", level, "level"));
    const bar = el("span", null, "bar");
    const fill = el("span", null, "fill");
    fill.style.width = `${Math.round(p * 100)}%`;
    bar.append(fill);
    row.append(bar, el("span", fmt(p, 2), "p"));
    box.append(row);
  }
  return box;
}

function renderRanking(data, timing, roundTripMs) {
  $("results").hidden = false;
  const parts = ["tokenize", "queue", "infer", "total"]
    .filter((k) => k in timing)
    .map((k) => `${k === "tokenize" ? "tokenise" : k} ${fmt(timing[k], 2)} ms`);
  $("timing").textContent =
    `${data.model.name}@${data.model.version} · server: ${parts.join(" · ")} · round trip ${fmt(roundTripMs, 1)} ms`;
  const body = $("ranking").querySelector("tbody");
  body.replaceChildren();
  data.scores.forEach((s, rank) => {
    const item = state.items.get(s.index);
    const row = el("tr");
    row.dataset.index = String(s.index);
    const title = el("td", item.title, "title");
    if (s.truncated) title.append(el("span", "cut", "tag warn-tag"));
    const button = el("button", "Explain", "explain");
    button.type = "button";
    button.addEventListener("click", () => explainClicked(s.index));
    const action = el("td");
    action.append(button);
    const grades = el("td");
    grades.append(gradeBars(s.grades));
    row.append(el("td", rank + 1), el("td", s.id, "id"), title, el("td", fmt(s.score), "score"), grades, action);
    body.append(row);
  });
}

// --- explanation ---

function argmax(dist) {
  let best = null;
  for (const [k, v] of Object.entries(dist || {})) if (best === null || v > dist[best]) best = k;
  return best;
}

// Python's offsets count code points; JavaScript strings count UTF-16 units: slice by code points.
function highlight(node, text, spans) {
  node.replaceChildren();
  const chars = Array.from(text);
  const marks = spans
    .filter((s) => s.start !== null && s.end !== null && s.start < s.end && s.end <= chars.length)
    .sort((a, b) => a.start - b.start || b.end - a.end);
  let cursor = 0;
  for (const span of marks) {
    if (span.end <= cursor) continue; // inside a span already marked
    const start = Math.max(span.start, cursor);
    if (start > cursor) node.append(document.createTextNode(chars.slice(cursor, start).join("")));
    const mark = el("mark", chars.slice(start, span.end).join(""), "ev");
    mark.dataset.dimension = span.dimension;
    mark.dataset.start = String(span.start);
    mark.dataset.end = String(span.end);
    mark.title = `${span.dimension}: ${span.verdict}`;
    node.append(mark);
    cursor = span.end;
  }
  if (cursor < chars.length) node.append(document.createTextNode(chars.slice(cursor).join("")));
}

function spanChecks(record) {
  // A span counts as verified only if the text at its offsets is the span text (the parser's rule);
  // the page checks again rather than trust the flag alone.
  const texts = { query: Array.from(record.query), item: Array.from(record.item_text) };
  const verified = { query: [], item: [] };
  const unverified = [];
  for (const dim of record.dimensions) {
    for (const ev of dim.evidence) {
      const chars = texts[ev.source] || [];
      const ok =
        ev.verified &&
        ev.start !== null &&
        ev.end !== null &&
        chars.slice(ev.start, ev.end).join("") === ev.text;
      const span = { ...ev, dimension: dim.dimension, verdict: dim.verdict, ok };
      if (ok) verified[ev.source].push(span);
      else unverified.push(span);
    }
  }
  return { verified, unverified };
}

function explanationStatus(body) {
  if (body.cached) return ["From the explanation cache (Redis): the teacher was not asked again.", "info cached"];
  if (body.shared) return ["Shared: joined an identical teacher call already in flight.", "info"];
  return [`Fresh from the teacher (${fmt(body.timings_ms.teacher_ms, 0)} ms).`, "info fresh"];
}

async function explainClicked(index) {
  const item = state.items.get(index);
  const panel = $("explanation");
  panel.hidden = false;
  $("exp-item-id").textContent = item.id;
  $("exp-body").hidden = true;
  showBanner($("exp-status"), "Asking the teacher…", "info pending");
  for (const row of $("ranking").querySelectorAll("tbody tr"))
    row.classList.toggle("selected", row.dataset.index === String(index));
  try {
    const { data } = await call("POST", "/explain", { query: state.query, item }, apiKey());
    renderExplanation(data, state.scores.find((s) => s.index === index));
  } catch (err) {
    const kind = err instanceof ApiError ? `error ${err.code}` : "error";
    showBanner($("exp-status"), describeError(err), kind);
  }
}

function renderExplanation(body, ranked) {
  const record = body.explanation;
  const [status, kind] = explanationStatus(body);
  showBanner($("exp-status"), status, kind);
  $("exp-body").hidden = false;

  const { verified, unverified } = spanChecks(record);
  highlight($("exp-query"), record.query, verified.query);
  highlight($("exp-item"), record.item_text, verified.item);
  const list = $("exp-unverified-list");
  list.replaceChildren();
  for (const span of unverified) {
    const li = el("li", null, "unverified");
    li.append(el("span", "unverified", "tag warn-tag"), el("span", ` ${span.dimension} (${span.source}): `));
    li.append(el("q", span.text));
    list.append(li);
  }
  $("exp-unverified").hidden = unverified.length === 0;

  renderGrades(record, body.student, body.student_error);
  renderDimensions(record);
  $("exp-rationale").textContent = record.rationale ? `Rationale: ${record.rationale}` : "";
  const t = body.timings_ms;
  const parts = [`teacher ${fmt(t.teacher_ms, 1)} ms`, `student ${fmt(t.student_ms, 1)} ms`, `total ${fmt(t.total_ms, 1)} ms`];
  $("exp-timing").textContent = `${record.teacher_id} · prompt ${record.prompt_version} · ${parts.join(" · ")}`;
  $("exp-raw").textContent = JSON.stringify(body, null, 2);
  if (ranked && body.student && Math.abs(ranked.score - body.student.score) > 1e-4) {
    // Not expected: the same bundle scored the same pair (a reload in between would explain it).
    $("exp-grade-note").textContent += ` The ranking showed score ${fmt(ranked.score)}; the bundle may have been reloaded since.`;
  }
}

function renderGrades(record, student, studentError) {
  const teacher = record.grade_distribution || {};
  const studentDist = (student && student.grade_distribution) || null;
  const levels = [...record.grade_levels];
  for (const level of Object.keys(studentDist || {})) if (!levels.includes(level)) levels.push(level);
  const body = $("exp-grades").querySelector("tbody");
  body.replaceChildren();
  const teacherTop = record.grade || argmax(teacher);
  const studentTop = argmax(studentDist);
  for (const level of levels) {
    const row = el("tr");
    row.dataset.level = level;
    const tCell = el("td", level in teacher ? fmt(teacher[level], 2) : "–", "teacher");
    const sCell = el("td", studentDist && level in studentDist ? fmt(studentDist[level], 2) : "–", "student");
    if (level === teacherTop) tCell.classList.add("top");
    if (level === studentTop) sCell.classList.add("top");
    row.append(el("td", level), tCell, sCell);
    body.append(row);
  }
  const note = [];
  note.push(`Teacher's grade: ${record.grade || "none could be read"} (distribution from ${record.distribution_source}).`);
  if (student) note.push(`Student ${student.bundle}: score ${fmt(student.score)}.`);
  else note.push(`Student: ${studentError || "unavailable"}.`);
  if (!record.parse_ok) note.push(`The teacher's output was not fully parsed: ${record.parse_errors.join("; ")}.`);
  $("exp-grade-note").textContent = note.join(" ");

  const flag = $("exp-disagree");
  flag.hidden = true;
  if (teacherTop && studentTop && teacherTop !== studentTop) {
    showBanner(flag, `Teacher and student disagree: the teacher says ${teacherTop}, the student ${studentTop}.`, "warn disagree");
  } else if (teacherTop && student && !studentDist) {
    flag.hidden = false;
    flag.className = "muted";
    flag.textContent = "The student bundle has no grade head: compare its score with the teacher's grade.";
  }
}

function renderDimensions(record) {
  const body = $("exp-dimensions").querySelector("tbody");
  body.replaceChildren();
  const none = $("exp-no-dimensions");
  none.hidden = record.dimensions.length > 0;
  none.textContent =
    record.mode === "score"
      ? "The teacher ran in score mode (RELEVANCE_EXPLAIN_MODE=score): a grade without reasoning."
      : "The teacher gave no per-dimension verdicts.";
  $("exp-dimensions").hidden = record.dimensions.length === 0;
  for (const dim of record.dimensions) {
    const row = el("tr");
    row.dataset.dimension = dim.dimension;
    const verdict = el("td", dim.verdict, `verdict ${dim.verdict}`);
    const evidence = el("td", null, "evidence");
    for (const ev of dim.evidence) {
      const chip = el("q", ev.text, ev.verified ? "ev-chip" : "ev-chip unverified");
      chip.title = ev.verified ? `${ev.source} [${ev.start}, ${ev.end})` : `${ev.source}: not found in the text`;
      evidence.append(chip);
      if (!ev.verified) evidence.append(el("span", "unverified", "tag warn-tag"));
    }
    row.append(el("td", dim.dimension), el("td", dim.query_value ?? "–"), el("td", dim.item_value ?? "–"), verdict, evidence);
    body.append(row);
  }
}

// --- start ---

async function showModel() {
  try {
    const { data } = await call("GET", "/readyz");
    const b = data.bundle;
    $("model").textContent = `model: ${b.name}@${b.version} (${b.kind}) on ${data.provider}`;
  } catch (err) {
    $("model").textContent = `model: not ready (${err.message})`;
  }
}

function setSource() {
  const source = document.querySelector("input[name=source]:checked").value;
  $("items-help").textContent = HELP[source];
}

document.addEventListener("DOMContentLoaded", () => {
  for (const [id, store] of [["api-key", KEY_STORE], ["score-key", SCORE_KEY_STORE]]) {
    $(id).value = sessionStorage.getItem(store) || "";
    $(id).addEventListener("change", () => sessionStorage.setItem(store, $(id).value.trim()));
  }
  for (const radio of document.querySelectorAll("input[name=source]")) radio.addEventListener("change", setSource);
  setSource();
  $("score").addEventListener("click", scoreClicked);
  $("query").addEventListener("keydown", (e) => {
    if (e.key === "Enter") scoreClicked();
  });
  showModel();
});
