// The reviewer inbox: live rows over the websocket, keyboard navigation, quick decisions.
import {
  $,
  $$,
  ageText,
  csrfToken,
  leftText,
  notice,
  onControl,
  pageState,
  setupKeysHelp,
  showPendingCount,
  typing,
} from "./dom.js";
import { connectInbox, connectionIndicator } from "./live.js";

const state = pageState();
const labels = state.labels;
const tbody = $("#inbox-rows");
const template = $("#inbox-row-template");
const pending = new Set(state.pending_ids);
const appliedSeq = new Map();
let current = -1;
let received = 0;
// A full page may not show the whole list: items sorting after its last row are not known here.
let truncated = $$("tr.inbox-row", tbody).length >= state.limit;

const rows = () => $$("tr.inbox-row", tbody);
const rowFor = (id) => tbody.querySelector(`tr.inbox-row[data-id="${Number(id)}"]`);

function matches(approval) {
  const f = state.filters;
  if (f.status && approval.status !== f.status) return false;
  if (f.agent && approval.agent.slug !== f.agent) return false;
  if (f.risk && approval.risk_class !== f.risk) return false;
  if (f.kind && approval.kind !== f.kind) return false;
  return true;
}

function setField(row, name, text) {
  const node = row.querySelector(`[data-field="${name}"]`);
  if (node) node.textContent = text == null ? "" : String(text);
  return node;
}

function fill(row, a) {
  const primary = labels.primary[a.kind] || "";
  row.dataset.id = String(a.id);
  row.dataset.status = a.status;
  row.dataset.kind = a.kind;
  row.dataset.primary = primary;
  row.dataset.created = a.created_at || "";
  row.dataset.deadline = a.deadline || "";
  row.dataset.argumentsHash = a.arguments_hash || "";
  row.classList.toggle("decided", a.status !== "pending");
  const pick = row.querySelector("[data-field=pick]");
  pick.value = String(a.id);
  row.querySelector("[data-field=link]").href = `/inbox/${Number(a.id)}/`;
  setField(row, "tool", a.tool);
  setField(row, "summary", a.summary);
  setField(row, "agent", a.agent.name);
  const run = setField(row, "run", `run #${a.run}`);
  run.href = `/runs/${Number(a.run)}/`;
  setField(row, "kind", labels.kind[a.kind] || a.kind);
  const risk = setField(row, "risk", labels.risk[a.risk_class] || a.risk_class);
  risk.className = `risk risk-${a.risk_class}`;
  setField(row, "policy_reason", a.policy_reason);
  const age = setField(row, "age", ageText(a.created_at));
  age.dataset.time = a.created_at || "";
  const left = setField(row, "left", leftText(a.deadline, a.status));
  left.dataset.time = a.deadline || "";
  const status = setField(row, "status", a.status);
  status.className = `status status-${a.status}`;
  setField(row, "decided_by", a.decided_by ? `by ${a.decided_by}` : "");
  row.querySelector("[data-field=escalated]").hidden = !a.escalated;
  const count = setField(row, "approvals_count", `${a.approvals_count}/${a.required_approvals} approvals`);
  count.hidden = a.required_approvals < 2;
  const quick = setField(row, "quick", labels.verdict[primary] || "");
  quick.hidden = !primary || a.status !== "pending";
}

// The server's order (approvals/selectors.py): newest first is created_at, id descending;
// most urgent first is deadline ascending (none last), then created_at, id ascending.
function sortKey(row) {
  const created = Date.parse(row.dataset.created) || 0;
  const id = Number(row.dataset.id);
  if (state.filters.order !== "urgent") return [-created, -id];
  const deadline = row.dataset.deadline ? Date.parse(row.dataset.deadline) : Infinity;
  return [deadline, created, id];
}

function sortsBefore(a, b) {
  const [x, y] = [sortKey(a), sortKey(b)];
  const i = x.findIndex((value, n) => value !== y[n]);
  return i >= 0 && x[i] < y[i];
}

// Inserts a row at its place; returns false when that place is not on this page.
function insert(row) {
  const next = rows().find((other) => sortsBefore(row, other));
  if (!next && truncated) return false;
  const selected = currentRow();
  tbody.insertBefore(row, next || null);
  const all = rows();
  if (all.length > state.limit) {
    all[all.length - 1].remove();
    truncated = true;
  }
  // The selection stays on its row (a key press must not act on the row above it).
  if (selected && selected.isConnected) current = rows().indexOf(selected);
  else if (selected) select(current);
  return true;
}

function removeRow(row) {
  const index = rows().indexOf(row);
  row.remove();
  if (index >= 0 && index < current) current -= 1;
  if (current >= 0) select(current);
}

function refreshEmpty() {
  $("#inbox-empty").hidden = rows().length > 0;
}

