// The sweep page: its grid, member statuses, and the comparison with the mean and the
// min–max band over seeds of each grid point.
import { api, badge, el, flash, FINISHED, num, showWho } from "./api.js";
import { forLog, isMagnitude, layout, react } from "./charts.js";

const root = document.getElementById("sweep");
const id = root.dataset.id;
const form = document.getElementById("sweep-form");
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function translucent(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},0.18)`;
}

async function drawMembers() {
  const sweep = await api(`/sweeps/${id}`);
  document.getElementById("name").textContent = `Sweep ${sweep.name}`;
  document.getElementById("counts").textContent = Object.entries(sweep.status_counts).map(([s, n]) => `${n} ${s}`).join(" · ");
  document.getElementById("grid").textContent = JSON.stringify(sweep.grid, null, 2);
  document.querySelector("#members tbody").replaceChildren(...sweep.members.map((m) => el("tr", {},
    el("td", {}, el("a", { href: `/experiments/${m.id}` }, m.label || m.name)),
    el("td", {}, badge("status", m.status)),
    el("td", {}, `${m.progress.step}/${m.progress.total}`),
    el("td", { class: "num" }, num(m.result?.final_loss)),
    el("td", { class: "num" }, num(m.result?.final_accuracy)),
  )));
  return sweep;
}

async function drawComparison() {
  const query = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
  let data;
  try { data = await api(`/sweeps/${id}/compare`, { params: { metric: "loss", ...query, max_points: 2000 } }); } catch (error) {
    flash(error.message); return;
  }
  const log = isMagnitude(data.metric);
  const traces = [];
  data.groups.forEach((group, i) => {
    const colour = PALETTE[i % PALETTE.length];
    traces.push(
      { type: "scatter", mode: "lines", x: data.steps, y: forLog(group.maximum, log), line: { width: 0 }, showlegend: false, hoverinfo: "skip", legendgroup: group.label },
      { type: "scatter", mode: "lines", x: data.steps, y: forLog(group.minimum, log), line: { width: 0 }, fill: "tonexty", fillcolor: translucent(colour), name: `${group.label} min–max over seeds ${group.seeds.join(", ")}`, legendgroup: group.label, hoverinfo: "skip" },
      { type: "scatter", mode: "lines", x: data.steps, y: forLog(group.mean, log), line: { color: colour, width: 2 }, name: `${group.label} (mean)`, legendgroup: group.label },
    );
  });
  const layers = [...new Set(data.members.map((m) => m.layer ?? "—"))].join(", ");
  document.getElementById("drawn").textContent = `${data.metric} ${layers === "—" ? "(a global metric)" : `at layer ${layers}`}`;
  await react("chart-sweep", traces, layout(`${data.metric}: mean and min–max band over seeds`, "training step", data.metric, { logY: log }));
}

form.addEventListener("submit", (event) => { event.preventDefault(); drawComparison(); });

async function main() {
  await showWho();
  const sweep = await drawMembers();
  await drawComparison();
  document.body.dataset.ready = "true";
  if (sweep.status !== "finished") {
    const timer = setInterval(async () => {
      const now = await drawMembers();
      if (now.members.every((m) => FINISHED.has(m.status))) { clearInterval(timer); drawComparison(); }
    }, 3000);
  }
}
main().catch((error) => flash(error.message));
