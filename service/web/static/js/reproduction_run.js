// A reproduction run: per claim, each check's expected and measured value, whether it
// passed, the member experiment it read and the plots that show it; polled until every
// member has finished and the claims are decided.
import { api, el, flash, num, showWho } from "./api.js";

const root = document.getElementById("run");
const id = root.dataset.id;
const POLL_MS = 2000;

// true / false / null (not decided yet) as a badge a reader sees at a glance.
function verdict(value, yes = "reproduced", no = "not reproduced") {
  if (value === true) return el("span", { class: "badge reproduced-true" }, yes);
  if (value === false) return el("span", { class: "badge reproduced-false" }, no);
  return el("span", { class: "badge reproduced-pending" }, "pending");
}

function setBadge(node, value) {
  const fresh = verdict(value);
  node.className = fresh.className;
  node.textContent = fresh.textContent;
}

function member(check) {
  const grid = Object.entries(check.member).map(([path, value]) => `${path} = ${value}`).join(", ");
  if (!check.experiment_id) return el("span", { class: "muted" }, `${grid || "—"} (no such member)`);
  return el("a", { href: `/experiments/${check.experiment_id}` }, grid || check.experiment_id.slice(0, 8));
}

function outcome(check) {
  const plots = Object.entries(check.plots).map(([name, url]) => el("a", { href: url, target: "_blank", rel: "noopener" }, name));
  return el("tr", { class: "check" },
    el("td", {}, check.label),
    el("td", {}, member(check)),
    el("td", {}, el("code", {}, check.expected)),
    el("td", { class: "num" }, num(check.measured_here)),
    el("td", { class: "num measured" }, num(check.measured)),
    el("td", {}, verdict(check.passed, "passed", "failed")),
    el("td", { class: "plots" }, plots.flatMap((link, i) => (i ? [" · ", link] : [link]))),
  );
}

function claim(item) {
  return el("section", { class: "claim" },
    el("div", { class: "title-row" }, el("p", { class: "sentence" }, item.sentence), verdict(item.reproduced)),
    el("p", { class: "muted" }, el("strong", {}, "Source: "), item.source, " — ", item.paper_value),
    el("table", { class: "grid checks" },
      el("thead", {}, el("tr", {}, ["Check", "Member", "Expected", "Measured here", "Measured in this run", "Check passed", "Plots"].map((h) => el("th", {}, h)))),
      el("tbody", {}, item.checks.map(outcome)),
    ),
  );
}

async function draw() {
  const run = await api(`/reproduction-runs/${id}`);
  const status = document.getElementById("status");
  status.className = `badge run-${run.status}`;
  status.textContent = run.status;
  setBadge(document.getElementById("reproduced"), run.reproduced);
  document.getElementById("claims").replaceChildren(...run.claims.map(claim));
  // Every state the page has shown, in order (the browser test reads it).
  document.body.dataset.seen = [document.body.dataset.seen, run.status].filter(Boolean).join(" ");
  return run;
}

async function main() {
  await showWho();
  const [run, studies] = await Promise.all([api(`/reproduction-runs/${id}`), api("/reproductions")]);
  const study = studies.studies.find((s) => s.name === run.study);
  document.getElementById("title").textContent = `Reproduction: ${study ? study.title : run.study}${run.variant ? " (variant)" : ""}`;
  document.getElementById("reference").textContent = [
    study?.reference, `started ${new Date(run.created_at).toLocaleString()} by ${run.owner}`,
    run.variant ? `overrides ${JSON.stringify(run.overrides)}` : null,
  ].filter(Boolean).join(" · ");
  document.getElementById("links").replaceChildren(
    el("a", { href: `/sweeps/${run.sweep_id}` }, "the sweep and its members"), " · ",
    el("a", { href: run.links.compare, target: "_blank", rel: "noopener" }, "members' gradient norms (PNG)"), " · ",
    el("a", { href: run.links.self, target: "_blank", rel: "noopener" }, "this report as JSON"),
  );
  let now = await draw();
  document.body.dataset.ready = "true";
  while (now.status !== "finished") {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    now = await draw();
  }
  document.body.dataset.finished = "true";
}
main().catch((error) => flash(error.message));
