// The experiment page: status and progress live over the event stream, loss and accuracy,
// per-layer gradient curves with a metric picker, the depth heatmap, the gradient through
// time of recurrent runs, the diagnosis with one-click remedies, and the spec.
import { api, badge, el, flash, FINISHED, num, paceText, showWho } from "./api.js";
import { DEPTH_LEGEND, forLog, heatmap, isMagnitude, layerTraces, layout, log10Matrix, react } from "./charts.js";

const root = document.getElementById("experiment");
const id = root.dataset.id;
// Per series: thinned by the server, keeping every extreme (agg=minmax); the page preloads
// the loss series with this same length.
const MAX_POINTS = Number(root.dataset.maxPoints);
let experiment = null;
let metricLayers = {};
let metric = new URLSearchParams(location.search).get("metric");
let shownMetric = null;
let lastStep = -1; // the highest step drawn: the stream sends what comes after it
let stream = null;
// When each live event reached the page (the browser tests and bench/dashboard.py read it).
const arrivals = [];
window.gradwatchLive = arrivals;

// Each metric's thinned series, fetched once: a metric switch redraws from here, and the
// page fetches only what it has not got. Points that arrive live make them stale, so an
// event empties it (the traces on screen are extended in place instead).
const seriesCache = new Map();
function seriesOf(name) {
  if (!seriesCache.has(name)) {
    const request = api(`/experiments/${id}/series`, { params: { metric: name, max_points: MAX_POINTS } });
    request.catch(() => seriesCache.delete(name)); // a failed read is asked again next time
    seriesCache.set(name, request);
  }
  return seriesCache.get(name);
}
// The requests the first chart needs: the experiment, its metrics and the loss. The page
// preloads the very same URLs (templates/experiment.html), so these are handed responses
// already on their way; the default per-layer metric follows once the loss is in (drawAll).
const early = { experiment: api(`/experiments/${id}`), metrics: api(`/experiments/${id}/metrics`) };
early.metrics.catch(() => null); // awaited later; a page whose experiment is gone says so once
seriesOf("loss");
// Timing marks of the first draw (bench/dashboard.py reads them): gw:<what>.
const mark = (what) => performance.mark(`gw:${what}`);
mark("module");

function setText(elementId, text) { document.getElementById(elementId).textContent = text; }

function renderHeader() {
  setText("name", experiment.name);
  const status = document.getElementById("status");
  status.className = `badge status-${experiment.status}`;
  status.textContent = experiment.status + (experiment.cancel_requested && !FINISHED.has(experiment.status) ? " (cancelling)" : "");
  const { step, total } = experiment.progress;
  const bar = document.getElementById("progress");
  bar.max = total || 1;
  bar.value = step;
  setText("progress-text", `step ${step.toLocaleString()} / ${total.toLocaleString()}${paceText(experiment) ? ` · ${paceText(experiment)}` : ""}`);
  document.getElementById("cancel").hidden = FINISHED.has(experiment.status);
  document.getElementById("delete").hidden = !FINISHED.has(experiment.status);
  const error = document.getElementById("error");
  error.hidden = !experiment.error;
  error.textContent = experiment.error ? `Error: ${experiment.error}` : "";
  setText("spec", JSON.stringify(experiment.spec, null, 2));
  document.getElementById("export").href = `/api/v1/experiments/${id}/export?format=csv`;
}

async function drawGlobal(name, elementId, title) {
  const data = await seriesOf(name);
  const series = data.series.filter((s) => s.steps.length);
  const traces = series.map((s) => ({ type: "scatter", mode: "lines", name, x: s.steps, y: s.values, line: { width: 1.6 } }));
  await react(elementId, traces, layout(title, "training step", name));
  for (const s of series) lastStep = Math.max(lastStep, s.steps.at(-1));
}

// Weights by default (the essay's picture: one curve per weight matrix); biases on request.
const withBiases = () => document.getElementById("biases").checked;
const isBias = (layer) => /(^|\.)bias[^.]*$/.test(String(layer)); // bias, bias_ih, bias_hh
const shownLayers = (series) => series.filter((s) => withBiases() || !isBias(s.layer));

async function drawLayers() {
  const picked = metric;
  const series = shownLayers((await seriesOf(picked)).series);
  if (picked !== metric) return; // another metric was picked while this one was on its way
  const log = isMagnitude(picked);
  const title = `${picked} per layer (${series.length} layers, input → output)`;
  const figureLayout = { ...layout(title, "training step", picked, { logY: log }), legend: DEPTH_LEGEND };
  await react("chart-layers", layerTraces(series, picked), figureLayout);
  shownMetric = picked;
  for (const s of series) if (s.steps.length) lastStep = Math.max(lastStep, s.steps.at(-1));
  document.getElementById("chart-layers").dataset.metric = picked;
  document.getElementById("chart-layers").dataset.traces = String(series.length);
}

