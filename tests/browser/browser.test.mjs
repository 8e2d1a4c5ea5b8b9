// The browser suite (make test): the broker's helper (GET /v1/client.js) in
// Debian's headless chromium, with the real @trycourier/courier-js 3.4.0.
// Waits are bounded; the long cases run side by side to keep the suite short.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ARTIFACTS, ROOT, Stack, sessionJwt, sleep, state, until } from "./harness.mjs";

const stack = new Stack();
before(async () => {
  await stack.start();
});
after(async () => {
  await stack.stop();
});

const firstToken = (page, ms = 10000) => until(() => state(page).then((s) => s.first || s.firstError), ms, "the first token");
const courierOk = (user) => stack.courierCalls.filter((c) => c.user === user && c.ok).length;
const courierFailed = (user) => stack.courierCalls.filter((c) => c.user === user && !c.ok);
// The page's failed SDK calls, with Courier's view of each failure, for the message.
const sdkFailures = (s, user) =>
  `${JSON.stringify(s.sdkFail)}; Courier refused: ${JSON.stringify(courierFailed(user))}; ` +
  `tokens (page ms, s left on delivery, s the previous had left): ${JSON.stringify(s.tokens.map((t) => [Math.round(t.t), t.expiresIn, t.margin && +t.margin.toFixed(2)]))}`;

describe("short cases", () => {
  test("the first token signs courier-js in; the inbox loads; screenshot kept", async () => {
    const ctx = await stack.context();
    try {
      const page = await ctx.newPage();
      const mod = await page.request.get(`${stack.url}/v1/client.js`);
      assert.equal(mod.status(), 200);
      assert.match(mod.headers()["content-type"], /^text\/javascript/);
      await page.goto(stack.pageUrl({ user: "alice", expires: "1h" }));
      const first = await firstToken(page);
      assert.equal(first.userId, "alice", JSON.stringify(first));
      assert.match(first.scope, /^user_id:alice inbox:read:messages/);
      assert.ok(first.expiresIn > 3500 && first.expiresIn < 3600, first.expiresIn);
      await until(() => state(page).then((s) => s.sdkOk >= 1), 5000, "an inbox call");
      await page.getByText("Welcome to the inbox").waitFor({ timeout: 5000 });
      await page.screenshot({ path: join(ARTIFACTS, "inbox.png") });
      const s = await state(page);
      assert.equal(s.fetches.length, 1);
      assert.deepEqual(s.sdkFail, []);
      assert.ok(courierOk("alice") >= 1);
      assert.equal(stack.tokenLines("alice").length, 1);
    } finally {
      await ctx.close();
    }
  });

  test("a traceparent on the token request passes CORS and reaches the log", async () => {
    const ctx = await stack.context();
    try {
      const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "tracy", expires: "1h", trace }));
      const first = await firstToken(page);
      assert.equal(first.userId, "tracy", JSON.stringify(first));
      const lines = stack.tokenLines("tracy");
      assert.equal(lines.length, 1);
      assert.equal(lines[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    } finally {
      await ctx.close();
    }
  });
});

describe("examples/web", () => {
  before(() => {
    // The React page's one build step (its README's npm run build).
    execFileSync("npm", ["run", "--silent", "build"], { cwd: join(ROOT, "examples", "web"), stdio: "ignore", timeout: 60000 });
  });
  for (const [name, user] of [["plain.html", "erin"], ["react.html", "frank"]]) {
    test(`${name} shows an inbox through the helper`, async () => {
      const ctx = await stack.context();
      try {
        const page = await ctx.newPage();
        const errors = [];
        page.on("pageerror", (e) => errors.push(e.message));
        await page.goto(`${stack.origin}/examples/${name}?user=${user}&jwt=${sessionJwt(user)}`);
        // Courier's own <courier-inbox> / <CourierInbox> lists the routed messages.
        await page.getByText("Welcome to the inbox").waitFor({ timeout: 10000 });
        await page.screenshot({ path: join(ARTIFACTS, `example-${name.replace(".html", "")}.png`) });
        assert.match(await page.locator("#status").textContent(), /signed in/i);
        assert.equal(stack.tokenLines(user).length, 1);
        assert.ok(courierOk(user) >= 1);
        assert.deepEqual(courierFailed(user), []);
        assert.deepEqual(errors, []);
      } finally {
        await ctx.close();
      }
    });
  }
});

