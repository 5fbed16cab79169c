// The experiments page: filters in the URL (a shareable link), live status and progress
// with speed and time left, the verdict as a badge, select several to compare.
import { api, badge, el, flash, FINISHED, paceText, showWho } from "./api.js";

const form = document.getElementById("filters");
const tbody = document.querySelector("#experiments tbody");
const compareButton = document.getElementById("compare-selected");
const selected = new Set();
const verdicts = new Map(); // experiment id → verdict, fetched once a run is finished
let timer = null;

function filters() {
  return Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
}

async function verdictOf(experiment) {
  if (!FINISHED.has(experiment.status) && experiment.status !== "running") return null;
  if (verdicts.has(experiment.id) && FINISHED.has(experiment.status)) return verdicts.get(experiment.id);
  try {
    const summary = await api(`/experiments/${experiment.id}/summary`);
    verdicts.set(experiment.id, summary.verdict);
    return summary.verdict;
  } catch { return null; }
}

function row(experiment, verdict) {
  const { step, total } = experiment.progress;
  const check = el("input", { type: "checkbox", "data-id": experiment.id, "aria-label": `select ${experiment.name}` });
  check.checked = selected.has(experiment.id);
  check.addEventListener("change", () => {
    if (check.checked) selected.add(experiment.id); else selected.delete(experiment.id);
    compareButton.disabled = selected.size < 2;
  });
  const model = experiment.spec.model || {};
  return el("tr", { "data-id": experiment.id },
    el("td", {}, check),
    el("td", {}, el("a", { href: `/experiments/${experiment.id}` }, experiment.name),
      experiment.tags.length ? el("div", { class: "muted" }, experiment.tags.join(", ")) : null),
    el("td", {}, `${model.type ?? ""} ${model.activation ?? model.cell ?? ""}`.trim()),
    el("td", {}, badge("status", experiment.status)),
    el("td", {}, el("progress", { max: total || 1, value: step }), ` ${step}/${total}`),
    el("td", { class: "muted" }, paceText(experiment)),
    el("td", { class: "verdict" }, verdict ? badge("verdict", verdict) : ""),
    el("td", {}, experiment.sweep_id ? el("a", { href: `/sweeps/${experiment.sweep_id}` }, "sweep") : ""),
    el("td", {}, experiment.owner),
    el("td", { class: "muted" }, new Date(experiment.created_at).toLocaleString()),
  );
}

async function refresh() {
  clearTimeout(timer);
  let page;
  try {
    page = await api("/experiments", { params: { ...filters(), limit: 100 } });
  } catch (error) { flash(error.message); return; }
  flash("");
  const verdictList = await Promise.all(page.items.map(verdictOf));
  tbody.replaceChildren(...page.items.map((e, i) => row(e, verdictList[i])));
  document.getElementById("total").textContent = `${page.items.length} of ${page.total} shown`;
  document.body.dataset.ready = "true";
  // Live while anything is queued or running: a look every 2 s.
  if (page.items.some((e) => !FINISHED.has(e.status))) timer = setTimeout(refresh, 2000);
}

async function listSweeps() {
  const list = document.getElementById("sweeps");
  try {
    const sweeps = await api("/sweeps", { params: { limit: 20 } });
    list.replaceChildren(...sweeps.items.map((s) => el("li", {},
      el("a", { href: `/sweeps/${s.id}` }, s.name), ` · ${s.size} members · `, badge("status", s.status))));
    if (!sweeps.items.length) list.replaceChildren(el("li", { class: "muted" }, "No sweeps yet."));
  } catch {
    list.replaceChildren(el("li", { class: "muted" }, "Sweeps are linked from their members' rows."));
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const url = new URL(location.href);
  url.search = new URLSearchParams(filters()).toString();
  history.replaceState(null, "", url);
  refresh();
});
compareButton.addEventListener("click", () => location.assign(`/compare?ids=${[...selected].join(",")}`));

for (const [key, value] of new URLSearchParams(location.search)) {
  if (form.elements[key]) form.elements[key].value = value;
}
showWho().then(() => Promise.all([refresh(), listSweeps()])).catch((error) => flash(error.message));