async function drawProfile() {
  if (!metricLayers[metric] || metricLayers[metric][0] === null) return;
  const profile = await api(`/experiments/${id}/profile`, { params: { metric, max_points: 400 } });
  const log = isMagnitude(metric);
  const columns = profile.layers.map((layer, j) => [layer, j]).filter(([layer]) => withBiases() || !isBias(layer));
  const byLayer = columns.map(([, j]) => profile.values.map((row) => row[j]));
  const z = log ? log10Matrix(byLayer) : byLayer;
  const figure = heatmap(profile.steps, columns.map((_, i) => i), z, {
    title: `Depth profile of ${metric} (step × layer, input at the bottom)`, xTitle: "training step", yTitle: "layer",
    colourTitle: log ? `log10 ${metric}` : metric, yLabels: columns.map(([layer]) => layer),
  });
  await react("chart-profile", figure.data, figure.layout);
}

// The gradient through time of recurrent layer 0 as drawn: the /timesteps response, then
// extended in place by the stream's `timesteps` events (rows of later training steps).
let throughTime = null;
const isRecurrent = () => ["rnn", "lstm", "gru"].includes(experiment.spec.model?.type);

async function drawThroughTime() {
  document.getElementById("through-time").hidden = !isRecurrent();
  if (!isRecurrent()) return;
  try { throughTime = await api(`/experiments/${id}/timesteps`); } catch { return; }
  if (!throughTime.steps.length) return; // none recorded yet: the stream's rows start the charts
  await drawTimestepCharts();
  await drawHorizon();
}

async function drawTimestepCharts() {
  const data = throughTime;
  if (!data?.steps.length) return;
  // Curves: ‖∂L/∂h_t‖ over t at a few recorded steps, early (dark) to late (light).
  const picks = [...new Set([0, Math.floor(data.steps.length / 3), Math.floor((2 * data.steps.length) / 3), data.steps.length - 1])];
  const curves = picks.map((row, i) => ({
    type: "scatter", mode: "lines", name: `step ${data.steps[row]}`, x: data.timesteps,
    y: forLog(data.hidden_grad_norm[row], true), line: { color: ["#440154", "#31688e", "#35b779", "#e3b505"][i] },
  }));
  await react("chart-timesteps", curves,
    layout("‖∂L/∂h_t‖ through time (loss at the last timestep)", "timestep t", "‖∂L/∂h_t‖", { logY: true }));
  // A copy of the steps: the stream appends to them, and the chart must hold what it drew.
  const figure = heatmap(data.timesteps, data.steps.slice(), log10Matrix(data.hidden_grad_norm), {
    title: "‖∂L/∂h_t‖: training step × timestep", xTitle: "timestep t", yTitle: "training step",
    colourTitle: "log10 ‖∂L/∂h_t‖",
  });
  await react("chart-timesteps-heatmap", figure.data, figure.layout);
}

async function drawHorizon() {
  const horizon = await api(`/experiments/${id}/horizon`);
  const traces = horizon.layers.map((layer) => ({
    type: "scatter", mode: "lines", name: `recurrent layer ${layer.layer_index}`, x: layer.steps, y: layer.horizon,
  }));
  const maxHorizon = Math.max(...horizon.layers.map((l) => l.max_horizon));
  const figureLayout = layout(`Memory horizon: timesteps back with ‖∂L/∂h_t‖ ≥ ${horizon.threshold}·‖∂L/∂h_T‖ (max ${maxHorizon})`,
    "training step", "horizon (timesteps)");
  figureLayout.yaxis.range = [0, maxHorizon + 1];
  await react("chart-horizon", traces, figureLayout);
}

// New rows through time from the stream: appended, then both charts redrawn at most once
// a second (a heatmap redraw costs more than extending a line); the memory horizon,
// computed by the server, is read again at most every 10 s.
let timestepDraw = null;
let timestepDrawn = 0;
let horizonAt = 0;
function appendTimesteps(payload) {
  const rows = payload.layers.find((layer) => layer.layer_index === (throughTime?.layer ?? 0));
  if (!rows) return;
  if (!throughTime?.steps.length) throughTime = { layer: rows.layer_index, steps: [], timesteps: rows.timesteps, hidden_grad_norm: [] };
  const last = throughTime.steps.at(-1) ?? -1;
  rows.steps.forEach((step, i) => {
    if (step > last) { throughTime.steps.push(step); throughTime.hidden_grad_norm.push(rows.hidden_grad_norm[i]); }
  });
  arrivals.push({ kind: "timesteps", step: payload.through, at: Date.now() });
  if (timestepDraw !== null) return;
  timestepDraw = setTimeout(async () => {
    timestepDrawn = performance.now();
    await drawTimestepCharts();
    timestepDraw = null;
    if (performance.now() >= horizonAt) { horizonAt = performance.now() + 10_000; drawHorizon().catch(() => {}); }
  }, Math.max(0, timestepDrawn + 1000 - performance.now()));
}

