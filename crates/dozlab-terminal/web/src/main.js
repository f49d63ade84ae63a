// The Dozlab web terminal page: tabs of xterm.js terminals, each bridged to a
// shell in the VM over the WebSocket protocol described in docs/terminal.md.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { SearchAddon } from '@xterm/addon-search';
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { mountLab } from './lab.js';

const MAX_SEND = 16 * 1024; // below the server's --max-frame-bytes default
const STORE = 'dozlab-terminal-shells';
const encoder = new TextEncoder();

const STATUS_TEXT = {
  'vm-starting': 'VM starting…',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  error: 'error',
  exited: 'shell ended',
};

class Tab {
  constructor(app, shell) {
    this.app = app;
    this.shell = shell || null;
    this.offset = 0; // output bytes received so far: sent back on re-attach
    this.pending = []; // keystrokes typed while disconnected
    this.ended = false;
    this.ws = null;
    this.backoff = 500;
    this.state = 'connecting';
    this.message = '';

    this.pane = document.createElement('div');
    this.pane.className = 'pane';
    app.panes.appendChild(this.pane);
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 10000,
      theme: { background: '#1e1f29' },
    });
    this.fit = new FitAddon();
    this.search = new SearchAddon();
    this.term.loadAddon(this.fit);
    this.term.loadAddon(this.search);
    this.term.loadAddon(new WebLinksAddon());
    this.term.open(this.pane);
    this.term.onData((d) => this.input(encoder.encode(d)));
    this.term.onBinary((d) => this.input(Uint8Array.from(d, (c) => c.charCodeAt(0))));
    this.term.onResize(({ cols, rows }) => this.control({ type: 'resize', cols, rows }));
    this.term.attachCustomKeyEventHandler((e) => app.shortcut(e, this));

    this.button = document.createElement('div');
    this.button.className = 'tab';
    this.label = document.createElement('span');
    const close = document.createElement('span');
    close.className = 'close';
    close.textContent = '×';
    close.title = 'Close this shell';
    close.onclick = (e) => { e.stopPropagation(); app.close(this); };
    this.button.append(this.label, close);
    this.button.onclick = () => app.activate(this);
    app.tabs.appendChild(this.button);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = this.shell
      ? `shell=${encodeURIComponent(this.shell)}&offset=${this.offset}`
      : `cols=${this.term.cols}&rows=${this.term.rows}`;
    return `${proto}://${location.host}/ws?${q}`;
  }

  connect() {
    const ws = new WebSocket(this.url());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        this.onControl(JSON.parse(ev.data));
      } else {
        const bytes = new Uint8Array(ev.data);
        this.offset += bytes.length;
        this.term.write(bytes);
      }
    };
    ws.onclose = (ev) => this.onClose(ev);
  }

  onControl(m) {
    switch (m.type) {
      case 'attached':
        if (m.skipped > 0) this.term.write(`\r\n\x1b[33m[${m.skipped} bytes of output were no longer buffered]\x1b[0m\r\n`);
        this.shell = m.shell;
        this.offset = m.offset;
        this.backoff = 500;
        this.app.save();
        this.resize();
        for (const p of this.pending.splice(0)) this.ws.send(p);
        break;
      case 'status':
        this.setStatus(m.state, m.message);
        break;
      case 'exit':
        this.ended = true;
        this.setStatus('exited', `shell ended (${m.reason}${m.code != null ? `, status ${m.code}` : ''})`);
        this.term.write(`\r\n\x1b[2m[shell ended: ${m.reason}]\x1b[0m\r\n`);
        this.app.save();
        break;
      case 'error':
        this.setStatus('error', m.message);
        break;
      default:
        break;
    }
  }

  onClose(ev) {
    this.ws = null;
    if (this.ended || this.closed) return;
    if (ev.code === 4404) {
      this.ended = true;
      this.setStatus('exited', 'this shell is gone (it ended while you were away)');
      this.app.save();
      return;
    }
    if (ev.code === 4000) {
      // Taken over by another tab: do not fight over the shell.
      this.takenOver = true;
      this.setStatus('error', 'taken over in another tab (reload to take it back)');
      return;
    }
    if (ev.code === 4001) {
      this.setStatus('error', 'logged out');
      location.assign('/');
      return;
    }
    if (ev.code === 1009) this.term.write('\r\n\x1b[31m[message too large]\x1b[0m\r\n');
    if (ev.code !== 1013) this.setStatus('reconnecting', 'reconnecting…');
    setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  input(bytes) {
    for (let i = 0; i < bytes.length; i += MAX_SEND) {
      const chunk = bytes.subarray(i, i + MAX_SEND);
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'connected') this.ws.send(chunk);
      else if (!this.ended) this.pending.push(chunk);
    }
  }

  control(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  resize() {
    if (this.pane.classList.contains('active')) this.fit.fit();
    this.control({ type: 'resize', cols: this.term.cols, rows: this.term.rows });
  }

  setStatus(state, message) {
    this.state = state;
    this.message = message;
    this.label.textContent = `${this.app.list.indexOf(this) + 1}${state === 'connected' ? '' : ' ·'}`;
    if (this.app.active === this) this.app.showStatus(this);
  }
}

