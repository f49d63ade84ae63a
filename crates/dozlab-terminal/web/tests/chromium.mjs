// What the real-browser checks share: their arguments, Debian's Chromium
// launched headless through playwright-core (no browser download) in a
// throwaway profile, polling and assertions, and the run's end (screenshot
// directory, profile removed, exit status).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

// URL PASSWORD SCREENSHOT from the command line; exits 2 when one is missing.
export function args(script) {
  const [url, password, shot] = process.argv.slice(2);
  if (!url || !password || !shot) {
    console.error(`usage: node ${script} URL PASSWORD SCREENSHOT.png`);
    process.exit(2);
  }
  mkdirSync(dirname(shot), { recursive: true });
  return { url, password, shot };
}

// A headless Chromium with a fresh profile; `close()` also removes the profile.
export async function launch(viewport) {
  const profile = mkdtempSync(join(tmpdir(), 'dozlab-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function waitFor(what, check, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}