function specWith(changes) {
  const spec = structuredClone(experiment.spec);
  for (const [path, value] of Object.entries(changes)) {
    const keys = path.split(".");
    let node = spec;
    for (const key of keys.slice(0, -1)) node = node[key] ??= {};
    node[keys.at(-1)] = value;
  }
  return spec;
}

function openNew(spec, origin) {
  sessionStorage.setItem("gradwatch.newSpec", JSON.stringify({ spec, origin }));
  location.assign(`/new?from=${id}`);
}

async function drawSummary() {
  let summary;
  try { summary = await api(`/experiments/${id}/summary`); } catch { return; }
  const verdict = document.getElementById("verdict");
  verdict.className = `badge verdict-${summary.verdict}`;
  verdict.textContent = summary.verdict;
  const box = document.getElementById("summary");
  box.className = "summary";
  box.replaceChildren(
    el("p", {}, "Verdict: ", badge("verdict", summary.verdict)),
    el("h3", {}, "Evidence"),
    summary.findings.length
      ? el("ul", {}, summary.findings.map((f) => el("li", {}, el("strong", {}, f.kind), ": ", f.message)))
      : el("p", { class: "muted" }, "No finding crossed a threshold."),
    el("h3", {}, "Thresholds"),
    el("ul", {}, Object.entries(summary.thresholds).map(([k, v]) => el("li", {}, `${k} = ${num(v)}`))),
    el("h3", {}, "Remedies"),
    summary.remedies.length
      ? el("div", {}, summary.remedies.map((remedy, i) => el("div", { class: "remedy" },
        el("strong", {}, remedy.problem), ": ", remedy.action, " ", el("span", { class: "muted" }, `(${remedy.reference})`),
        el("button", {
          class: "try-remedy", "data-remedy": i,
          onclick: () => openNew(specWith(remedy.spec_changes), `remedy of ${experiment.name}: ${remedy.action}`),
        }, "Try this remedy"),
        el("div", { class: "muted" }, Object.entries(remedy.spec_changes).map(([k, v]) => `${k} → ${JSON.stringify(v)}`).join(", ")),
      )))
      : el("p", { class: "muted" }, "None needed."),
  );
}

async function loadMetrics(request = api(`/experiments/${id}/metrics`)) {
  metricLayers = (await request).metrics;
  const perLayer = Object.keys(metricLayers).filter((m) => metricLayers[m][0] !== null);
  const select = document.getElementById("metric");
  const current = select.value;
  select.replaceChildren(...perLayer.map((m) => el("option", { value: m }, m)));
  metric = metric && perLayer.includes(metric) ? metric : perLayer.includes("grad_mean_abs") ? "grad_mean_abs" : perLayer[0];
  if (current && perLayer.includes(current)) metric = current;
  select.value = metric ?? "";
}

// The loss first (the chart a researcher looks at first), then the rest; each chart's data
// is asked for before the chart ahead of it is drawn, so fetching overlaps drawing.
async function drawAll(metricsRequest) {
  await loadMetrics(metricsRequest);
  seriesOf("loss").then(() => { if (metric) seriesOf(metric); if (metricLayers.accuracy) seriesOf("accuracy"); }).catch(() => null);
  // A regression (the adding problem) has no accuracy: the loss takes the whole row.
  document.getElementById("chart-accuracy").hidden = !metricLayers.accuracy;
  document.querySelector(".charts.two").classList.toggle("one", !metricLayers.accuracy);
  await drawGlobal("loss", "chart-loss", "Training loss");
  mark("loss-drawn");
  const summary = FINISHED.has(experiment.status) || experiment.status === "running" ? drawSummary() : null;
  if (metric) { await drawLayers(); mark("layers-drawn"); }
  prefetchMetrics();
  if (metricLayers.accuracy) await drawGlobal("accuracy", "chart-accuracy", "Training accuracy");
  if (metric) await drawProfile();
  await drawThroughTime();
  await summary;
}

// A finished run's series do not change: once its per-layer chart is drawn, the other
// metrics of the picker are fetched one after the other, so switching to one only redraws.
async function prefetchMetrics() {
  if (!FINISHED.has(experiment.status)) return;
  for (const name of Object.keys(metricLayers)) {
    if (metricLayers[name][0] !== null) await seriesOf(name).catch(() => null);
  }
}