class App {
  constructor() {
    this.tabs = document.getElementById('tabs');
    this.panes = document.getElementById('panes');
    this.status = document.getElementById('status');
    this.statusText = document.getElementById('status-text');
    this.searchBox = document.getElementById('search');
    this.list = [];
    this.active = null;
    document.getElementById('new-tab').onclick = () => this.open();
    document.getElementById('upload').onclick = () => document.getElementById('upload-file').click();
    document.getElementById('upload-file').onchange = (e) => this.upload(e.target);
    document.getElementById('download').onclick = () => this.download();
    this.searchBox.onkeydown = (e) => {
      if (e.key === 'Enter' && this.active) this.active.search.findNext(this.searchBox.value);
      if (e.key === 'Escape') { this.searchBox.hidden = true; this.active?.term.focus(); }
    };
    window.addEventListener('resize', () => this.active?.resize());
    setInterval(() => this.list.forEach((t) => t.control({ type: 'ping' })), 30000);
    let saved = [];
    try { saved = JSON.parse(sessionStorage.getItem(STORE) || '[]'); } catch { saved = []; }
    if (saved.length) saved.forEach((id) => this.open(id));
    else this.open();
  }

  open(shell) {
    const tab = new Tab(this, shell);
    this.list.push(tab);
    this.activate(tab);
    tab.setStatus('connecting', 'connecting…');
    tab.connect();
    return tab;
  }

  activate(tab) {
    for (const t of this.list) {
      t.pane.classList.toggle('active', t === tab);
      t.button.classList.toggle('active', t === tab);
    }
    this.active = tab;
    tab.fit.fit();
    tab.term.focus();
    this.showStatus(tab);
  }

  close(tab) {
    tab.closed = true;
    if (!tab.ended) tab.control({ type: 'close' });
    tab.ws?.close();
    tab.term.dispose();
    tab.pane.remove();
    tab.button.remove();
    this.list = this.list.filter((t) => t !== tab);
    this.save();
    if (this.active === tab) {
      if (this.list.length) this.activate(this.list[this.list.length - 1]);
      else this.open();
    }
  }

  save() {
    const ids = this.list.filter((t) => t.shell && !t.ended).map((t) => t.shell);
    sessionStorage.setItem(STORE, JSON.stringify(ids));
  }

  showStatus(tab) {
    this.status.className = tab.state;
    const base = STATUS_TEXT[tab.state] || tab.state;
    const detail = tab.message && tab.message !== base && tab.state !== 'connected' ? ` — ${tab.message}` : '';
    this.statusText.textContent = `${base}${detail}`;
  }

  flash(text) {
    this.statusText.textContent = text;
    setTimeout(() => this.active && this.showStatus(this.active), 4000);
  }

  shortcut(e, tab) {
    if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
    switch (e.key.toUpperCase()) {
      case 'C':
        if (tab.term.hasSelection()) navigator.clipboard?.writeText(tab.term.getSelection());
        return false;
      case 'V':
        return false; // the browser pastes into the terminal
      case 'T':
        this.open();
        return false;
      case 'F':
        this.searchBox.hidden = false;
        this.searchBox.focus();
        return false;
      default:
        return true;
    }
  }

  async upload(input) {
    const file = input.files[0];
    input.value = '';
    if (!file) return;
    this.flash(`uploading ${file.name}…`);
    const res = await fetch(`/upload?name=${encodeURIComponent(file.name)}`, { method: 'POST', body: file });
    this.flash(res.ok ? `uploaded ${file.name} to the home directory` : `upload failed: ${(await res.text()).trim()}`);
  }

  download() {
    const path = prompt('File to download (relative to the home directory):');
    if (path) window.location.href = `/download?path=${encodeURIComponent(path)}`;
  }
}

window.addEventListener('DOMContentLoaded', () => {
  window.dozlab = new App();
  mountLab(window.dozlab).then((lab) => { window.dozlab.lab = lab; });
});
