'use strict';
// Preloaded into the load generator (`node -r bench/ws_headers_shim.js loadgen.js ...`) so
// loadgen.js stays as every earlier figure was measured with: wraps `require('ws')`'s WebSocket constructor to add the
// handshake headers the gateway's policy path needs (the loadgen's `ws` client sends none).
//   BENCH_COOKIE  a whole Cookie header value, e.g. "gateway_session=v1.k0...."
//   BENCH_ORIGIN  an Origin header value, e.g. "https://bench.example"
// With neither set, `ws` is returned unchanged. The loadgen's --raw clients write their own
// handshake on a bare socket: with BENCH_RAW_HEADERS=1 as well, the same headers are added to
// that handshake (a socket write that is a whole `GET ... Sec-WebSocket-Key` request head),
// so a raw-client run can take the gateway's policy path too.
const Module = require('module');
const net = require('net');

const extra = {};
if (process.env.BENCH_COOKIE) extra.Cookie = process.env.BENCH_COOKIE;
if (process.env.BENCH_ORIGIN) extra.Origin = process.env.BENCH_ORIGIN;

if (Object.keys(extra).length) {
  const load = Module._load;
  const wrapped = new WeakMap();
  Module._load = function loadWithHeaders(request, ...rest) {
    const mod = load.call(this, request, ...rest);
    if (request !== 'ws' || typeof mod !== 'function') return mod;
    if (!wrapped.has(mod)) wrapped.set(mod, wrap(mod));
    return wrapped.get(mod);
  };
}

if (Object.keys(extra).length && process.env.BENCH_RAW_HEADERS === '1') {
  const lines = Object.entries(extra).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  const write = net.Socket.prototype.write;
  net.Socket.prototype.write = function writeWithHeaders(chunk, ...rest) {
    if (typeof chunk === 'string' && chunk.startsWith('GET ') && chunk.endsWith('\r\n\r\n') &&
        chunk.includes('\r\nSec-WebSocket-Key: ')) {
      chunk = chunk.slice(0, -2) + lines + '\r\n';
    }
    return write.call(this, chunk, ...rest);
  };
}

function wrap(WebSocket) {
  class WebSocketWithHeaders extends WebSocket {
    constructor(address, protocols, options) {
      if (protocols !== null && typeof protocols === 'object' && !Array.isArray(protocols)) {
        options = protocols;
        protocols = undefined;
      }
      const opts = { ...(options || {}) };
      opts.headers = { ...extra, ...(opts.headers || {}) };
      super(address, protocols, opts);
    }
  }
  return WebSocketWithHeaders;
}
