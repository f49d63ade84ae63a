// The lab panel beside the terminal: the current page's sanitised HTML (from
// GET /api/lab), its actions wired by data attributes only (the DOM never
// carries a command: data-lab-index indexes the page's `actions` list),
// "Check" (POST /api/lab/check), "Next" once the check passed, the step list
// with progress, and a draggable, collapsible divider. Progress lives on the
// server; a reload shows it again.
import './lab.css';

const WIDTH_KEY = 'dozlab-lab-width';
const encoder = new TextEncoder();

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...children);
  return e;
}

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

export class LabPanel {
  constructor(app, root, divider, data) {
    this.app = app;
    this.root = root;
    this.divider = divider;
    this.lab = data.lab;
    this.progress = data.progress;
    this.result = null;
    this.build();
    this.render();
    this.startPage(this.progress.current);
    this.watchSetup();
  }

  // While the server sets the lab up in the VM (--lab-prepare), a banner says
  // so; it is polled until done or failed.
  showSetup() {
    const s = this.progress.setup || { state: 'none' };
    const text = {
      waiting: 'Setting the lab up: waiting for your machine…',
      running: 'Setting the lab up in your machine…',
      failed: `The lab could not be set up: ${s.message || ''}`,
    }[s.state];
    this.setupBox.hidden = !text;
    this.setupBox.className = s.state === 'failed' ? 'fail' : 'running';
    this.setupBox.textContent = text || '';
    return s.state === 'waiting' || s.state === 'running';
  }

