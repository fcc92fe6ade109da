// An approval's page: live notice when someone else decides, the edit diff, keyboard.
import { $, $$, onControl, pageState, setupKeysHelp, showPendingCount, typing } from "./dom.js";
import { connectInbox, connectionIndicator } from "./live.js";

const state = pageState();
const pending = new Set(state.pending_ids || []);
const editForm = $("#edit-form");
const negative = $("#negative-comment");
let submitting = false;

// --- Someone else decided ------------------------------------------------------------

function showDecided(approval) {
  const banner = $("#decided-banner");
  const status = $("#detail-status");
  status.textContent = approval.status;
  status.className = `status status-${approval.status}`;
  if (submitting) return; // our own decision: the redirect follows
  const who = approval.decided_by || "the system";
  banner.textContent = `Already decided: ${approval.status} by ${who}. A decision from this page will be refused.`;
  banner.hidden = false;
  banner.classList.add("elsewhere");
}

// --- Edit: the arguments from the form, and a diff before submitting --------------------

function fieldValue(input) {
  const kind = input.dataset.type;
  const raw = input.value;
  if (kind === "boolean") return input.checked;
  if (kind === "string" && !input.dataset.nullable) return raw;
  if (raw === "") return input.dataset.nullable ? null : undefined;
  if (kind === "integer") return Number.parseInt(raw, 10);
  if (kind === "number") return Number.parseFloat(raw);
  if (kind === "enum" || kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw;
}

function editedArguments() {
  const mode = editForm.querySelector("[data-field=edit-mode]").value;
  if (mode === "json") {
    return JSON.parse(editForm.querySelector("[data-field=arguments-json]").value);
  }
  const values = {};
  for (const input of $$("[data-arg]", editForm)) {
    const value = fieldValue(input);
    if (value !== undefined) values[input.dataset.arg] = value;
  }
  return values;
}

const show = (value) => (value === undefined ? "(not set)" : JSON.stringify(value));

// What the form started from: the arguments a first reviewer already approved with an edit
// (an item that needs two approvals), else the proposal; as approvals/views.py picks them.
function startArguments() {
  const node = document.getElementById("decided-arguments");
  const decided = node ? JSON.parse(node.textContent) : null;
  return decided && Object.keys(decided).length ? decided : state.proposed || {};
}

function renderDiff() {
  const rows = editForm.querySelector("[data-field=diff-rows]");
  const none = editForm.querySelector("[data-field=diff-none]");
  rows.replaceChildren();
  let edited;
  try {
    edited = editedArguments();
  } catch (error) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.textContent = `The JSON is not valid: ${error.message}`;
    tr.append(td);
    rows.append(tr);
    none.hidden = true;
    return false;
  }
  const before = startArguments();
  const names = [...new Set([...Object.keys(before), ...Object.keys(edited)])];
  let changed = 0;
  for (const name of names) {
    if (JSON.stringify(before[name]) === JSON.stringify(edited[name])) continue;
    changed += 1;
    const tr = document.createElement("tr");
    tr.className = "changed";
    for (const [text, cls] of [
      [name, "name"],
      [show(before[name]), "old"],
      [show(edited[name]), "new"],
    ]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      tr.append(td);
    }
    rows.append(tr);
  }
  none.hidden = changed > 0;
  return true;
}

function resetReview() {
  if (!editForm) return;
  editForm.dataset.reviewed = "";
  $("#edit-diff").hidden = true;
  editForm.querySelector("[data-field=edit-submit]").textContent = "Review changes";
  editForm.querySelector("[data-field=edit-back]").hidden = true;
}

if (editForm) {
  editForm.addEventListener("submit", (event) => {
    if (editForm.dataset.reviewed === "yes") {
      submitting = true;
      return;
    }
    event.preventDefault();
    const ok = renderDiff();
    $("#edit-diff").hidden = false;
    if (!ok) return;
    editForm.dataset.reviewed = "yes";
    const submit = editForm.querySelector("[data-field=edit-submit]");
    submit.textContent = "Confirm edit and approve";
    editForm.querySelector("[data-field=edit-back]").hidden = false;
    submit.focus();
  });
  editForm.addEventListener("input", (event) => {
    const mode = editForm.querySelector("[data-field=edit-mode]");
    if (event.target.matches("[data-field=arguments-json]")) mode.value = "json";
    else if (event.target.matches("[data-arg]")) mode.value = "fields";
    resetReview();
  });
  editForm.querySelector("[data-field=edit-back]").addEventListener("click", () => {
    resetReview();
    editForm.querySelector("[data-arg]")?.focus();
  });
}

for (const form of $$("form.decision")) {
  if (form !== editForm) form.addEventListener("submit", () => (submitting = true));
}

// --- Keyboard ------------------------------------------------------------------------

function focusEdit() {
  if (!editForm) return;
  const first = editForm.querySelector("[data-arg]");
  editForm.scrollIntoView({ block: "center" });
  (first || editForm.querySelector("button")).focus();
}

function focusReject() {
  if (!negative) return;
  negative.scrollIntoView({ block: "center" });
  negative.focus();
}

const toggleHelp = setupKeysHelp();
document.addEventListener("keydown", (event) => {
  const inControl = typing(event) || onControl(event.target);
  if (event.key === "Escape" && inControl) {
    event.target.blur();
    return;
  }
  // On a control (a boolean field in the edit form, the "Confirm edit" button) a letter must not
  // approve the unedited proposal or move focus away.
  if (inControl) return;
  const primary = $("form.decision-primary");
  switch (event.key) {
    case "a":
      if (!primary) return;
      primary.requestSubmit();
      break;
    case "r":
      focusReject();
      break;
    case "e":
      focusEdit();
      break;
    case "u":
      location.href = state.inbox_url;
      break;
    case "?":
      toggleHelp();
      break;
    default:
      return;
  }
  event.preventDefault();
});

if (location.hash === "#edit") focusEdit();
if (location.hash === "#reject") focusReject();
// Drop the fragment: a redirect after the decision would otherwise carry it to the inbox.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);

// --- Live ----------------------------------------------------------------------------

connectInbox({
  path: state.ws_path,
  lastSeq: state.last_seq,
  onState: connectionIndicator(),
  onMessage(message) {
    const approval = message.approval;
    if (approval.status === "pending") pending.add(approval.id);
    else pending.delete(approval.id);
    showPendingCount(pending.size);
    if (approval.id === state.approval && approval.status !== "pending") showDecided(approval);
  },
});
showPendingCount(pending.size);
