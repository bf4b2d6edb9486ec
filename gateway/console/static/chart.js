// A stacked bar chart in SVG: one bar per day, one segment per series. Hand-written, no library.
const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0e7490", "#57606a"];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

// days: ["2026-12-01", ...]; series: [{name, values: {day: number}}]
export function stackedBars(days, series, { title, width = 760, height = 260, format } = {}) {
  const pad = { left: 64, right: 12, top: 12, bottom: 36 };
  const totals = days.map((d) => series.reduce((sum, s) => sum + (s.values[d] || 0), 0));
  const max = Math.max(...totals, 0) || 1;
  // Enough decimals that the axis tells its lines apart, whatever the scale.
  const decimals = max < 0.05 ? 4 : max < 1 ? 3 : 2;
  format = format || ((v) => `$${v.toFixed(decimals)}`);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(days.length, 1);
  const barW = Math.max(2, step * 0.7);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" });
  root.append(svg("title", {}, title));
  for (let i = 0; i <= 4; i += 1) {
    const value = (max * i) / 4;
    const y = pad.top + plotH - (plotH * i) / 4;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, format(value)));
  }
  days.forEach((day, i) => {
    const x = pad.left + i * step + (step - barW) / 2;
    let y = pad.top + plotH;
    series.forEach((s, k) => {
      const value = s.values[day] || 0;
      if (value <= 0) return;
      const h = (plotH * value) / max;
      y -= h;
      const rect = svg("rect", { x, y, width: barW, height: Math.max(h, 0.5), fill: PALETTE[k % PALETTE.length] });
      rect.append(svg("title", {}, `${day} · ${s.name}: ${format(value)}`));
      root.append(rect);
    });
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) {
      root.append(svg("text", { x: x + barW / 2, y: height - pad.bottom + 16, "text-anchor": "middle", class: "axis" },
        day.slice(5)));
    }
  });
  return root;
}

export function legend(series) {
  const list = document.createElement("ul");
  list.className = "legend";
  series.forEach((s, k) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[k % PALETTE.length];
    item.append(swatch, document.createTextNode(s.name));
    list.append(item);
  });
  return list;
}
