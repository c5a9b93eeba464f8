'use strict';
// Baseline 3: Node's `ws` (the npm package the load generator uses, from bench/loadgen) with
// the benchmark's two paths, written the way its README shows:
//   /echo       every message sent back (text as text, binary as binary)
//   /broadcast  every message sent to every open connection of the path (`client.send` to
//               each: written to its socket buffer without waiting, as `ws` always does)
// Compression off (the `ws` default), maxPayload 2 MiB (the large scenario echoes 1 MiB);
// any other path gets its socket destroyed. Everything else is the library's default.
//
//   node bench/baselines/node_ws_server.js --listen 127.0.0.1:0     (cwd: bench/loadgen)
//
// logs `listening on http://HOST:PORT` on stderr, like `gateway serve`; SIGTERM/SIGINT stop it.
const http = require('http');
const path = require('path');

// `ws` is installed next to the load generator (bench/loadgen, or --loadgen DIR: the run's cwd).
const WebSocket = require(require.resolve('ws', { paths: [process.cwd(), path.join(__dirname, '..', 'loadgen')] }));

const MAX_PAYLOAD = 2 * 1024 * 1024;

function parseListen(argv) {
  const i = argv.indexOf('--listen');
  const value = i >= 0 ? argv[i + 1] : '127.0.0.1:0';
  const at = value.lastIndexOf(':');
  return { host: value.slice(0, at), port: Number(value.slice(at + 1)) };
}

const options = { noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: false };
const echo = new WebSocket.Server(options);
const room = new WebSocket.Server(options);

echo.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

room.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of room.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
  ws.on('error', () => {});
});

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const target = req.url.split('?')[0];
  const wss = target === '/echo' ? echo : target === '/broadcast' ? room : null;
  if (wss === null) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

const { host, port } = parseListen(process.argv.slice(2));
server.listen(port, host, () => {
  process.stderr.write(`listening on http://${host}:${server.address().port}\n`);
});

function stop() {
  for (const wss of [echo, room]) for (const ws of wss.clients) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
