// The compare page: any experiments overlaid on one metric and layer (GET /api/v1/compare),
// labelled by the spec fields that differ, with their summaries side by side.
import { api, badge, el, flash, num, showWho } from "./api.js";
import { forLog, isMagnitude, layout, react } from "./charts.js";

const form = document.getElementById("compare-form");
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

async function draw() {
  const query = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
  if (!query.ids) { flash("Pick experiments on the Experiments page, or list their ids here."); return; }
  let data;
  try {
    data = await api("/compare", { params: { ...query, max_points: 2000 } });
  } catch (error) { flash(error.message); return; }
  flash("");
  const log = isMagnitude(data.metric);
  const layers = [...new Set(data.members.map((m) => m.layer ?? "—"))].join(", ");
  document.getElementById("drawn").textContent =
    `${data.metric} ${layers === "—" ? "(a global metric)" : `at layer ${layers}`}; differing: ${data.varying.join(", ") || "nothing but the name"}`;
  const traces = data.members.map((member, i) => ({
    type: "scatter", mode: "lines", name: member.label, x: data.steps, y: forLog(member.values, log),
    line: { color: PALETTE[i % PALETTE.length], width: 1.8 }, connectgaps: true,
  }));
  await react("chart-compare", traces,
    layout(`${data.metric}${data.layer ? ` at ${data.layer}` : ""}: ${data.members.length} experiments`, "training step", data.metric, { logY: log }));
  const table = document.getElementById("compare-summaries");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, ""), data.members.map((m) => el("th", {}, el("a", { href: `/experiments/${m.experiment_id}` }, m.label)))));
  const rows = [
    ["name", (m) => m.name],
    ["status", (m) => badge("status", m.status)],
    ["verdict", (m) => badge("verdict", m.summary.verdict)],
    ["headline", (m) => m.summary.headline],
    ["final loss", (m) => num(m.summary.result?.final_loss)],
    ["test loss", (m) => num(m.summary.result?.test_loss)],
    ["test accuracy", (m) => num(m.summary.result?.test_accuracy)],
    ["layer drawn", (m) => m.layer ?? "—"],
    ...data.varying.map((path) => [path, (m) => JSON.stringify(m.params[path])]),
  ];
  table.tBodies[0].replaceChildren(...rows.map(([label, value]) => el("tr", {}, el("th", {}, label), data.members.map((m) => el("td", {}, value(m))))));
  document.body.dataset.ready = "true";
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const url = new URL(location.href);
  url.search = new URLSearchParams([...new FormData(form)].filter(([, v]) => v !== "")).toString();
  history.replaceState(null, "", url);
  draw();
});
for (const [key, value] of new URLSearchParams(location.search)) {
  if (form.elements[key]) form.elements[key].value = value;
}
showWho().then(draw).catch((error) => flash(error.message));
