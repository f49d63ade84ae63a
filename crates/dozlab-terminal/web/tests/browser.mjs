// Real-browser check of the terminal page: Debian's Chromium, headless, driven
// by playwright-core (no browser download). Logs in, types `echo hello`,
// waits for a line that is exactly `hello`, opens a second tab, and saves a
// screenshot. Usage: node browser.mjs URL PASSWORD SCREENSHOT.png
import { args, launch, waitFor } from './chromium.mjs';

const { url, password, shot } = args('browser.mjs');
const browser = await launch({ width: 1000, height: 600 });
const { context } = browser;

function screenLines(page) {
  return page.evaluate(() => {
    const buf = window.dozlab.active.term.buffer.active;
    const out = [];
    for (let i = 0; i < buf.length; i++) out.push(buf.getLine(i).translateToString(true));
    return out;
  });
}

let failed = false;
let page;
try {
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { console.error('page error:', e.message); failed = true; });
  await page.goto(url);
  await page.fill('#password', 'wrong');
  await page.click('button[type=submit]');
  await page.waitForSelector('.error');
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('.xterm');
  await waitFor('status "connected"', async () => (await page.textContent('#status-text')) === 'connected');
  await page.click('.xterm');
  await page.keyboard.type('echo hello\n');
  await waitFor('a line "hello"', async () => (await screenLines(page)).some((l) => l.trim() === 'hello'));
  // A second tab is a second shell.
  await page.click('#new-tab');
  await waitFor('two connected tabs', async () => (await page.$$('.tab')).length === 2
    && (await page.textContent('#status-text')) === 'connected');
  await page.click('.tab >> nth=0');
  await page.screenshot({ path: shot });
  console.log(`browser: logged in, saw "hello", screenshot ${shot}`);
} catch (e) {
  console.error(`browser test failed: ${e.message}`);
  if (page) console.error(`at ${page.url()}: ${(await page.content()).slice(0, 1500)}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