// A long live run would grow its traces without end: past twice the thinned size, the
// charts are read again from the API (thinned, extremes kept), at most every 5 s.
let rethinAt = 0;
function rethinIfLong() {
  const longest = Math.max(0, ...["chart-loss", "chart-layers"].map((c) => document.getElementById(c).data?.[0]?.x.length ?? 0));
  if (longest <= 2 * MAX_POINTS || performance.now() < rethinAt) return;
  rethinAt = performance.now() + 5000;
  drawGlobal("loss", "chart-loss", "Training loss");
  if (metricLayers.accuracy) drawGlobal("accuracy", "chart-accuracy", "Training accuracy");
  drawLayers();
}

// New points from the stream: appended to the traces on screen, in place.
function appendPoints(payload) {
  seriesCache.clear();
  const byMetric = {};
  for (const s of payload.series) (byMetric[s.metric] ??= []).push(s);
  for (const [name, elementId] of [["loss", "chart-loss"], ["accuracy", "chart-accuracy"]]) {
    const s = byMetric[name]?.[0];
    const chart = document.getElementById(elementId);
    if (!s || !chart.data) continue;
    if (!chart.data.length) Plotly.addTraces(chart, { type: "scatter", mode: "lines", name, x: [], y: [] });
    Plotly.extendTraces(chart, { x: [s.steps], y: [s.values] }, [0]);
  }
  const chart = document.getElementById("chart-layers");
  const layers = byMetric[shownMetric] && shownLayers(byMetric[shownMetric]);
  if (layers && chart.data) {
    if (chart.data.length !== layers.length) {
      drawLayers();
    } else {
      const log = isMagnitude(shownMetric);
      Plotly.extendTraces(chart, { x: layers.map((s) => s.steps), y: layers.map((s) => forLog(s.values, log)) }, layers.map((_, i) => i));
    }
  }
  lastStep = Math.max(lastStep, payload.through);
  chart.dataset.lastStep = String(lastStep);
  arrivals.push({ kind: "points", step: payload.through, at: Date.now() });
  rethinIfLong();
}

function listen() {
  const timesteps = isRecurrent() ? "&timesteps=true" : "";
  stream = new EventSource(`/api/v1/experiments/${id}/events?after_step=${lastStep}${timesteps}`);
  stream.addEventListener("experiment", (event) => {
    const previous = experiment.status;
    experiment = JSON.parse(event.data);
    renderHeader();
    arrivals.push({ kind: "progress", step: experiment.progress.step, at: Date.now() });
    setText("live", FINISHED.has(experiment.status) ? "" : "live");
    if (FINISHED.has(experiment.status)) {
      stream.close();
      seriesCache.clear();
      drawAll();
    } else if (previous === "queued" && experiment.status === "running") {
      loadMetrics();
    }
  });
  stream.addEventListener("points", (event) => appendPoints(JSON.parse(event.data)));
  stream.addEventListener("timesteps", (event) => appendTimesteps(JSON.parse(event.data)));
  stream.addEventListener("deleted", () => { stream.close(); flash("This experiment was deleted."); });
  stream.onerror = () => setText("live", "reconnecting…");
}

document.getElementById("metric").addEventListener("change", async (event) => {
  metric = event.target.value;
  const url = new URL(location.href);
  url.searchParams.set("metric", metric);
  history.replaceState(null, "", url);
  const started = performance.now();
  await drawLayers();
  await drawProfile();
  document.getElementById("chart-layers").dataset.redrawMs = String(Math.round(performance.now() - started));
});
document.getElementById("biases").addEventListener("change", () => drawLayers().then(drawProfile));
document.getElementById("cancel").addEventListener("click", async () => {
  try { experiment = await api(`/experiments/${id}/cancel`, { method: "POST" }); renderHeader(); } catch (e) { flash(e.message); }
});
document.getElementById("delete").addEventListener("click", async () => {
  if (!confirm(`Delete ${experiment.name} and everything it measured?`)) return;
  try { await api(`/experiments/${id}`, { method: "DELETE" }); location.assign("/"); } catch (e) { flash(e.message); }
});
document.getElementById("run-again").addEventListener("click", () => openNew(experiment.spec, `a copy of ${experiment.name}`));

async function main() {
  const who = showWho();
  try {
    experiment = await early.experiment;
  } catch (error) { flash(error.message); return; }
  renderHeader();
  await drawAll(early.metrics);
  await who;
  document.body.dataset.ready = "true";
  if (!FINISHED.has(experiment.status)) listen();
}
main().catch((error) => flash(error.message));
