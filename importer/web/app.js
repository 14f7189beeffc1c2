// The page of top-import serve: choose -> check -> send -> watch, over the server's JSON API.
// Every request carries the page's token in a header (a page of another site cannot read it).
"use strict";
const T = window.T;
const TOKEN = document.querySelector('meta[name="top-import-token"]').content;
const $ = (id) => document.getElementById(id);
let checked = null; // the last check: its upload id, name, sheet and counts
let uploaded = null; // the last upload: its id, name and sheets
let checking = 0; // the latest check asked for: an older one's answer is dropped

function text(id, value) { $(id).textContent = value; }
// "label: value", with the colon of the page's language (a full-width one in Chinese)
function labelled(label, value) { return T.labelled.replace("{label}", label).replace("{value}", value); }

async function call(method, path, body) {
  const headers = { "X-Top-Import-Token": TOKEN };
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const data = response.headers.get("Content-Type", "").includes("json") ? await response.json() : { error: await response.text() };
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// An upload through XMLHttpRequest, whose upload.onprogress moves the bar (fetch has none).
function upload(file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/api/uploads");
    request.setRequestHeader("X-Top-Import-Token", TOKEN);
    const bar = $("upload-progress");
    bar.hidden = false;
    bar.value = 0;
    request.upload.onprogress = (e) => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
    request.onload = () => {
      bar.hidden = true;
      let data;
      try { data = JSON.parse(request.responseText); } catch { data = { error: request.responseText || request.statusText }; }
      if (request.status >= 200 && request.status < 300) resolve(data); else reject(new Error(data.error || request.statusText));
    };
    request.onerror = () => { bar.hidden = true; reject(new Error(request.statusText || "upload failed")); };
    request.send(form);
  });
}

function counts(list, values) {
  list.replaceChildren();
  for (const [status, n] of Object.entries(values)) {
    const item = document.createElement("li");
    item.className = status;
    item.dataset.status = status;
    item.textContent = `${T.statuses[status] || status}: ${n}`;
    list.append(item);
  }
}

function table(element, headers, rows) {
  element.replaceChildren();
  const head = element.insertRow();
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
  for (const row of rows) {
    const tr = element.insertRow();
    for (const cell of row) tr.insertCell().textContent = cell ?? "";
  }
}

function download(link, fileId, label) {
  link.href = `/api/files/${fileId}`;
  link.textContent = label;
  link.hidden = false;
}

async function choose(file) {
  $("upload-error").hidden = true;
  $("check-step").hidden = false;
  text("check-title", `${T.uploading} ${file.name}`);
  $("send-step").hidden = true;
  try {
    uploaded = await upload(file);
    sheets(uploaded.sheets);
    await check(null);
  } catch (error) {
    $("check-step").hidden = true;
    $("upload-error").hidden = false;
    text("upload-error", error.message);
  }
}

function sheets(names) {
  const select = $("sheet");
  select.replaceChildren();
  for (const name of names) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.append(option);
  }
  $("sheet-box").hidden = names.length < 2;
}

async function check(sheet) {
  const mine = ++checking;
  text("check-title", `${T.checking} ${uploaded.name}`);
  $("send-step").hidden = true;
  try {
    const check = await call("POST", "/api/checks", { upload: uploaded.id, sheet, api: $("api").value });
    if (mine !== checking) return; // another sheet was chosen meanwhile
    checked = check;
    checked.sheet = sheet;
    checked.api = $("api").value;
    text("check-title", labelled(T.checked, check.name));
    counts($("counts"), check.counts);
    download($("validate-book"), check.workbook, T.validate_book);
    text("mapping-title", T.mapping);
    table($("mapping"), [T.column, T.field], check.mapping.map((m) => [m.column, m.field || T.kept]));
    text("problems-title", T.problems);
    if (check.problems.length) {
      table($("problems"), [T.row, T.status, T.field, T.value, T.reason],
        check.problems.map((p) => [p.row, T.statuses[p.status] || p.status, p.field, p.value, p.reason]));
    } else {
      table($("problems"), [T.no_problems], []);
    }
    $("send-step").hidden = false;
  } catch (error) {
    if (mine !== checking) return;
    $("check-step").hidden = true;
    $("upload-error").hidden = false;
    text("upload-error", error.message);
  }
}

async function send() {
  if (!checked) return;
  const simulate = $("simulate").checked;
  window.target = simulate ? T.simulate : `${T.gateway} ${window.appKey || ""}`;
  $("send").disabled = true;
  try {
    const run = await call("POST", "/api/runs", { upload: checked.upload, sheet: checked.sheet, api: checked.api, simulate, qps: $("qps").value.trim(), confirmed: true });
    watch(run.id);
  } catch (error) {
    $("send").disabled = false;
    window.alert(error.message);
  }
}

