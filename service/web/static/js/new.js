// The new-experiment page: start from an example (one per model type from the API's own
// OpenAPI examples, one per claim of the essay) or from an existing run (or one of its
// remedies), edit the spec as JSON, and see the server's validation messages at the field.
import { api, el, flash, showWho } from "./api.js";

const editor = document.getElementById("spec");
const gutter = document.getElementById("gutter");
const problems = document.getElementById("problems");
const picker = document.getElementById("example");
const examples = new Map();

function show(spec, origin) {
  editor.value = JSON.stringify(spec, null, 2);
  document.getElementById("origin").textContent = origin ? `Starting from ${origin}.` : "";
  mark([]);
}

// Line of each JSON path in the editor's text, as JSON.stringify(…, null, 2) lays it out.
function lineIndex(value) {
  const lines = new Map();
  let line = 0;
  function walk(node, path) {
    lines.set(path.join("."), line);
    if (node !== null && typeof node === "object") {
      const entries = Array.isArray(node) ? node.map((v, i) => [i, v]) : Object.entries(node);
      if (!entries.length) { line += 1; return; }
      line += 1; // the opening bracket's line holds the key
      for (const [key, child] of entries) walk(child, [...path, key]);
      line += 1; // the closing bracket
    } else {
      line += 1;
    }
  }
  walk(value, []);
  lines.delete("");
  return lines;
}

function mark(found) {
  const lineCount = editor.value.split("\n").length;
  const marks = Array(lineCount).fill("");
  let index = new Map();
  try { index = lineIndex(JSON.parse(editor.value)); } catch { /* not JSON: the problem list says so */ }
  problems.replaceChildren(...found.map(({ path, message }) => {
    // The field, or the nearest enclosing one the spec has.
    const parts = path.split(".");
    while (parts.length && !index.has(parts.join("."))) parts.pop();
    const line = parts.length ? index.get(parts.join(".")) : 0;
    marks[line] = "⚠";
    return el("li", { class: "problem", "data-field": path, "data-line": line + 1 },
      el("code", {}, path || "(spec)"), " (line ", String(line + 1), "): ", message);
  }));
  gutter.textContent = marks.map((m, i) => m || String(i + 1)).join("\n");
}

async function loadExamples() {
  const schema = await fetch("/openapi.json").then((r) => r.json());
  const byType = schema.paths["/api/v1/experiments"].post.requestBody.content["application/json"].examples || {};
  const group = el("optgroup", { label: "one per model type" });
  for (const [key, example] of Object.entries(byType)) {
    examples.set(`type:${key}`, { spec: example.value, origin: example.summary });
    group.append(el("option", { value: `type:${key}` }, example.summary));
  }
  const claims = await fetch("/static/examples/claims.json").then((r) => r.json());
  const essay = el("optgroup", { label: "the essay's claims" });
  claims.forEach((claim, i) => {
    examples.set(`claim:${i}`, { spec: claim.spec, origin: claim.title });
    essay.append(el("option", { value: `claim:${i}` }, claim.title));
  });
  picker.append(group, essay);
}

async function start() {
  await showWho();
  await loadExamples();
  const from = new URLSearchParams(location.search).get("from");
  const handed = sessionStorage.getItem("gradwatch.newSpec");
  if (handed) {
    sessionStorage.removeItem("gradwatch.newSpec");
    const { spec, origin } = JSON.parse(handed);
    show(spec, origin);
  } else if (from) {
    const experiment = await api(`/experiments/${from}`);
    show(experiment.spec, `a copy of ${experiment.name}`);
  } else {
    const [first] = examples.values();
    show(first.spec, first.origin);
  }
  document.body.dataset.ready = "true";
}

picker.addEventListener("change", () => {
  const chosen = examples.get(picker.value);
  if (chosen) show(chosen.spec, chosen.origin);
});
editor.addEventListener("input", () => mark([]));

document.getElementById("submit").addEventListener("click", async () => {
  flash("");
  let spec;
  try { spec = JSON.parse(editor.value); } catch (error) {
    mark([{ path: "", message: `not valid JSON: ${error.message}` }]);
    return;
  }
  try {
    const created = await api("/experiments", { method: "POST", body: spec });
    location.assign(`/experiments/${created.id}`);
  } catch (error) {
    const detail = Array.isArray(error.body?.detail) ? error.body.detail : [];
    if (error.status === 422 && detail.length) {
      // loc is ["body", "model", "hidden_sizes", 0]: the path into the spec after "body".
      mark(detail.map((p) => ({ path: (p.loc || []).slice(1).join("."), message: p.msg })));
    } else {
      flash(error.message);
    }
  }
});

start().catch((error) => flash(error.message));
