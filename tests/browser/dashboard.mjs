// Drives the weir dashboard in a real headless Chromium (Debian's
// /usr/bin/chromium) through playwright-core:
//
//   node tests/browser/dashboard.mjs http://127.0.0.1:PORT/ target/dashboard.png
//
// against a daemon running emoji-stream and clickstream-parquet with their
// generators. Checks that the topology list shows emoji-stream, that its
// consumed count moves, that clicking the 🔥 button three times is
// acknowledged ("sent by you: 3"), and that the live 🔥 total (from the SSE
// stream /emoji/live) rises; that the 15-minute plots of emoji-stream
// (records/s, lag, latency) have axis labels and data points; that the
// topology graph shows both sub-topologies, the store emoji-counts and the
// topics emoji-events and emoji-aggregated from describe(); that every
// emoji carries its name (and, with ?emoji=names, the fallback shows name
// and code point instead of the glyph); that the Parquet panel shows file
// names whole (short form, full name in the title, nothing cut with "…"),
// with dark scrollbars, and that clickstream-parquet's "records out" counts
// the rows written; then saves a 1280x900 screenshot (and a full-page one,
// suffixed -full) and prints a JSON summary on stdout.
// Exit status 0 on success; 1 with a "dashboard test failed: ..." line (and
// a screenshot next to the requested one, suffixed -failure) otherwise.
//
// Run by tests/e2e/dashboard.rs. Setup: `apt-get install chromium` and
// `npm ci --prefix tests/browser` (.ci/run does both).

import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.WEIR_CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
// Bounds a hang of the whole script; each step has its own deadline below.
const OVERALL_MS = 170_000;

const FIRE = "🔥";
const CLICKS = 3;

function fail(message) {
  const err = new Error(message);
  err.expected = true;
  throw err;
}

