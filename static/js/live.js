// The inbox websocket: notification only. Reconnects with backoff and asks for what it
// missed since the last seq it saw; the server replays stored events, so nothing is lost.

const MAX_DELAY_MS = 8000;
// How many seqs are remembered to drop duplicates (the server keeps as many per connection).
const SEEN_LIMIT = 5000;

// A refused handshake looks like any other failure; ask the page itself whether the session ended.
async function signedOut() {
  try {
    const response = await fetch(location.pathname, { redirect: "manual", credentials: "same-origin" });
    return response.type === "opaqueredirect";
  } catch {
    return false; // the server is down: keep retrying
  }
}

export function connectInbox({ path, lastSeq, onMessage, onState }) {
  let seq = Number(lastSeq) || 0;
  let socket = null;
  let attempt = 0;
  let timer = 0;
  let stopped = false;
  let everOpen = false;
  const seen = new Set();

  const url = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}?last_seq=${seq}`;
  };

  function open() {
    clearTimeout(timer);
    onState("connecting", { attempt, everOpen });
    socket = new WebSocket(url());
    socket.addEventListener("open", () => {
      attempt = 0;
      everOpen = true;
      onState("open", {});
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message.seq !== "number" || seen.has(message.seq)) return;
      seen.add(message.seq);
      if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value); // the oldest added
      if (message.seq > seq) seq = message.seq;
      onMessage(message);
    });
    socket.addEventListener("close", async (event) => {
      socket = null;
      if (stopped) return;
      if (attempt >= 2 && (await signedOut())) {
        stopped = true;
        onState("signed-out", {});
        return;
      }
      // Exponential backoff with jitter, so a restarted server is not hit by every page at once.
      const delay = Math.round(Math.min(MAX_DELAY_MS, 500 * 2 ** attempt) * (0.8 + Math.random() * 0.4));
      attempt += 1;
      onState("offline", { delay, attempt, code: event.code, everOpen });
      timer = setTimeout(open, delay);
    });
  }

  window.addEventListener("online", () => {
    if (!socket && !stopped) {
      attempt = 0;
      open();
    }
  });
  open();

  return {
    get lastSeq() {
      return seq;
    },
    close() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close();
    },
  };
}

// Shows the connection state in the banner and the status line; returns the onState callback.
export function connectionIndicator() {
  const banner = document.getElementById("offline-banner");
  const status = document.getElementById("live-status");
  const text = banner ? banner.querySelector("[data-field=text]") : null;
  let firstTimer = setTimeout(() => show("offline", { delay: 0 }), 2000);

  function show(state, info) {
    document.body.dataset.live = state;
    if (status) {
      status.hidden = false;
      status.dataset.state = state;
      const names = { open: "Live", connecting: "Connecting…", "signed-out": "Signed out" };
      status.textContent = names[state] || "Offline";
    }
    if (!banner) return;
    if (state === "open") {
      banner.hidden = true;
      return;
    }
    if (state === "signed-out") {
      banner.hidden = false;
      if (text) {
        text.replaceChildren("You are signed out. ");
        const link = document.createElement("a");
        link.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
        link.textContent = "Sign in again";
        text.append(link);
      }
      return;
    }
    if (state === "offline") {
      banner.hidden = false;
      if (text) {
        const seconds = Math.max(1, Math.round((info.delay || 0) / 1000));
        text.textContent = `The live connection dropped; reconnecting in ${seconds} s. Decisions still work.`;
      }
    }
  }

  return (state, info) => {
    if (state === "open") clearTimeout(firstTimer);
    // A first connection attempt is not "offline" yet; a retry is.
    if (state === "connecting" && !info.everOpen && info.attempt === 0) {
      if (status) {
        status.hidden = false;
        status.textContent = "Connecting…";
      }
      return;
    }
    show(state, info);
    firstTimer = state === "open" ? 0 : firstTimer;
  };
}
