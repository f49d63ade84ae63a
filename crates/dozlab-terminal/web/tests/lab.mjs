// Real-browser check of the lab panel (Debian's Chromium via playwright-core):
// a hostile intro (script tags, onerror handlers, javascript: links, forged
// action attributes) runs nothing and cannot read the session cookie; the
// learner goes Next, copies a {{copy}} block and a plain inline code span (a
// {{}} span copies nothing), clicks an {{exec}} block (typed into the shell),
// presses Check, sees the pass, reloads and still sees the progress.
// Usage: node lab.mjs URL PASSWORD SCREENSHOT.png
import { args, launch, waitFor, assert } from './chromium.mjs';

const { url, password, shot } = args('lab.mjs');
const browser = await launch({ width: 1366, height: 768 });
const { context } = browser;

let failed = false;
let page;
try {
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { console.error('page error:', e.message); failed = true; });
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await page.goto(url);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('.xterm');
  await waitFor('status "connected"', async () => (await page.textContent('#status-text')) === 'connected');
  await page.waitForSelector('#lab-panel:not([hidden]) .lab-body');

  // The hostile intro: nothing ran, nothing dangerous is in the DOM.
  const intro = await page.evaluate(() => {
    const body = document.querySelector('#lab-panel .lab-body');
    return {
      html: body.innerHTML,
      pwned: window.pwned,
      cookie: document.cookie,
      scripts: body.querySelectorAll('script, iframe, object, embed, form').length,
      handlers: [...body.querySelectorAll('*')].flatMap((n) => [...n.attributes].map((a) => a.name)).filter((a) => a.startsWith('on')),
      jsLinks: [...body.querySelectorAll('[href],[src]')].map((n) => n.getAttribute('href') || n.getAttribute('src')).filter((u) => /^\s*javascript:/i.test(u)),
      forged: body.querySelectorAll('[data-lab-action],[data-lab-index]').length,
    };
  });
  assert(intro.html.includes('Hostile intro'), `the intro is shown: ${intro.html}`);
  assert(intro.pwned === undefined, `no lab script ran (window.pwned = ${intro.pwned})`);
  assert(intro.cookie === '', `the session cookie is not readable from the page: ${intro.cookie}`);
  assert(intro.scripts === 0, 'no script/iframe/object/form elements');
  assert(intro.handlers.length === 0, `no event handler attributes: ${intro.handlers}`);
  assert(intro.jsLinks.length === 0, `no javascript: URLs: ${intro.jsLinks}`);
  assert(intro.forged === 0, 'forged data-lab attributes were dropped');
  // Clicking what the lab offers does nothing harmful either.
  for (const a of await page.$$('#lab-panel .lab-body a, #lab-panel .lab-body img')) await a.click().catch(() => {});
  await page.waitForTimeout(300);
  assert(await page.evaluate(() => window.pwned) === undefined, 'clicks ran no lab script');
  assert(dialogs.length === 0, `no dialogs: ${dialogs}`);
  assert(page.url().startsWith(url), `still on the page: ${page.url()}`);

  // Next → step 1, click the {{exec}} block, Check until it passes.
  await page.click('#lab-next');
  await page.waitForSelector('#lab-panel pre.lab-exec');
  assert(await page.isDisabled('#lab-next'), 'Next is locked before the check passes');

  // {{copy}} and a plain inline code span copy on click; {{}} does not.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(url).origin });
  const clip = () => page.evaluate(() => navigator.clipboard.readText());
  const copies = await page.$$eval('#lab-panel .lab-body .lab-copy', (ns) => ns.map((n) => n.textContent));
  assert(JSON.stringify(copies) === JSON.stringify(['echo block-copy', 'plain-inline']),
    `the copy actions are the {{copy}} block and the plain span: ${copies}`);
  for (const text of copies) {
    await page.click(`#lab-panel .lab-body .lab-copy:text-is("${text}")`);
    await waitFor(`"${text}" on the clipboard`, async () => (await clip()) === text, 5000);
  }
  const noCopy = await page.$('#lab-panel .lab-body code:text-is("no-copy")');
  assert(noCopy, 'the {{}} span is shown');
  assert(await noCopy.getAttribute('data-lab-action') === null, 'the {{}} span has no action');
  await noCopy.click();
  await page.waitForTimeout(200);
  assert((await clip()) === 'plain-inline', 'clicking the {{}} span copied nothing');
  await page.click('#lab-panel pre.lab-exec');
  let passed = false;
  for (let i = 0; i < 30 && !passed; i++) {
    await page.click('#lab-check');
    await waitFor('a check result', async () => {
      const c = await page.getAttribute('#lab-result', 'class');
      return c === 'pass' || c === 'fail';
    });
    passed = (await page.getAttribute('#lab-result', 'class')) === 'pass';
    if (!passed) await page.waitForTimeout(300);
  }
  assert(passed, `the check passed: ${await page.textContent('#lab-result')}`);
  assert(!(await page.isDisabled('#lab-next')), 'Next is unlocked after the pass');

  // Reload: the progress comes back from the server.
  await page.reload();
  await page.waitForSelector('#lab-panel:not([hidden]) .lab-body');
  await waitFor('the saved progress', async () => page.evaluate(() => {
    const cur = document.querySelector('.lab-steps li.current');
    return cur && cur.dataset.page === '1' && cur.classList.contains('done')
      && document.getElementById('lab-result').className === 'pass';
  }));
  await page.screenshot({ path: shot });
  console.log(`browser: hostile intro inert, copy actions copied, exec clicked, check passed, progress kept after reload; screenshot ${shot}`);
} catch (e) {
  console.error(`lab browser test failed: ${e.message}`);
  if (page) console.error(`at ${page.url()}: ${(await page.content()).slice(0, 2000)}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