function apply(approval, seq) {
  if (seq !== undefined) {
    const previous = appliedSeq.get(approval.id);
    if (previous !== undefined && previous > seq) return; // an older state arriving late
    appliedSeq.set(approval.id, seq);
  }
  if (approval.status === "pending") pending.add(approval.id);
  else pending.delete(approval.id);
  showPendingCount(pending.size);

  let row = rowFor(approval.id);
  if (matches(approval)) {
    if (row) {
      fill(row, approval);
    } else {
      const added = template.content.firstElementChild.cloneNode(true);
      fill(added, approval);
      if (insert(added)) {
        added.classList.add("arrived");
        setTimeout(() => added.classList.remove("arrived"), 2500);
      }
    }
  } else if (row) {
    removeRow(row);
    if (approval.status !== "pending") {
      const who = approval.decided_by || "the system";
      notice(`#${approval.id} ${approval.tool}: ${approval.status} by ${who}.`);
    }
  }
  refreshEmpty();
}

function select(index) {
  const all = rows();
  all.forEach((row) => row.classList.remove("current"));
  if (!all.length) {
    current = -1;
    return null;
  }
  current = Math.max(0, Math.min(index, all.length - 1));
  const row = all[current];
  row.classList.add("current");
  row.scrollIntoView({ block: "nearest" });
  return row;
}

async function decide(row, verdict) {
  if (row.classList.contains("busy")) return; // one request per row at a time
  const id = Number(row.dataset.id);
  row.classList.add("busy");
  try {
    const response = await fetch(state.api_decision.replace("{id}", String(id)), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      // The hash binds an approval to the arguments on screen: an edit made meanwhile is a 409.
      body: JSON.stringify(
        row.dataset.argumentsHash ? { verdict, arguments_hash: row.dataset.argumentsHash } : { verdict },
      ),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      notice(`${labels.verdict[verdict]}: #${id} ${body.tool || ""}`.trim(), "success");
      apply(body);
    } else if (response.status === 409 && body.decided_by) {
      notice(`#${id}: already decided: ${body.status} by ${body.decided_by}.`, "error");
    } else {
      notice(`#${id}: ${body.detail || `the decision failed (HTTP ${response.status})`}`, "error");
    }
  } catch {
    notice(`#${id}: the decision could not be sent; check the connection and try again.`, "error");
  } finally {
    row.classList.remove("busy");
  }
}

function currentRow() {
  return current >= 0 ? rows()[current] || null : null;
}

const toggleHelp = setupKeysHelp();

// Shortcuts work while focus is on the page or a row. A row's checkbox counts as its row for the
// letter keys (ticking items must not switch them off); Enter always belongs to a focused control.
function keysAllowed(event) {
  if (typing(event)) return false;
  if (!onControl(event.target)) return true;
  return event.key !== "Enter" && event.target.matches("tr.inbox-row [data-field=pick]");
}

document.addEventListener("keydown", (event) => {
  if (!keysAllowed(event)) return;
  const row = currentRow();
  switch (event.key) {
    case "j":
      select(current + 1);
      break;
    case "k":
      select(current <= 0 ? 0 : current - 1);
      break;
    case "o":
    case "Enter":
      if (!row) return;
      location.href = row.querySelector("[data-field=link]").href;
      break;
    case "x":
      if (!row) return;
      row.querySelector("[data-field=pick]").click();
      break;
    case "a":
      if (!row || row.dataset.status !== "pending") return;
      if (row.dataset.primary) decide(row, row.dataset.primary);
      else location.href = row.querySelector("[data-field=link]").href;
      break;
    case "r":
      if (!row) return;
      location.href = `${row.querySelector("[data-field=link]").href}#reject`;
      break;
    case "e":
      if (!row) return;
      location.href = `${row.querySelector("[data-field=link]").href}#edit`;
      break;
    case "?":
      toggleHelp();
      break;
    default:
      return;
  }
  event.preventDefault();
});

tbody.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action=primary]");
  if (button) {
    const row = button.closest("tr.inbox-row");
    select(rows().indexOf(row));
    decide(row, row.dataset.primary);
  }
});

tbody.addEventListener("change", () => {
  $("#selected-count").textContent = String($$("[data-field=pick]:checked", tbody).length);
});

setInterval(() => {
  for (const row of rows()) {
    setField(row, "age", ageText(row.querySelector("[data-field=age]").dataset.time));
    setField(row, "left", leftText(row.querySelector("[data-field=left]").dataset.time, row.dataset.status));
  }
}, 15000);

connectInbox({
  path: state.ws_path,
  lastSeq: state.last_seq,
  onState: connectionIndicator(),
  onMessage(message) {
    received += 1;
    document.body.dataset.wsEvents = String(received);
    document.body.dataset.lastSeq = String(message.seq);
    apply(message.approval, message.seq);
  },
});

showPendingCount(pending.size);
if (rows().length) select(0);
