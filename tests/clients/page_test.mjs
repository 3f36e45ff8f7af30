// The page at GET / in a real browser (Debian's headless Chromium, driven by playwright-core):
// type a prompt, press Send, and see tokens stream in and the speed reported.
// Run through run_with_server.sh. ULTRASERVE_SCREENSHOT=file.png keeps a screenshot.
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = 0;
try {
  const page = await browser.newPage();
  await page.goto(process.env.ULTRASERVE_URL + "/");
  await page.fill("#prompt", "translate to French: the house is red");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("#output").textContent.length > 0, null, { timeout: 20000 });
  await page.waitForFunction(() => /tokens\/s/.test(document.querySelector("#stats").textContent), null, { timeout: 20000 });
  const stats = await page.textContent("#stats");
  console.log("page stats:", stats.trim());
  if (process.env.ULTRASERVE_SCREENSHOT) await page.screenshot({ path: process.env.ULTRASERVE_SCREENSHOT });
} catch (e) {
  failed = 1;
  console.log("FAIL page streaming:", e.message);
} finally {
  await browser.close();
}
console.log(`${1 - failed} passed, ${failed} failed`);
process.exit(failed);
