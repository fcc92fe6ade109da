// The run trace: polls a small JSON endpoint while the run is going and appends new steps.
import { $, el, pageState } from "./dom.js";

const state = pageState();
const timeline = $("#timeline");
let after = state.after;
let failures = 0;

function renderStep(step) {
  const head = el("div", { className: "step-head" }, [
    el("span", { className: "step-index", text: `#${step.index}` }),
    el("span", { className: "step-title", text: step.title, attrs: { "data-field": "title" } }),
    step.verdict
      ? el("span", { className: `verdict verdict-${step.verdict}`, text: step.verdict, attrs: { "data-field": "verdict" } })
      : null,
  ]);
  const facts = [step.time];
  if (step.latency_ms) facts.push(`${step.latency_ms} ms`);
  if (step.tokens) facts.push(`${step.prompt_tokens}+${step.completion_tokens} tokens`);
  if (step.cost !== "0") facts.push(`$${step.cost}`);
  head.append(el("span", { className: "step-facts", text: facts.join(" · ") }));
  const item = el("li", { className: `step kind-${step.kind}${step.verdict ? ` step-verdict-${step.verdict}` : ""}` }, [head]);
  item.dataset.index = String(step.index);
  if (step.verdict_reason) item.append(el("p", { className: "verdict-reason", text: step.verdict_reason }));
  for (const block of step.blocks) {
    item.append(
      el("div", { className: "block" }, [
        el("span", { className: "block-label", text: block.label }),
        el(block.code ? "pre" : "p", { text: block.text }),
      ]),
    );
  }
  return item;
}

function renderApprovals(approvals) {
  const list = $("#run-approvals");
  list.replaceChildren();
  if (!approvals.length) {
    list.append(el("li", { className: "empty", text: "None." }));
    return;
  }
  for (const a of approvals) {
    const item = el("li", {}, [
      el("a", { text: `#${a.id} ${a.tool}`, attrs: { href: `/inbox/${Number(a.id)}/` } }),
      document.createTextNode(` · ${a.kind} · `),
      el("span", { className: `status status-${a.status}`, text: a.status }),
      document.createTextNode(a.decided_by ? ` by ${a.decided_by}` : ""),
      el("div", { className: "policy-reason", text: a.policy_reason }),
    ]);
    item.dataset.id = String(a.id);
    if (a.decisions.length) {
      const decisions = el("ul");
      for (const d of a.decisions) {
        decisions.append(
          el("li", {}, [
            el("strong", { text: d.reviewer }),
            document.createTextNode(` ${d.verdict} at ${d.time}${d.comment ? ` — “${d.comment}”` : ""}`),
            d.arguments ? el("pre", { text: d.arguments }) : null,
          ]),
        );
      }
      item.append(decisions);
    }
    list.append(item);
  }
}

function renderRun(run) {
  const status = $("#run-status");
  status.textContent = run.status;
  status.className = `status status-${run.status}`;
  document.body.dataset.runStatus = run.status;
  $("#run-steps").textContent = String(run.step_count);
  $("#run-cost").textContent = run.cost;
  $("#run-error").hidden = !run.error;
  $("#run-error [data-field=error]").textContent = run.error;
  $("#run-result").hidden = !run.result;
  $("#run-result [data-field=result]").textContent = run.result;
  $("#run-live").hidden = run.terminal;
  document.title = document.title.replace(/\(\w+\)/, `(${run.status})`);
}

async function poll() {
  let terminal = false;
  try {
    const response = await fetch(`${state.poll_url}?after=${after}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    for (const step of data.steps) {
      if (step.index <= after) continue;
      timeline.append(renderStep(step));
      after = step.index;
    }
    $("#timeline-empty").hidden = timeline.children.length > 0;
    renderRun(data.run);
    renderApprovals(data.approvals);
    terminal = data.run.terminal;
    failures = 0;
  } catch {
    failures += 1;
  }
  if (terminal) return;
  // About a second and a half while all is well; slower in a hidden tab or after failures.
  const base = document.hidden ? 5000 : 1500;
  setTimeout(poll, Math.min(10000, base * 2 ** failures));
}

document.body.dataset.runStatus = $("#run-status").textContent.trim();
if (!state.terminal) setTimeout(poll, 1000);