  async watchSetup() {
    while (this.showSetup()) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const res = await fetch('/api/lab', { cache: 'no-store' });
        if (res.ok) this.progress.setup = (await res.json()).progress.setup;
      } catch (e) { /* the next poll tries again */ }
    }
  }

  build() {
    this.root.hidden = false;
    this.divider.hidden = false;
    const saved = Number(localStorage.getItem(WIDTH_KEY));
    if (saved > 120) this.root.style.width = `${saved}px`;
    this.title = el('h1', { className: 'lab-title', textContent: this.lab.title });
    this.steps = el('ol', { className: 'lab-steps' });
    this.body = el('article', { className: 'lab-body' });
    this.check = el('button', { id: 'lab-check', textContent: 'Check' });
    this.prev = el('button', { id: 'lab-prev', textContent: 'Back' });
    this.next = el('button', { id: 'lab-next', textContent: 'Next' });
    this.resultBox = el('div', { id: 'lab-result', role: 'status' });
    this.setupBox = el('div', { id: 'lab-setup', role: 'status', hidden: true });
    const nav = el('div', { className: 'lab-nav' }, this.prev, this.check, this.next);
    this.root.append(this.title, this.setupBox, this.steps, this.body, this.resultBox, nav);
    this.check.addEventListener('click', () => this.runCheck());
    this.next.addEventListener('click', () => this.goto(this.progress.current + 1));
    this.prev.addEventListener('click', () => this.goto(this.progress.current - 1));
    this.body.addEventListener('click', (e) => this.onAction(e));
    this.divider.addEventListener('pointerdown', (e) => this.drag(e));
    this.divider.addEventListener('dblclick', () => this.toggle());
    document.getElementById('lab-toggle')?.addEventListener('click', () => this.toggle());
  }

  page() {
    return this.lab.pages[this.progress.current];
  }

  render() {
    const cur = this.progress.current;
    this.steps.replaceChildren(...this.lab.pages.map((p, i) => {
      const done = this.progress.passed.includes(i);
      const locked = i >= this.progress.unlocked;
      const li = el('li', {
        className: `${i === cur ? 'current' : ''} ${done ? 'done' : ''} ${locked ? 'locked' : ''}`,
        textContent: `${done ? '✓ ' : ''}${p.title || p.id.kind}`,
        title: locked ? 'pass the check before it first' : '',
      });
      li.dataset.page = String(i);
      if (!locked) li.addEventListener('click', () => this.goto(i));
      return li;
    }));
    const page = this.page();
    // Sanitised by the server (dozlab-lab); never built from strings here.
    this.body.innerHTML = page.html;
    for (const node of this.body.querySelectorAll('[data-lab-action]')) {
      node.classList.add(`lab-${node.dataset.labAction}`);
      node.title = node.dataset.labAction === 'copy' ? 'click to copy' : 'click to run in the terminal';
    }
    this.body.scrollTop = 0;
    const passed = this.progress.passed.includes(cur);
    this.check.hidden = !page.has_verify;
    this.prev.disabled = cur === 0;
    this.next.hidden = cur >= this.lab.pages.length - 1;
    this.next.disabled = cur + 1 >= this.progress.unlocked;
    this.resultBox.replaceChildren();
    this.resultBox.className = '';
    if (page.has_verify && passed) this.showResult({ passed: true, message: 'passed' });
  }

  showResult(r) {
    this.resultBox.className = r.passed ? 'pass' : 'fail';
    const head = el('strong', { textContent: r.passed ? '✓ Check passed' : `✗ ${r.message}` });
    const parts = [head];
    if (!r.passed && r.output) parts.push(el('pre', { className: 'lab-output', textContent: r.output }));
    this.resultBox.replaceChildren(...parts);
  }

  async runCheck() {
    const page = this.progress.current;
    this.check.disabled = true;
    this.resultBox.className = 'running';
    this.resultBox.textContent = 'checking…';
    try {
      const r = await post('/api/lab/check', { page });
      this.progress = r.progress;
      if (this.progress.current !== page) return;
      this.render();
      this.showResult(r.result);
    } catch (e) {
      this.showResult({ passed: false, message: e.message });
    } finally {
      this.check.disabled = false;
    }
  }

  async goto(i) {
    if (i < 0 || i >= this.lab.pages.length) return;
    const first = !this.progress.started.includes(i);
    try {
      this.progress = await post('/api/lab/goto', { page: i });
      this.render();
      if (first) this.startPage(i, true);
    } catch (e) {
      this.showResult({ passed: false, message: e.message });
    }
  }

  // Types a page's foreground script into the terminal the first time it shows.
  startPage(i, fresh) {
    const p = this.lab.pages[i];
    if (!p.foreground) return;
    if (!fresh && this.progress.started.includes(i)) return;
    if (!fresh) post('/api/lab/goto', { page: i }).then((pr) => { this.progress = pr; }).catch(() => {});
    this.type(p.foreground.endsWith('\n') ? p.foreground : `${p.foreground}\n`, false);
  }

  onAction(e) {
    const node = e.target.closest('[data-lab-index]');
    if (!node || !this.body.contains(node)) return;
    const action = this.page().actions[Number(node.dataset.labIndex)];
    if (!action) return;
    if (action.kind === 'copy') {
      navigator.clipboard?.writeText(action.text).catch(() => {});
      node.classList.add('copied');
      setTimeout(() => node.classList.remove('copied'), 800);
      return;
    }
    this.type(`${action.text}\r`, action.kind === 'exec-interrupt');
    node.classList.add('ran');
  }

  // Sends text to the active shell as if typed.
  type(text, interrupt) {
    const tab = this.app.active;
    if (!tab) return;
    if (interrupt) tab.input(encoder.encode('\x03'));
    tab.input(encoder.encode(text.replace(/\r?\n/g, '\r')));
    tab.term.focus();
  }

  drag(e) {
    e.preventDefault();
    this.divider.setPointerCapture(e.pointerId);
    const move = (ev) => {
      const w = Math.max(200, Math.min(window.innerWidth - 200, ev.clientX));
      this.root.style.width = `${w}px`;
      this.root.classList.remove('collapsed');
    };
    const up = () => {
      this.divider.removeEventListener('pointermove', move);
      localStorage.setItem(WIDTH_KEY, String(this.root.getBoundingClientRect().width));
      window.dispatchEvent(new Event('resize'));
    };
    this.divider.addEventListener('pointermove', move);
    this.divider.addEventListener('pointerup', up, { once: true });
  }

  toggle() {
    this.root.classList.toggle('collapsed');
    window.dispatchEvent(new Event('resize'));
  }
}

// Shows the panel when the terminal serves a lab (GET /api/lab answers 200).
export async function mountLab(app) {
  const root = document.getElementById('lab-panel');
  const divider = document.getElementById('lab-divider');
  if (!root || !divider) return null;
  const res = await fetch('/api/lab');
  if (!res.ok) return null;
  const panel = new LabPanel(app, root, divider, await res.json());
  window.dispatchEvent(new Event('resize'));
  return panel;
}
