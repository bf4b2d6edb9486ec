// A tiny element builder: text goes in as text nodes, never as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function table(caption, columns, rows, { id } = {}) {
  return h("table", { id },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, "Nothing yet."))
      : rows.map((row) => h("tr", {}, columns.map((c) => {
        const value = c.render ? c.render(row) : row[c.key];
        return h("td", { class: c.num ? "num" : null }, value ?? "");
      })))));
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

export const usd = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(2)}`);
export const usd4 = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(4)}`);
export const int = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
export const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);
export const when = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–");
