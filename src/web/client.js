// courier-broker browser helper (GET /v1/client.js): tokens that never silently expire.
//
// Owns one page's Courier token session: asks the broker for a token with the
// app's session credential, hands each new token to onToken, refreshes it well
// before it expires, retries what can be retried and shares each token with the
// other tabs of the origin, so that one request serves every tab per refresh.
// It must never keep a token or a credential anywhere but in memory (no
// localStorage, sessionStorage, IndexedDB or cookie), never schedule by the
// browser's wall clock (only the lifetime the broker reports, counted on the
// monotonic clock), and never retry a 401/403 on its own.
//
//   import { createTokenSession } from "https://broker.example.com/v1/client.js";
//   const session = createTokenSession({ url, tenant, body, getCredential, onToken, onError });
//   await session.start();  // resolves with the first token
//   session.stop();         // on logout: forgets the token, stops refreshing
//
// Dependency-free ES module; docs/frontend.md is its manual.

const REFRESH_AT = 0.5; // refresh between 50% and 65% of the lifetime (jitter)
const REFRESH_JITTER = 0.15;
const STALE_AT = 0.7; // a token with less than 70% of its lifetime left is due for refresh
const NEAR_EXPIRY = 0.5; // on return (visible, online): refresh at once below half its life left
const MIN_DELAY_MS = 500;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 60000;
const RETRY_AFTER_MAX_MS = 300000;
const ASK_MS = 150; // how long a tab waits for another tab's fresher token
const TIMEOUT_MS = 15000; // one token request

const now = () => performance.now(); // monotonic: immune to the wall clock being set or skewed

class TokenSessionError extends Error {
  constructor(message, { status = 0, code = "", requestId = "", retryable = false } = {}) {
    super(message);
    this.name = "TokenSessionError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryable = retryable;
  }
}

// Retry-After: delta-seconds, or an HTTP date (then read against the page's
// clock, bounded, as nothing better exists for it). Milliseconds, or -1.
function retryAfterMs(value) {
  if (!value) return -1;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Math.min(Number(v) * 1000, RETRY_AFTER_MAX_MS);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return -1;
  return Math.min(Math.max(t - Date.now(), 0), RETRY_AFTER_MAX_MS);
}

function tokenUrl(base, tenant) {
  const root = String(base).replace(/\/+$/, "");
  return tenant ? `${root}/v1/tenants/${encodeURIComponent(tenant)}/token` : `${root}/v1/token`;
}