/** Polls `attempt` (async, returns a value or undefined) until it returns a value; fails naming `what` and the last state. */
async function waitFor(what, timeoutMs, attempt, state) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await attempt();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) {
      const last = state ? await state().catch((e) => `(cannot read the state: ${e.message})`) : "";
      fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? `; last state: ${last}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  if (!url || !screenshot) {
    fail("usage: node dashboard.mjs <dashboard-url> <screenshot.png>");
  }
  if (!existsSync(CHROMIUM)) {
    fail(`${CHROMIUM} is missing: run .ci/run, or apt-get install chromium`);
  }
  mkdirSync(dirname(screenshot), { recursive: true });
  const started = Date.now();
  const pageErrors = [];
  const consoleErrors = [];
  const failedRequests = [];

  // launch() gives the browser a fresh temporary user data dir of its own
  // (and deletes it on close); it also passes --headless by itself.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 60_000 });
  let page, context;
  try {
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("requestfailed", (r) => failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));

    const res = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    if (!res || res.status() !== 200) fail(`GET ${url} answered ${res ? res.status() : "nothing"}`);
    const title = await page.title();

    const byId = (id) => page.getByTestId(id);
    const attr = async (id, name) => byId(id).getAttribute(name, { timeout: 2_000 }).catch(() => null);
    const text = async (id) => byId(id).textContent({ timeout: 2_000 }).catch(() => null);
    const state = async () =>
      JSON.stringify({
        topologies: await page
          .$$eval("[data-testid^='topology-row-']", (rows) => rows.map((r) => r.getAttribute("data-name")))
          .catch(() => null),
        in_total: await attr("in-total-emoji-stream", "data-value"),
        fire_total: await attr(`emoji-total-${FIRE}`, "data-value"),
        updated: await text("updated"),
        emoji_live: await text("emoji-live-status"),
        emoji_error: await text("emoji-error"),
        page_errors: pageErrors,
      });

    // 1. The topology list shows emoji-stream.
    await waitFor("the topology list to show emoji-stream", 20_000, async () =>
      (await byId("topology-row-emoji-stream").count()) > 0 ? true : undefined, state);
    const topologies = await page.$$eval("[data-testid^='topology-row-']", (rows) => rows.map((r) => r.getAttribute("data-name")));

    // 1a. The header says where Kafka is: the daemon's embedded broker.
    await waitFor("the header to show the embedded broker's address", 10_000, async () => {
      const t = (await text("kafka"))?.trim();
      return t && /^Kafka at 127\.0\.0\.1:\d+ \(embedded broker\)$/.test(t) ? t : undefined;
    }, state);

    // 1b. The stream threads card shows its thread running, with its tasks
    // (from /readyz).
    const threadTasks = await waitFor("emoji-stream-thread-0 to run its tasks", 20_000, async () => {
      const st = (await text("thread-state-emoji-stream-thread-0"))?.trim();
      const n = Number((await attr("thread-tasks-emoji-stream-thread-0", "data-value")) ?? NaN);
      return st === "running" && n > 0 ? n : undefined;
    }, state);
    const threadsState = (await text("threads-state"))?.trim();
    if (threadsState !== "ready") fail(`the stream threads card says ${JSON.stringify(threadsState)}, not "ready"`);

    // 2. Its live numbers move: "records in" (and so the in-rate) changes between two reads.
    const inTotal = async () => {
      const v = await attr("in-total-emoji-stream", "data-value");
      return v === null || v === "" ? null : Number(v);
    };
    const in0 = await waitFor('a first "records in" count of emoji-stream', 15_000, async () => (await inTotal()) ?? undefined, state);
    const in1 = await waitFor(`the "records in" count of emoji-stream to change from ${in0}`, 30_000, async () => {
      const v = await inTotal();
      return v !== null && v !== in0 ? v : undefined;
    }, state);
    const rateIn = await waitFor("a records/s in rate for emoji-stream", 15_000, async () => {
      const t = (await text("rate-in-emoji-stream"))?.trim();
      return t && t !== "–" ? t : undefined;
    }, state);

    // 3. Click 🔥 three times; each POST /emoji is acknowledged.
    const emojiPanel = byId("panel-emoji-stream");
    await emojiPanel.waitFor({ state: "visible", timeout: 10_000 }).catch(() => fail("the emoji-stream panel is not shown"));
    const totalOf = async () => Number((await attr(`emoji-total-${FIRE}`, "data-value")) ?? NaN);
    const fireBefore = await totalOf();
    if (!Number.isFinite(fireBefore)) fail(`no live total for ${FIRE} on the page`);
    const button = byId(`emoji-button-${FIRE}`);
    for (let i = 0; i < CLICKS; i++) {
      await button.click({ timeout: 5_000 });
    }
    const sent = await waitFor(`"sent by you" for ${FIRE} to reach ${CLICKS}`, 10_000, async () => {
      const v = Number(await attr(`emoji-sent-${FIRE}`, "data-value"));
      return v >= CLICKS ? v : undefined;
    }, async () => `sent=${await text(`emoji-sent-${FIRE}`)}; ${await state()}`);

    // 4. The live 🔥 total (sum of the SSE windows seen) rises above its value before the clicks.
    const fireAfter = await waitFor(`the live ${FIRE} total to rise above ${fireBefore}`, 20_000, async () => {
      const v = await totalOf();
      return v > fireBefore ? v : undefined;
    }, state);
    const emojiLive = await text("emoji-live-status");

    // 5. The 15-minute plots of emoji-stream: three charts with both axis
    // labels, and data points once two scrapes (2 s apart) have been made.
    await byId("tab-emoji-stream").click({ timeout: 10_000 });
    const chartIds = ["chart-rates", "chart-lag", "chart-latency"];
    const charts = await waitFor("the emoji-stream plots to have data points", 40_000, async () => {
      const got = {};
      for (const id of chartIds) {
        const c = await page.$eval(`[data-testid='${id}']`, (svg) => ({
          topology: svg.getAttribute("data-topology"),
          points: Number(svg.getAttribute("data-points")),
          lines: svg.querySelectorAll("polyline, circle").length,
          x: svg.querySelector(".x-label")?.textContent ?? "",
          y: svg.querySelector(".y-label")?.textContent ?? "",
          ticks: svg.querySelectorAll("text").length,
        })).catch(() => null);
        if (!c || c.topology !== "emoji-stream" || !(c.points >= 1) || c.lines < 1) return undefined;
        got[id] = c;
      }
      return got;
    }, async () => JSON.stringify({ charts_state: await text("charts-state"), ...JSON.parse(await state()) }));
    const wantY = { "chart-rates": /^records\/s$/, "chart-lag": /^records behind$/, "chart-latency": /^(milliseconds|seconds)$/ };
    for (const id of chartIds) {
      if (!/^time \(local; last \d+ min\)$/.test(charts[id].x)) fail(`${id}: x axis label ${JSON.stringify(charts[id].x)}`);
      if (!wantY[id].test(charts[id].y)) fail(`${id}: y axis label ${JSON.stringify(charts[id].y)}`);
      if (charts[id].ticks < 6) fail(`${id}: only ${charts[id].ticks} texts (title, ticks, labels)`);
    }

    // 6. The topology graph of emoji-stream, from describe().
    const graph = await waitFor("the emoji-stream topology graph", 10_000, async () =>
      page.$eval("[data-testid='graph-svg']", (svg) => ({
        topology: svg.getAttribute("data-topology"),
        subtopologies: Array.from(svg.querySelectorAll(".sub-title")).map((t) => t.textContent),
        stores: Array.from(svg.querySelectorAll("[data-kind='store']")).map((n) => n.getAttribute("data-name")),
        topics: Array.from(svg.querySelectorAll("[data-kind='topic']")).map((n) => n.getAttribute("data-name")),
        processors: svg.querySelectorAll("[data-kind='processor']").length,
        edges: svg.querySelectorAll(".edge").length,
        text: svg.textContent,
      })).then((g) => (g.topology === "emoji-stream" ? g : undefined), () => undefined), state);
    for (const sub of ["Sub-topology 0", "Sub-topology 1"]) {
      if (!graph.subtopologies.includes(sub)) fail(`the graph has no ${sub}: ${JSON.stringify(graph.subtopologies)}`);
    }
    if (!graph.stores.includes("emoji-counts") || !graph.text.includes("emoji-counts")) fail(`no store emoji-counts in the graph: ${JSON.stringify(graph.stores)}`);
    for (const topic of ["emoji-events", "emoji-aggregated", "emoji-stream-emoji-counts-repartition"]) {
      if (!graph.topics.includes(topic) || !graph.text.includes(topic)) fail(`no topic ${topic} in the graph: ${JSON.stringify(graph.topics)}`);
    }
    if (graph.processors < 3 || graph.edges < 5) fail(`a thin graph: ${graph.processors} processors, ${graph.edges} edges`);

    // 7. Every emoji button is labelled with the emoji's name, readable
    // without an emoji font.
    const labels = await page.$$eval("[data-testid^='emoji-label-']", (els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute("data-testid").slice("emoji-label-".length), e.textContent])));
    const wantLabels = { "🔥": "fire", "👍": "thumbs up", "❤️": "red heart", "😂": "tears of joy", "😮": "open mouth", "🎉": "party popper" };
    for (const [e, name] of Object.entries(wantLabels)) {
      if (labels[e] !== name) fail(`the label of ${e} is ${JSON.stringify(labels[e])}, not ${JSON.stringify(name)}`);
    }
    const fireTitle = await attr(`emoji-button-${FIRE}`, "title");
    if (!fireTitle || !fireTitle.includes("fire") || !fireTitle.includes("U+1F525")) fail(`the 🔥 button's tooltip is ${JSON.stringify(fireTitle)}`);

    // 8. The Parquet panel: whole names (a short form; the full name in
    // the title), dark scrollbars, and rows written counted as records out.
    const parquet = await waitFor("a Parquet file in the panel", 45_000, async () => {
      const files = await page.$$eval("[data-testid='parquet-file-name']", (cells) => cells.map((c) => ({
        text: c.textContent, title: c.getAttribute("title"), name: c.getAttribute("data-name"),
        clipped: c.scrollWidth > c.clientWidth + 1,
      })));
      return files.length ? files : undefined;
    }, state);
    for (const f of parquet) {
      const m = /^p(\d+)-(\d{20})-(\d{20})\.parquet$/.exec(f.title || "");
      if (!m || f.name !== f.title) fail(`a Parquet file cell without its full name as title: ${JSON.stringify(f)}`);
      const want = `p${Number(m[1])} · ${Number(m[2]).toLocaleString("en-US")}–${Number(m[3]).toLocaleString("en-US")}`;
      if (f.text !== want || f.text.includes("…") || f.clipped) fail(`Parquet file ${f.title} is shown as ${JSON.stringify(f.text)}, not ${JSON.stringify(want)}`);
    }
    const scrollbar = await page.$eval("#panel-clickstream-parquet .scroll", (el) => getComputedStyle(el).scrollbarColor);
    if (!scrollbar || scrollbar === "auto") fail(`the Parquet list's scrollbar is not styled (scrollbar-color ${scrollbar})`);
    const parquetOut = await waitFor("clickstream-parquet's records out to count rows written", 20_000, async () => {
      const v = Number(await attr("out-total-clickstream-parquet", "data-value"));
      return v > 0 ? v : undefined;
    }, state);

    // 9. Without an emoji font (forced with ?emoji=names), each emoji is
    // shown by name and code point instead of a glyph.
    const fallbackPage = await context.newPage();
    fallbackPage.on("pageerror", (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));
    await fallbackPage.goto(url + "?emoji=names", { waitUntil: "load", timeout: 30_000 });
    const fallback = await waitFor("the fallback emoji buttons", 10_000, async () =>
      fallbackPage.getByTestId(`emoji-button-${FIRE}`).evaluate((b) => ({
        text: b.textContent, fallback: b.querySelector("[data-fallback]") !== null,
      }), { timeout: 2_000 }).catch(() => undefined), state);
    if (!fallback.fallback || fallback.text !== "fireU+1F525") fail(`the fallback 🔥 button shows ${JSON.stringify(fallback)}`);
    await fallbackPage.close();

    if (pageErrors.length) fail(`the page threw: ${pageErrors.join(" | ")}`);

    // Let the bars' transitions settle so the picture shows the numbers.
    await page.waitForTimeout(600);
    await page.screenshot({ path: screenshot, fullPage: false });
    const fullScreenshot = screenshot.replace(/(\.png)?$/, "-full.png");
    await page.screenshot({ path: fullScreenshot, fullPage: true });

    const summary = {
      ok: true,
      url,
      title,
      topologies,
      records_in: [in0, in1],
      rate_in: rateIn,
      thread_tasks: threadTasks,
      fire: { before: fireBefore, after: fireAfter, sent },
      emoji_live: emojiLive,
      charts,
      graph: { subtopologies: graph.subtopologies, stores: graph.stores, topics: graph.topics, processors: graph.processors, edges: graph.edges },
      emoji_labels: labels,
      emoji_fallback: fallback,
      parquet_files: parquet.length,
      parquet_records_out: parquetOut,
      full_screenshot: fullScreenshot,
      console_errors: consoleErrors,
      failed_requests: failedRequests,
      screenshot,
      elapsed_ms: Date.now() - started,
    };
    console.log(JSON.stringify(summary, null, 2));
  } catch (e) {
    if (page) {
      const failure = screenshot.replace(/(\.png)?$/, "-failure.png");
      await page.screenshot({ path: failure }).then(() => console.error(`failure screenshot: ${failure}`), () => {});
    }
    if (consoleErrors.length) console.error(`console errors: ${JSON.stringify(consoleErrors)}`);
    if (failedRequests.length) console.error(`failed requests: ${JSON.stringify(failedRequests)}`);
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
}

const guard = setTimeout(() => {
  console.error(`dashboard test failed: no result after ${OVERALL_MS / 1000} s`);
  process.exit(1);
}, OVERALL_MS);
guard.unref();

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`dashboard test failed: ${e && e.expected ? e.message : e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