// The 429 case is short too: a tenant whose rate limit is one token per 2 s.
describe("retries", () => {
  test("429 with Retry-After is honoured, then the token comes", async () => {
    const ctx = await stack.context();
    try {
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "lim", expires: "1h", tenant: "limited" }));
      await firstToken(page);
      // A second request at once: the bucket is empty.
      await page.evaluate(() => {
        window.__session.stop();
        window.__second = window.__session.start();
      });
      await until(() => state(page).then((s) => s.tokens.length >= 2), 10000, "the token after the 429");
      const s = await state(page);
      const codes = s.fetches.map((f) => f.status);
      assert.equal(codes[0], 200);
      assert.equal(codes[1], 429, JSON.stringify(codes));
      assert.equal(codes.at(-1), 200);
      const limited = s.fetches[1];
      const wait = Number(limited.retryAfter) * 1000;
      assert.ok(wait >= 1000, `Retry-After readable by the page: ${limited.retryAfter}`);
      const e = s.errors.find((x) => x.status === 429);
      assert.ok(e && e.retryable && e.code === "rate_limited" && e.retryAfterMs === wait, JSON.stringify(s.errors));
      // No request before Retry-After said.
      assert.ok(s.fetches[2].t0 - limited.t1 >= wait, `retried after ${s.fetches[2].t0 - limited.t1} ms, Retry-After ${wait} ms`);
    } finally {
      await ctx.close();
    }
  });
});

