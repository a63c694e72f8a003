/* smokeseg line charts: a small SVG line chart written for these pages (no library, no build step).
 * lineChart(element, series, options) draws series = [{name, color, x: [...], y: [...]}] into element,
 * replacing what was there; x is "training samples seen". Licence: the project's (Apache-2.0). */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#6a3d9a", "#8c564b", "#e377c2", "#17becf"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    if (!isFinite(lo) || !isFinite(hi)) return [];
    if (hi === lo) { hi = lo + (Math.abs(lo) || 1); }
    const raw = (hi - lo) / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    /* From the tick at or below lo to the one at or above hi, so the axis ends on labelled lines. */
    const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
    const ticks = [];
    for (let i = first; i <= last; i++) ticks.push(+(i * step).toPrecision(12));
    return ticks;
  }

  function fmt(value) {
    const a = Math.abs(value);
    if (a === 0) return "0";
    if (a >= 1e4) return Math.round(value).toLocaleString("en");
    if (a < 1e-2) return value.toExponential(1);
    return +value.toPrecision(3) + "";
  }

  /* A centred moving average, as the HTML report smooths batch loss once there are many points. */
  function smooth(values) {
    const window = Math.min(101, Math.floor(values.length / 10));
    if (window < 3) return null;
    const half = Math.floor(window / 2);
    return values.map((_, i) => {
      const part = values.slice(Math.max(0, i - half), i + half + 1).filter(Number.isFinite);
      return part.reduce((s, v) => s + v, 0) / part.length;
    });
  }

  function lineChart(element, series, options) {
    options = options || {};
    /* Drawn at the element's own width, so labels keep their size on a phone (redraw on resize). */
    const width = Math.max(280, Math.min(900, Math.round(element.clientWidth) || 480));
    const height = Math.round(Math.max(200, Math.min(300, width * 0.55))), m = { l: 56, r: 12, t: 12, b: 40 };
    const drawn = series.filter((s) => s.x && s.x.length);
    element.textContent = "";
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "line-chart",
      "aria-label": options.label || "chart" }, element);
    if (!drawn.length) {
      const t = el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, svg);
      t.textContent = options.empty || "no points yet";
      return svg;
    }
    const xs = drawn.flatMap((s) => s.x), ys = drawn.flatMap((s) => s.y).filter(Number.isFinite);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    /* A run that diverged (loss 40 beside 1) would flatten the others: such a y axis goes logarithmic. */
    const log = options.logIfWide && y0 > 0 && y1 / y0 > 20;
    const ty = log ? Math.log10 : (y) => y;
    if (options.zero && !log) y0 = Math.min(0, y0);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const pad = Math.abs(y0) * 0.1 || 0.1; y0 -= pad; y1 += pad; }
    let yTicks;
    if (log) {
      yTicks = [];
      for (let k = Math.floor(Math.log10(y0)); k <= Math.ceil(Math.log10(y1)); k++) yTicks.push(Math.pow(10, k));
    } else yTicks = niceTicks(y0, y1, 4);
    const xTicks = niceTicks(x0, x1, 4);
    y0 = ty(yTicks[0]); y1 = ty(yTicks[yTicks.length - 1]);
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
    const sy = (y) => height - m.b - ((ty(y) - y0) / (y1 - y0)) * (height - m.t - m.b);
    const grid = el("g", { class: "grid" }, svg);
    for (const t of yTicks) {
      el("line", { x1: m.l, x2: width - m.r, y1: sy(t), y2: sy(t) }, grid);
      el("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, grid).textContent = fmt(t);
    }
    for (const t of xTicks) {
      if (t < x0 || t > x1) continue;
      el("line", { x1: sx(t), x2: sx(t), y1: m.t, y2: height - m.b, class: "x" }, grid);
      el("text", { x: sx(t), y: height - m.b + 16, "text-anchor": "middle" }, grid).textContent = fmt(t);
    }
    el("text", { x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, svg)
      .textContent = (options.xlabel || "training samples seen") + (log ? " · y: log scale" : "");
    drawn.forEach((s, index) => {
      const color = s.color || PALETTE[index % PALETTE.length];
      const points = s.x.map((x, i) => [x, s.y[i]]).filter((p) => Number.isFinite(p[1]));
      const average = options.smooth ? smooth(points.map((p) => p[1])) : null;
      const path = (pts) => pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      el("path", { d: path(points), fill: "none", stroke: color, "stroke-width": average ? 1 : 2,
        "stroke-opacity": average ? 0.35 : 1, class: "series", "data-series": s.name }, svg);
      if (average) {
        el("path", { d: path(points.map((p, i) => [p[0], average[i]])), fill: "none", stroke: color,
          "stroke-width": 2.2 }, svg);
      } else if (points.length <= 60) {
        for (const p of points) {
          const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: color }, svg);
          el("title", {}, dot).textContent = `${s.name}: ${fmt(p[1])} at ${fmt(p[0])} samples`;
        }
      }
    });
    if (drawn.length > 1 || options.legend) {
      const legend = el("g", { class: "legend" }, svg);
      let y = m.t + 4;
      drawn.forEach((s, index) => {
        const color = s.color || PALETTE[index % PALETTE.length];
        el("rect", { x: width - m.r - 130, y: y, width: 10, height: 10, fill: color }, legend);
        el("text", { x: width - m.r - 116, y: y + 9 }, legend).textContent = String(s.name).slice(0, 20);
        y += 15;
      });
    }
    svg.dataset.points = String(drawn.reduce((n, s) => n + s.x.length, 0));
    return svg;
  }

  window.smokesegCharts = { lineChart: lineChart, PALETTE: PALETTE };
})();
