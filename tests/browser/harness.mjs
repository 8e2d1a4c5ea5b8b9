// Harness of the browser suite: the Courier test double, the real broker, a
// page server on another origin, Debian's chromium (playwright-core, never a
// downloaded browser) and Courier's own API answered by request routing.
// Every server binds 127.0.0.1 on a free port; every wait is bounded.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "..", "..");
const BROKER_BIN = process.env.BROKER_BIN || join(ROOT, "build", "courier-broker");
const DOUBLE_BIN = process.env.DOUBLE_BIN || join(ROOT, "build", "courier-double");
export const ARTIFACTS = join(ROOT, "build", "browser");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const COURIER_KEY = "ck_test_browser_5d1e7a9c3b";
const APP_SECRET = "app-secret-browser-2b8f4d6a1c3e5f7a9b0c";
const DOUBLE_SECRET = "double-signing-secret"; // the double's default signing secret
const START_MS = 10000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits (at most ms) until pred() is truthy; returns its value or throws.
export async function until(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

// The app's session JWT (HS256), as the app's backend would issue it.
export function sessionJwt(sub, ttl = 600) {
  const now = Math.floor(Date.now() / 1000);
  const h = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const p = b64url(JSON.stringify({ sub, iat: now, exp: now + ttl }));
  const s = createHmac("sha256", APP_SECRET).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${s}`;
}

// A Courier token's claims if the double signed it, else null.
function courierClaims(jwt) {
  const [h, p, s] = String(jwt).split(".");
  if (!s) return null;
  const want = createHmac("sha256", DOUBLE_SECRET).update(`${h}.${p}`).digest("base64url");
  if (want !== s) return null;
  return JSON.parse(Buffer.from(p, "base64url").toString());
}

class Proc {
  constructor(argv, env) {
    this.lines = [];
    this.waiters = [];
    this.p = spawn(argv[0], argv.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
    for (const stream of [this.p.stdout, this.p.stderr]) {
      let buf = "";
      stream.on("data", (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this.lines.push(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
        for (const w of this.waiters) w();
      });
    }
  }
  async waitFor(rx, ms = START_MS) {
    return until(() => this.lines.map((l) => l.match(rx)).find(Boolean), ms, `${rx} in:\n${this.lines.slice(-20).join("\n")}`);
  }
  json() {
    return this.lines.flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
  }
  stop() {
    if (this.p.exitCode === null) this.p.kill("SIGTERM");
  }
}

const POLICY = `return function(req)
  return { allow = true, tier = "inbox", expires_in = req.expires_in or "1h", reason = "browser test" }
end
`;

// Courier's inbox, as the routed API answers it.
const MESSAGES = [
  { messageId: "m1", title: "Welcome to the inbox", preview: "This token came from courier-broker.", read: null },
  { messageId: "m2", title: "Your token refreshes itself", preview: "No page reload needed.", read: null },
];

export class Stack {
  async start() {
    this.dir = mkdtempSync(join(tmpdir(), "cb-browser-"));
    mkdirSync(ARTIFACTS, { recursive: true });
    this.double = new Proc([DOUBLE_BIN, "--port", "0"], { ...process.env, COURIER_DOUBLE_KEYS: COURIER_KEY });
    const dport = (await this.double.waitFor(/^PORT (\d+)$/))[1];

    // The app's origin: another port, so every broker call is cross-origin.
    this.pages = createServer((req, res) => this.servePage(req, res));
    await new Promise((r) => this.pages.listen(0, "127.0.0.1", r));
    this.origin = `http://127.0.0.1:${this.pages.address().port}`;

    writeFileSync(join(this.dir, "allow.lua"), POLICY);
    const tenant = (extra) => `{
    api_key = { env = "COURIER_API_KEY" },
    policy = "allow.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    cors_origins = { "${this.origin}" },
    ${extra}
  }`;
    writeFileSync(
      join(this.dir, "broker.conf.lua"),
      `listen = "127.0.0.1:0"
courier = { base_url = "http://127.0.0.1:${dport}", timeout_ms = 3000 }
tenants = {
  default = ${tenant("")},
  limited = ${tenant("rate_limit = { per_second = 0.2, burst = 1 },")},
  throttled = ${tenant("rate_limit = { per_second = 0.05, burst = 1 },")},
}
`,
    );
    this.broker = new Proc([BROKER_BIN, "serve", "-c", join(this.dir, "broker.conf.lua")], {
      ...process.env,
      COURIER_API_KEY: COURIER_KEY,
      APP_JWT_SECRET: APP_SECRET,
    });
    this.url = `http://127.0.0.1:${(await this.broker.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]}`;

    this.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
      timeout: 30000,
    });
    this.courierCalls = [];
    return this;
  }

  servePage(req, res) {
    const path = new URL(req.url, "http://x").pathname;
    if (path.startsWith("/examples/")) return this.serveExample(path.slice("/examples/".length), res);
    const files = {
      "/": [join(HERE, "pages", "session.html"), "text/html; charset=utf-8"],
      "/courier-js/index.mjs": [join(HERE, "node_modules", "@trycourier", "courier-js", "dist", "index.mjs"), "text/javascript"],
    };
    const f = files[path];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": f[1], "Cache-Control": "no-store" }).end(readFileSync(f[0]));
  }

  // examples/web as its README serves it, the broker's address in config.js
  // (and in the React bundle, which holds config.js) made this broker's.
  serveExample(rel, res) {
    const dir = join(ROOT, "examples", "web");
    const f = resolve(dir, rel);
    const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript" };
    const type = types[extname(f)];
    if (!f.startsWith(dir + "/") || !type || !existsSync(f)) {
      res.writeHead(404).end();
      return;
    }
    let body = readFileSync(f);
    if (type === "text/javascript") body = String(body).replaceAll("http://localhost:8080", this.url);
    res.writeHead(200, { "Content-Type": type, "Cache-Control": "no-store" }).end(body);
  }

  // Courier's API (api.courier.com, inbox.courier.com) answered by routing:
  // a call with a token the double did not sign, or past its exp by the
  // real clock, gets 401 as Courier would give it.
  async courier(route) {
    const req = route.request();
    const cors = {
      "Access-Control-Allow-Origin": "*",
      "Access-Control-Allow-Headers": "*",
      "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    };
    if (req.method() === "OPTIONS") return route.fulfill({ status: 204, headers: cors });
    const headers = await req.allHeaders();
    const claims = courierClaims((headers["authorization"] || "").replace(/^Bearer /, ""));
    // As of sending (the test page stamps its calls; the examples do not):
    // under load the harness may take seconds to get to a routed request.
    const arrived = Date.now() / 1000;
    const now = Number(headers["x-test-sent"]) / 1000 || arrived;
    const ok = claims !== null && typeof claims.exp === "number" && claims.exp > now;
    this.courierCalls.push({ url: req.url(), ok, user: claims && /user_id:(\S+)/.exec(claims.scope || "")?.[1], left: claims ? claims.exp - now : null, late: arrived - now });
    if (!ok) return route.fulfill({ status: 401, headers: cors, contentType: "application/json", body: '{"message":"Unauthorized"}' });
    const data = { count: 2, unreadCount: 2, messages: { totalCount: 2, pageInfo: { startCursor: null, hasNextPage: false }, nodes: MESSAGES } };
    return route.fulfill({ status: 200, headers: cors, contentType: "application/json", body: JSON.stringify({ data }) });
  }

  // A browser context (one origin's tabs and windows), Courier routed; skewMs
  // moves the page's wall clock (Date) by that much;
  // hideable: window.__setHidden(bool) makes the page report itself hidden
  // or visible (and fires visibilitychange), as a minimised window would.
  async context({ skewMs = 0, hideable = false } = {}) {
    const ctx = await this.browser.newContext({ viewport: { width: 720, height: 480 } });
    await ctx.route(/^https:\/\/[a-z.]*courier\.(com|io)\//, (route) => this.courier(route));
    if (skewMs) {
      await ctx.addInitScript((off) => {
        const RealDate = Date;
        class SkewedDate extends RealDate {
          constructor(...a) {
            if (a.length === 0) super(RealDate.now() + off);
            else super(...a);
          }
          static now() {
            return RealDate.now() + off;
          }
        }
        globalThis.Date = SkewedDate;
      }, skewMs);
    }
    if (hideable) {
      await ctx.addInitScript(() => {
        let hidden = false;
        Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
        Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
        window.__setHidden = (h) => {
          hidden = h;
          document.dispatchEvent(new Event("visibilitychange"));
        };
      });
    }
    return ctx;
  }

  pageUrl({ user, expires = "6s", tenant = "", cred, trace = "" }) {
    const q = new URLSearchParams({ broker: this.url, user, expires, cred: cred ?? sessionJwt(user) });
    if (tenant) q.set("tenant", tenant);
    if (trace) q.set("trace", trace);
    return `${this.origin}/?${q}`;
  }

  // Opens the test page in a new window of ctx (a window, not a tab: a
  // second tab would hide the first).
  async open(ctx, opts, opener = null) {
    if (!opener) {
      const page = await ctx.newPage();
      await page.goto(this.pageUrl(opts));
      return page;
    }
    const [page] = await Promise.all([
      ctx.waitForEvent("page", { timeout: START_MS }),
      opener.evaluate((u) => window.open(u, "_blank", "popup,width=720,height=480"), this.pageUrl(opts)),
    ]);
    await page.waitForLoadState("load", { timeout: START_MS });
    return page;
  }

  // The broker's token_request log lines for user.
  tokenLines(user) {
    return this.broker.json().filter((l) => l.event === "token_request" && l.user === user);
  }

  async stop() {
    if (this.browser) await this.browser.close().catch(() => {});
    this.broker?.stop();
    this.double?.stop();
    this.pages?.close();
  }
}

export const state = (page) => page.evaluate(() => window.__state);
