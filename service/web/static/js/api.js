// The dashboard's one way to reach the server: the JSON API, same origin, the session
// cookie sent by the browser, and the CSRF value on every request that changes anything.

let sessionPromise = null;

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function session() {
  sessionPromise ??= fetch("/api/v1/session", { credentials: "same-origin" }).then(async (response) => {
    if (response.status === 401) {
      window.location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
      throw new ApiError(401, await response.json());
    }
    return response.json();
  });
  return sessionPromise;
}

export async function api(path, { method = "GET", body, params } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    const { csrf_token: csrf } = await session();
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(key, item);
    }
  }
  const response = await fetch(url, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const payload = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (response.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

export function flash(message) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.hidden = !message;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function badge(kind, value) {
  return el("span", { class: `badge ${kind}-${value}` }, value);
}

// Numbers as a researcher reads them: 3 significant digits, exponent form when tiny or huge.
export function num(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude < 1e-3 || magnitude >= 1e5 ? value.toExponential(2) : Number(value.toPrecision(3)).toString();
}

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// Steps per second and time left, from when the run started and how far it is.
export function pace(experiment, now = Date.now()) {
  const { step, total } = experiment.progress;
  if (experiment.status !== "running" || !experiment.started_at || step <= 0) return null;
  const elapsed = (now - Date.parse(experiment.started_at)) / 1000;
  if (elapsed <= 0) return null;
  const rate = step / elapsed;
  return { rate, left: (total - step) / rate };
}

export function paceText(experiment) {
  const p = pace(experiment);
  if (p) return `${num(p.rate)} steps/s · ${duration(p.left)} left`;
  if (experiment.started_at && experiment.finished_at) {
    const seconds = (Date.parse(experiment.finished_at) - Date.parse(experiment.started_at)) / 1000;
    return `ran ${duration(seconds)}`;
  }
  return "";
}

export async function showWho() {
  const who = document.getElementById("who");
  const me = await session();
  who.textContent = me.auth === "off" ? `${me.owner} (auth off)` : `${me.owner} · ${me.scope}`;
  if (me.auth !== "off") {
    who.append(el("button", {
      id: "logout",
      onclick: async () => { await api("/session", { method: "DELETE" }); location.assign("/login"); },
    }, "Log out"));
  }
  return me;
}

export const FINISHED = new Set(["succeeded", "failed", "diverged", "cancelled", "timed_out"]);
