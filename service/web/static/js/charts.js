// Plotly figures as the dashboard draws them: axis titles always, log axes marked in the
// title, layers coloured by depth (input dark → output light) and listed input → output.

// Plotly's bundle is loaded `async` (templates/_plotly.html): it starts running as soon as
// it is downloaded, while the page's first API requests (preloaded by the page itself)
// are on their way. Its `load` event fires after it ran, so either Plotly is there
// already or the event is still to come.
export const plotlyReady = new Promise((resolve, reject) => {
  if (window.Plotly) { resolve(window.Plotly); return; }
  const tag = document.getElementById("plotly");
  tag.addEventListener("load", () => resolve(window.Plotly));
  tag.addEventListener("error", () => reject(new Error("Plotly's bundle did not load: reload the page")));
});

// Plotly.react once the bundle is there: it redraws in place what changed (same div,
// same layout revision), which a metric switch relies on.
export async function react(elementId, traces, figureLayout) {
  const plotly = await plotlyReady;
  return plotly.react(elementId, traces, figureLayout, CONFIG);
}

// Metrics that are magnitudes (norms, absolute means, ratios of them): drawn on log y.
const MAGNITUDES = /(norm|mean_abs|max_abs|std|update_ratio|backprop)/;
export const isMagnitude = (metric) => MAGNITUDES.test(metric);

// Plotly's own Viridis stops; a layer's colour is its depth's place on them.
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
export function depthColour(index, count) {
  const at = count <= 1 ? 0 : (index / (count - 1)) * (VIRIDIS.length - 1);
  return VIRIDIS[Math.min(VIRIDIS.length - 1, Math.round(at))];
}

export const CONFIG = { responsive: true, displaylogo: false };

export function layout(title, xTitle, yTitle, { logY = false, logX = false } = {}) {
  return {
    title: { text: title, font: { size: 14 } },
    margin: { l: 70, r: 20, t: 40, b: 50 },
    xaxis: { title: { text: xTitle + (logX ? " (log scale)" : "") }, type: logX ? "log" : "linear", zeroline: false },
    yaxis: {
      title: { text: yTitle + (logY ? " (log scale)" : "") }, type: logY ? "log" : "linear",
      exponentformat: "power", zeroline: false,
    },
    legend: { traceorder: "normal", font: { size: 11 } },
    hovermode: "closest",
    uirevision: "keep", // redraws keep the user's zoom
  };
}

// Zero and negative values cannot sit on a log axis: leave them out rather than break it.
export const forLog = (values, log) => (log ? values.map((v) => (v !== null && v > 0 ? v : null)) : values);

export const DEPTH_LEGEND = { title: { text: "layer (input → output)" }, traceorder: "normal", font: { size: 11 } };

export function layerTraces(series, metric) {
  const log = isMagnitude(metric);
  return series.map((s, i) => ({
    type: "scatter", mode: "lines", name: s.layer ?? metric, x: s.steps, y: forLog(s.values, log),
    line: { color: depthColour(i, series.length), width: 1.6 },
    hovertemplate: `${s.layer ?? metric}<br>step %{x}<br>%{y:.3e}<extra></extra>`,
  }));
}

// log10 of a matrix (null where not positive): a heatmap of magnitudes spanning decades.
export const log10Matrix = (rows) => rows.map((row) => row.map((v) => (v !== null && v > 0 ? Math.log10(v) : null)));

export function heatmap(x, y, z, { xTitle, yTitle, colourTitle, title, yLabels }) {
  return {
    data: [{
      type: "heatmap", x, y, z, colorscale: "Viridis",
      colorbar: { title: { text: colourTitle, side: "right" } },
      hovertemplate: `${xTitle} %{x}<br>${yTitle} %{y}<br>${colourTitle} %{z:.2f}<extra></extra>`,
    }],
    layout: {
      ...layout(title, xTitle, yTitle),
      yaxis: { title: { text: yTitle }, ...(yLabels ? { tickvals: y, ticktext: yLabels, automargin: true } : {}) },
    },
  };
}
