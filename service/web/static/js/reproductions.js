// The reproductions page: the catalogue (each study's claims, sources and expected numbers)
// and a button that starts one as a sweep owned by the caller, then opens its run page.
import { api, el, flash, num, showWho } from "./api.js";

function expected(check) {
  return el("tr", {},
    el("td", {}, check.label),
    el("td", {}, el("code", {}, check.expected)),
    el("td", { class: "num" }, num(check.measured_here)),
  );
}

function claim(item) {
  return el("div", { class: "claim" },
    el("p", { class: "sentence" }, item.sentence),
    el("p", { class: "muted" }, el("strong", {}, "Source: "), item.source),
    el("p", { class: "muted" }, el("strong", {}, "The source reports: "), item.paper_value),
    el("table", { class: "grid checks" },
      el("thead", {}, el("tr", {}, el("th", {}, "Check"), el("th", {}, "Expected"), el("th", {}, "Measured here"))),
      el("tbody", {}, item.checks.map(expected)),
    ),
  );
}

async function start(study, button) {
  flash("");
  button.disabled = true;
  try {
    const run = await api(`/reproductions/${study.name}/runs`, { method: "POST", body: {} });
    location.assign(`/reproduction-runs/${run.id}`);
  } catch (error) {
    button.disabled = false;
    flash(`${study.name}: ${error.body?.detail ?? error.message}`);
  }
}

function study(item) {
  const button = el("button", { class: "primary start", "data-study": item.name }, "Run it");
  button.addEventListener("click", () => start(item, button));
  return el("section", { class: "study", id: `study-${item.name}` },
    el("div", { class: "title-row" },
      el("h2", {}, item.title),
      el("code", { class: "muted" }, item.name),
      item.in_ci ? el("span", { class: "badge in-ci", title: "run end to end by the test suite" }, "in CI") : null,
      el("span", { class: "actions" }, el("span", { class: "muted" }, `≈ ${num(item.minutes_here)} min here`), button),
    ),
    el("p", { class: "muted" }, item.reference),
    item.claims.map(claim),
  );
}

async function main() {
  await showWho();
  const { studies } = await api("/reproductions");
  document.getElementById("studies").replaceChildren(...studies.map(study));
  document.body.dataset.ready = "true";
}
main().catch((error) => flash(error.message));