function watch(runId) {
  $("watch-step").hidden = false;
  $("result-book").hidden = true;
  $("feed-back").hidden = true;
  $("stop").disabled = false;
  $("stop").onclick = async () => { $("stop").disabled = true; text("run-message", T.stopping); await call("POST", `/api/runs/${runId}/stop`); };
  const events = new EventSource(`/api/runs/${runId}/events`);
  let asked = false; // the plan is put to the person once
  events.onmessage = async (message) => {
    const run = JSON.parse(message.data);
    if (run.phase === "confirm" && !asked) {
      asked = true;
      text("run-message", run.plan);
      const question = T.confirm.replace("{plan}", run.plan).replace("{target}", window.target || run.target);
      await call("POST", `/api/runs/${runId}/${window.confirm(question) ? "confirm" : "stop"}`);
      return;
    }
    if (run.phase === "pre-flight" || run.phase === "") text("run-message", T.planning);
    text("watch-title", labelled(run.exit_code === null ? T.sending : T.done, run.input));
    counts($("run-counts"), run.counts);
    const total = run.total || run.settled || 1;
    $("progress").max = total;
    $("progress").value = Math.min(run.settled, total);
    const left = run.total && run.rate > 0 && run.exit_code === null ? Math.ceil((run.total - run.settled) / run.rate) : null;
    const pace = run.pace ? ` · ${T.pace} ${run.pace}/s` + (run.sharing ? ` (${T.shared.replace("{others}", run.sharing)})` : "") : "";
    text("watch-line", `${run.settled} / ${run.total ?? "?"} ${T.rows} · ${run.rate}/s${left !== null ? ` · ${T.eta} ${left} s` : ""}${pace}`);
    if (run.exit_code === null) {
      $("failures").hidden = !run.latest.length; // the latest rows that went wrong, live
      table($("failures"), [T.row, T.status, T.reason], run.latest.map((f) => [f.row, T.statuses[f.status] || f.status, f.reason]));
    }
    if (run.exit_code !== null) {
      events.close();
      $("stop").disabled = true;
      $("send").disabled = false;
      text("run-message", `${T.exit} ${run.exit_code}${run.message ? ": " + run.message : ""}`);
      if (run.workbook) download($("result-book"), run.workbook, T.result_book);
      $("failures").hidden = !run.failures.length;
      table($("failures"), [T.row, T.status, T.reason], run.failures.map((f) => [f.row, T.statuses[f.status] || f.status, f.reason]));
      $("feed-back").hidden = false;
      text("feed-back", T.feed_back);
      history();
    }
  };
}

// The runs in the journal (this server's and any other's), with their workbooks.
async function history() {
  const found = await call("GET", "/api/history");
  $("history-step").hidden = !found.runs.length && !found.problems.length;
  text("history-title", T.history);
  text("history-problems", found.problems.join(" "));
  const body = found.runs.map((r) => [
    new Date(r.started * 1000).toLocaleString(),
    r.input,
    T[r.target === "simulator" ? "simulator" : "platform"],
    Object.entries(r.counts).map(([s, n]) => `${T.statuses[s] || s} ${n}`).join(", ") || (r.state === "running" ? T.running : r.state === "killed" ? T.killed : ""),
    r.exit_code ?? (r.state === "running" ? "…" : ""),
    "", // the workbook's link, below
  ]);
  table($("history"), [T.started, T.input, T.target, T.counts, T.exit, ""], body);
  found.runs.forEach((r, i) => {
    if (!r.workbook) return;
    const link = document.createElement("a");
    link.href = `/api/files/${r.workbook}`;
    link.textContent = T.result_book;
    $("history").rows[i + 1].cells[5].append(link);
  });
}

async function start() {
  document.title = T.title;
  text("title", T.title);
  text("drop-text", T.drop);
  text("send-title", T.send);
  text("simulate-text", T.simulate);
  text("qps-text", T.qps);
  text("send", T.send);
  text("stop", T.stop);
  text("sheet-text", T.sheet);
  $("sheet").addEventListener("change", () => check($("sheet").value));
  const lang = document.documentElement.lang;
  $("language").textContent = lang === "zh" ? "English" : "中文";
  $("language").href = `/?lang=${lang === "zh" ? "en" : "zh"}`;
  const info = await call("GET", "/api/info");
  window.appKey = info.app_key;
  text("api-text", T.api);
  for (const name of info.apis) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    option.selected = name === info.api;
    $("api").append(option);
  }
  $("api").addEventListener("change", () => { if (uploaded) check(checked ? checked.sheet : null); });
  text("gateway-text", info.app_key ? `${T.gateway} ${info.app_key}` : labelled(T.gateway, T.no_key));
  $("gateway").disabled = !info.app_key;
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) choose(e.dataTransfer.files[0]); });
  $("file").addEventListener("change", () => { if ($("file").files[0]) choose($("file").files[0]); $("file").value = ""; });
  $("send").addEventListener("click", send);
  const runs = await call("GET", "/api/runs");
  const going = runs.find((r) => r.exit_code === null);
  if (going) watch(going.id); // a closed tab did not stop it: show it again
  await history();
  document.body.dataset.ready = "1"; // every control listens now
}

start();
