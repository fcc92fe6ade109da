// Small DOM helpers. Data from the server is only ever set with textContent or attributes.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

export function pageState() {
  const node = document.getElementById("page-state");
  return node ? JSON.parse(node.textContent) : {};
}

export function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (input) return input.value;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}

export function span(seconds) {
  const s = Math.abs(Math.trunc(seconds));
  if (s >= 86400) return `${Math.floor(s / 86400)} d`;
  if (s >= 3600) return `${Math.floor(s / 3600)} h`;
  if (s >= 60) return `${Math.floor(s / 60)} min`;
  return `${s} s`;
}

export function ageText(iso) {
  if (!iso) return "";
  return `${span((Date.now() - Date.parse(iso)) / 1000)} ago`;
}

export function leftText(iso, status) {
  if (!iso || status !== "pending") return "";
  const left = (Date.parse(iso) - Date.now()) / 1000;
  return left <= 0 ? "overdue" : `${span(left)} left`;
}

// Input types that take typed characters; checkboxes, radios, buttons and the like do not.
const TEXT_INPUTS = new Set([
  "text", "search", "email", "url", "tel", "password", "number",
  "date", "datetime-local", "month", "week", "time",
]);

// True when a key press belongs to what has focus (typing, or a shortcut with a modifier).
export function typing(event) {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return true;
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  if (target instanceof HTMLInputElement) return TEXT_INPUTS.has(target.type);
  return target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
}

// True when focus is on an interactive control (its own keys, Enter above all, are its business).
export function onControl(target) {
  return target instanceof Element && target.closest("a[href], button, input, select, textarea, summary, [contenteditable]") !== null;
}

// The page title and the navigation carry the pending count.
export function showPendingCount(count) {
  const base = document.title.replace(/^\(\d+\)\s*/, "");
  document.title = count > 0 ? `(${count}) ${base}` : base;
  for (const id of ["pending-count", "nav-pending-count"]) {
    const node = document.getElementById(id);
    if (node) node.textContent = String(count);
  }
}

let noticeTimer = 0;
export function notice(text, kind = "info") {
  const box = document.getElementById("notices");
  if (!box) return;
  const item = el("p", { className: `notice ${kind}`, text });
  box.prepend(item);
  while (box.children.length > 5) box.lastElementChild.remove();
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    for (const old of Array.from(box.children).slice(1)) old.remove();
  }, 15000);
}

export function setupKeysHelp() {
  const toggle = document.querySelector("[data-keys-toggle]");
  const help = document.getElementById("keys-help");
  if (!toggle || !help) return () => {};
  const flip = () => {
    help.hidden = !help.hidden;
    toggle.setAttribute("aria-expanded", String(!help.hidden));
  };
  toggle.addEventListener("click", flip);
  return flip;
}