export function createTokenSession(options) {
  const opts = options || {};
  if (!opts.url) throw new TypeError("createTokenSession: url is required");
  if (typeof opts.getCredential !== "function") throw new TypeError("createTokenSession: getCredential is required");
  if (!opts.body || typeof opts.body !== "object") throw new TypeError("createTokenSession: body is required");
  const endpoint = tokenUrl(opts.url, opts.tenant);
  const key = `courier-broker:${endpoint}:${JSON.stringify(opts.body)}`;
  const onToken = opts.onToken || (() => {});
  const onError = opts.onError || (() => {});

  let running = false;
  let stopped = false; // by a 401/403 (until start()) or by stop()
  let current = null; // { token, userId, scope, expiresAt, lifetime (s), deadline (monotonic ms) }
  let timer = null;
  let attempt = 0; // consecutive retryable failures
  let notBefore = 0; // monotonic ms: no request before (Retry-After, shared by tabs)
  let pending = false; // a refresh came due while paused
  let inflight = null;
  let firstWaiters = [];
  let channel = null;
  const askWaiters = new Set();

  const left = () => (current ? (current.deadline - now()) / 1000 : 0);
  const fraction = () => (current ? left() / current.lifetime : 0);
  const fresh = () => current !== null && fraction() > STALE_AT;
  const paused = () =>
    (typeof document !== "undefined" && document.visibilityState === "hidden") ||
    (typeof navigator !== "undefined" && navigator.onLine === false);

  function clearTimer() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function schedule(ms) {
    clearTimer();
    if (!running || stopped) return;
    timer = setTimeout(() => {
      timer = null;
      refresh("timer");
    }, Math.max(ms, MIN_DELAY_MS));
  }

  // From the lifetime the broker reported, on receipt, with jitter.
  function scheduleFromToken() {
    const at = current.lifetime * (REFRESH_AT + Math.random() * REFRESH_JITTER);
    const elapsed = current.lifetime - left();
    schedule((at - elapsed) * 1000);
  }

  function publicView(t) {
    return { token: t.token, userId: t.userId, scope: t.scope, expiresAt: t.expiresAt, expiresIn: Math.max(0, Math.floor(left())) };
  }

  async function adopt(t, fromTab) {
    if (current && current.token === t.token) return;
    current = t;
    attempt = 0;
    if (!fromTab && channel) {
      // Another tab counts the same lifetime from its own receipt of it.
      channel.postMessage({ type: "token", token: t.token, userId: t.userId, scope: t.scope, expiresAt: t.expiresAt, lifetime: t.lifetime, left: left() });
    }
    for (const w of askWaiters) w();
    if (running && !stopped) scheduleFromToken();
    const waiters = firstWaiters;
    firstWaiters = [];
    for (const w of waiters) w.resolve(publicView(t));
    try {
      await onToken(publicView(t));
    } catch (e) {
      reportError(new TokenSessionError(`onToken failed: ${e && e.message ? e.message : e}`, { code: "on_token_failed" }));
    }
  }

  function fromMessage(m) {
    if (typeof m.token !== "string" || !(m.lifetime > 0) || !(m.left > 0)) return null;
    return { token: m.token, userId: m.userId, scope: m.scope, expiresAt: m.expiresAt, lifetime: m.lifetime, deadline: now() + m.left * 1000 };
  }

  function onMessage(ev) {
    const m = ev.data || {};
    if (!running || stopped) return; // stopped by a 401/403: another tab's token is not ours to use
    if (m.type === "token") {
      const t = fromMessage(m);
      if (t && (!current || t.deadline > current.deadline)) adopt(t, true);
    } else if (m.type === "ask") {
      if (fresh() && current.token !== m.have) {
        channel.postMessage({ type: "token", token: current.token, userId: current.userId, scope: current.scope, expiresAt: current.expiresAt, lifetime: current.lifetime, left: left() });
      } else if (notBefore > now()) {
        // A tab opened during a Retry-After learns it before it asks.
        channel.postMessage({ type: "backoff", waitMs: notBefore - now() });
      }
    } else if (m.type === "backoff" && m.waitMs > 0) {
      notBefore = Math.max(notBefore, now() + m.waitMs);
    }
  }

  function reportError(err) {
    try {
      onError(err);
    } catch (_) {
      /* the app's handler failed: nothing more to tell */
    }
  }

  // Waits up to ASK_MS for another tab's fresh token; true if one came.
  function askOtherTabs() {
    if (!channel) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        askWaiters.delete(done);
        clearTimeout(t);
        resolve(fresh());
      };
      const t = setTimeout(done, ASK_MS);
      askWaiters.add(done);
      channel.postMessage({ type: "ask", have: current ? current.token : "" });
    });
  }

  async function request() {
    const credential = await opts.getCredential();
    if (!credential) throw new TokenSessionError("no session credential", { status: 401, code: "no_credential" });
    const extra = typeof opts.headers === "function" ? await opts.headers() : opts.headers || {};
    const headers = Object.assign({}, extra, { "Content-Type": "application/json", Authorization: `Bearer ${credential}` });
    const ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
    const to = ctl ? setTimeout(() => ctl.abort(), TIMEOUT_MS) : null;
    let resp, data;
    const sent = now();
    try {
      resp = await fetch(endpoint, { method: "POST", mode: "cors", credentials: "omit", cache: "no-store", headers, body: JSON.stringify(opts.body), signal: ctl ? ctl.signal : undefined });
      data = await resp.json().catch(() => null);
    } catch (e) {
      throw new TokenSessionError(`the broker could not be reached: ${e && e.message ? e.message : e}`, { code: "network", retryable: true });
    } finally {
      if (to) clearTimeout(to);
    }
    const requestId = resp.headers.get("X-Request-Id") || "";
    if (resp.ok && data && typeof data.token === "string" && data.expires_in > 0) {
      // Counted from when the request left (the token cannot be older), less a
      // second: Courier's iat and exp are whole seconds.
      const lifetime = data.expires_in > 2 ? data.expires_in - 1 : data.expires_in / 2;
      return { token: data.token, userId: data.user_id, scope: data.scope, expiresAt: data.expires_at, lifetime, deadline: sent + lifetime * 1000 };
    }
    const code = (data && data.error) || (resp.ok ? "bad_answer" : "http_error");
    const message = (data && data.message) || `the broker answered HTTP ${resp.status}`;
    const retryable = resp.ok || resp.status === 408 || resp.status === 429 || resp.status >= 500;
    const err = new TokenSessionError(message, { status: resp.status, code, requestId, retryable });
    err.retryAfterMs = retryAfterMs(resp.headers.get("Retry-After"));
    // Told before the lock is let go, so that the tab next in line holds back.
    if (err.retryAfterMs >= 0 && channel) channel.postMessage({ type: "backoff", waitMs: err.retryAfterMs });
    throw err;
  }

  // One attempt, under the origin-wide lock: adopt a fresher token from another
  // tab if one exists, else ask the broker once and share the answer.
  async function attemptOnce() {
    if (fresh()) return;
    if (await askOtherTabs()) return;
    if (!running || stopped) return;
    // Another tab was told to wait (Retry-After) while this one waited its turn.
    const wait = notBefore - now();
    if (wait > 0) {
      schedule(wait);
      return;
    }
    const t = await request();
    if (running && !stopped) await adopt(t, false);
  }

  function locked(fn) {
    if (typeof navigator !== "undefined" && navigator.locks && navigator.locks.request) {
      return navigator.locks.request(key, { mode: "exclusive" }, fn);
    }
    return fn();
  }

  function fail(err) {
    if (!err.retryable) {
      // Revoked session or denied: stop until start() again.
      stopped = true;
      clearTimer();
      const waiters = firstWaiters;
      firstWaiters = [];
      for (const w of waiters) w.reject(err);
      reportError(err);
      return;
    }
    attempt++;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
    let wait = backoff / 2 + Math.random() * (backoff / 2);
    if (err.retryAfterMs >= 0) {
      wait = err.retryAfterMs + Math.random() * Math.min(1000, err.retryAfterMs * 0.1 + 100);
    }
    notBefore = Math.max(notBefore, now() + wait);
    reportError(err);
    schedule(wait);
  }

  function refresh(reason) {
    if (!running || stopped) return Promise.resolve();
    if (paused() && current) {
      pending = true; // resumed by visibilitychange / online
      return Promise.resolve();
    }
    if (inflight) return inflight;
    const wait = notBefore - now();
    if (wait > 0) {
      schedule(wait);
      return Promise.resolve();
    }
    pending = false;
    inflight = locked(() => attemptOnce())
      .catch((e) => fail(e instanceof TokenSessionError ? e : new TokenSessionError(String(e && e.message ? e.message : e), { code: "error", retryable: true })))
      .finally(() => {
        inflight = null;
      });
    void reason;
    return inflight;
  }

  function onReturn() {
    if (!running || stopped || paused()) return;
    if (pending || !current || fraction() < NEAR_EXPIRY) refresh("return");
  }

  function listen() {
    if (typeof BroadcastChannel !== "undefined" && !channel) {
      channel = new BroadcastChannel(key);
      channel.onmessage = onMessage;
    }
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", onReturn);
    if (typeof window !== "undefined") window.addEventListener("online", onReturn);
  }

  function unlisten() {
    if (channel) channel.close();
    channel = null;
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", onReturn);
    if (typeof window !== "undefined") window.removeEventListener("online", onReturn);
  }

  return {
    // Resolves with the first token ({ token, userId, scope, expiresAt, expiresIn });
    // rejects on a 401/403. Again after a 401/403 or stop(): resumes.
    start() {
      stopped = false;
      attempt = 0;
      if (!running) {
        running = true;
        listen();
      }
      if (fresh()) {
        scheduleFromToken();
        return Promise.resolve(publicView(current));
      }
      const first = new Promise((resolve, reject) => firstWaiters.push({ resolve, reject }));
      refresh("start");
      return first;
    },
    // Stops refreshing and forgets the token (call it on logout).
    stop() {
      running = false;
      clearTimer();
      unlisten();
      current = null;
      pending = false;
      const waiters = firstWaiters;
      firstWaiters = [];
      for (const w of waiters) w.reject(new TokenSessionError("stopped", { code: "stopped" }));
    },
    // The current token ({ token, userId, scope, expiresAt, expiresIn }), or null.
    get current() {
      return current && left() > 0 ? publicView(current) : null;
    },
  };
}

export { TokenSessionError };