// The long cases run side by side (each ~20 s of a 6-second token's life).
describe("long cases", { concurrency: true }, () => {
  const RUN_MS = 20000;

  test("a 6-second token refreshes before expiry for 20 s; no SDK call fails", async () => {
    const ctx = await stack.context();
    try {
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "rita" }));
      const first = await firstToken(page);
      assert.ok(first.expiresIn >= 0 && first.expiresIn <= 5, JSON.stringify(first)); // 6 s, less a second and the trip
      await sleep(RUN_MS);
      const s = await state(page);
      assert.ok(s.tokens.length >= 5, `tokens in 20 s: ${s.tokens.length}`);
      assert.deepEqual(s.sdkFail, [], sdkFailures(s, "rita"));
      assert.deepEqual(s.errors, []);
      assert.deepEqual(courierFailed("rita"), []);
      assert.ok(courierOk("rita") >= 8, `Courier calls: ${courierOk("rita")}`);
      assert.equal(stack.tokenLines("rita").length, s.tokens.length);
    } finally {
      await ctx.close();
    }
  });

  test("a browser clock an hour ahead or behind changes nothing", async () => {
    const ahead = await stack.context({ skewMs: 3600e3 });
    const behind = await stack.context({ skewMs: -3600e3 });
    try {
      const pa = await ahead.newPage();
      const pb = await behind.newPage();
      await pa.goto(stack.pageUrl({ user: "ahead" }));
      await pb.goto(stack.pageUrl({ user: "behind" }));
      assert.ok((await pa.evaluate(() => Date.now())) - Date.now() > 3500e3, "the skew is in place");
      await Promise.all([firstToken(pa), firstToken(pb)]);
      await sleep(RUN_MS);
      for (const [page, user] of [[pa, "ahead"], [pb, "behind"]]) {
        const s = await state(page);
        // Neither a hot loop (clock ahead: every token looks expired) nor a
        // stall (clock behind: every token looks good for an hour).
        assert.ok(s.tokens.length >= 5 && s.tokens.length <= 10, `${user}: tokens in 20 s: ${s.tokens.length}`);
        assert.deepEqual(s.sdkFail, [], sdkFailures(s, user));
        assert.deepEqual(courierFailed(user), [], user);
      }
    } finally {
      await ahead.close();
      await behind.close();
    }
  });

  test("three windows share each token: one broker request per refresh", async (t) => {
    const ctx = await stack.context();
    try {
      const w1 = await stack.open(ctx, { user: "carol" });
      await firstToken(w1);
      const w2 = await stack.open(ctx, { user: "carol" }, w1);
      const w3 = await stack.open(ctx, { user: "carol" }, w1);
      const windows = [w1, w2, w3];
      for (const w of windows) await firstToken(w);
      for (const w of windows) assert.equal(await w.evaluate(() => document.visibilityState), "visible");
      await sleep(RUN_MS);
      const states = await Promise.all(windows.map(state));
      const requests = stack.tokenLines("carol").length;
      const tokens = new Set(states.flatMap((s) => s.tokens.map((t) => t.token)));
      const fetches = states.reduce((n, s) => n + s.fetches.length, 0);
      t.diagnostic(`three windows: ${requests} broker requests for ${tokens.size} tokens (${tokens.size - 1} refreshes); requests per refresh ${((requests - 1) / Math.max(1, tokens.size - 1)).toFixed(2)}`);
      assert.ok(tokens.size >= 4, `tokens: ${tokens.size}`);
      assert.equal(requests, tokens.size);
      assert.equal(fetches, requests);
      // Every window holds the latest token, and none failed a call.
      const last = states[0].tokens.at(-1).token;
      for (const s of states) {
        assert.equal(s.tokens.at(-1).token, last);
        assert.deepEqual(s.sdkFail, [], sdkFailures(s, "carol"));
      }
      assert.deepEqual(courierFailed("carol"), []);
    } finally {
      await ctx.close();
    }
  });

  test("401 stops the refresh and reaches onError; start() resumes", async () => {
    const ctx = await stack.context();
    try {
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "dave" }));
      await firstToken(page);
      await page.evaluate(() => (window.__credential = "revoked.session.token"));
      const s1 = await until(() => state(page).then((s) => (s.errors.length ? s : null)), 10000, "onError");
      assert.equal(s1.errors[0].status, 401);
      assert.equal(s1.errors[0].code, "unauthenticated");
      assert.equal(s1.errors[0].retryable, false);
      const n = s1.fetches.length;
      await sleep(8000); // past the dead token's expiry: nothing more is asked
      const s2 = await state(page);
      assert.equal(s2.fetches.length, n);
      assert.equal(s2.errors.length, 1);
      await page.evaluate((jwt) => {
        window.__credential = jwt;
        return window.__session.start();
      }, sessionJwt("dave"));
      const s3 = await state(page);
      assert.equal(s3.fetches.length, n + 1);
      assert.equal(s3.fetches.at(-1).status, 200);
      assert.equal(s3.tokens.length, s1.tokens.length + 1);
    } finally {
      await ctx.close();
    }
  });

  test("a hidden page pauses the refresh; visible again, a near-expired token is refreshed at once", async () => {
    const ctx = await stack.context({ hideable: true });
    try {
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "hana" }));
      await firstToken(page);
      await page.evaluate(() => window.__setHidden(true));
      // Counted from here: on a busy machine the refresh can come due (and
      // be sent) between the first token and the page being hidden.
      const s0 = await state(page);
      await sleep(7000); // the refresh came due, and the token expired
      const s1 = await state(page);
      assert.equal(s1.fetches.length, s0.fetches.length, `no request while hidden: ${JSON.stringify(s1.fetches)}`);
      await page.evaluate(() => window.__setHidden(false));
      const s2 = await until(() => state(page).then((s) => (s.tokens.length > s1.tokens.length ? s : null)), 8000, "the refresh on return");
      assert.equal(s2.fetches.length, s1.fetches.length + 1);
      assert.equal(s2.fetches.at(-1).status, 200);
    } finally {
      await ctx.close();
    }
  });

  test("offline pauses the refresh; back online, a near-expired token is refreshed at once", async () => {
    const ctx = await stack.context();
    try {
      const page = await ctx.newPage();
      await page.goto(stack.pageUrl({ user: "olga" }));
      await firstToken(page);
      await ctx.setOffline(true);
      // Counted from here: on a busy machine the refresh can come due (and
      // be sent) between the first token and the page going offline.
      const s0 = await state(page);
      await sleep(7000); // the refresh came due, and the token expired
      const s1 = await state(page);
      assert.equal(s1.fetches.length, s0.fetches.length, `no request while offline: ${JSON.stringify(s1.fetches)}`);
      await ctx.setOffline(false);
      const s2 = await until(() => state(page).then((s) => (s.tokens.length > s1.tokens.length ? s : null)), 8000, "the refresh on return");
      assert.equal(s2.fetches.length, s1.fetches.length + 1);
      assert.equal(s2.fetches.at(-1).status, 200);
    } finally {
      await ctx.close();
    }
  });
});
