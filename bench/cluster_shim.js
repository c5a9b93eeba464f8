'use strict';
// Preloaded into the load generator by bench/cluster.py (through NODE_OPTIONS="--require ...",
// beside ws_headers_shim.js) so the loadgen's unchanged `fanout` scenario drives a
// cluster of gateways instead of one server:
//   BENCH_SPLIT_HOSTS   "127.0.0.1:P1,127.0.0.1:P2": the WebSocket connections go to these
//                       hosts in turn (connection i to host i % k, path kept), so N subscribers
//                       split evenly and the publisher (opened last) lands on host N % k
//   BENCH_SPLIT_REPORT  a file: at exit, {"host": connections opened to it, ...} as JSON, so
//                       the runner can check the split really happened
//   BENCH_CPU_PIDS      "PID1,PID2,...": when the loadgen reads /proc/PID1/stat (its --pid) for
//                       the server's CPU, it gets PID1's line with utime and stime summed over
//                       every listed process (the gateways and redis-server), so its
//                       "server CPU" covers the whole cluster over exactly its measured window.
//                       If any of them is gone, the read fails (no figure, never a partial sum).
// Unset variables change nothing.
const fs = require('fs');
const Module = require('module');

const hosts = (process.env.BENCH_SPLIT_HOSTS || '').split(',').filter(Boolean);
const report = process.env.BENCH_SPLIT_REPORT || '';
const pids = (process.env.BENCH_CPU_PIDS || '').split(',').filter(Boolean);

if (hosts.length) {
  const opened = Object.fromEntries(hosts.map((h) => [h, 0]));
  let next = 0;
  const load = Module._load;
  const wrapped = new WeakMap();
  Module._load = function loadSplit(request, ...rest) {
    const mod = load.call(this, request, ...rest);
    if (request !== 'ws' || typeof mod !== 'function') return mod;
    if (!wrapped.has(mod)) wrapped.set(mod, split(mod));
    return wrapped.get(mod);
  };
  function split(WebSocket) {
    return class SplitWebSocket extends WebSocket {
      constructor(address, ...rest) {
        const host = hosts[next++ % hosts.length];
        const url = new URL(String(address));
        url.host = host;
        opened[host]++;
        super(url.toString(), ...rest);
      }
    };
  }
  if (report) process.on('exit', () => fs.writeFileSync(report, JSON.stringify(opened)));
}

if (pids.length > 1) {
  const target = `/proc/${pids[0]}/stat`;
  const read = fs.readFileSync;
  const ticks = (text) => {
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]), Number(f[12])]; // utime, stime (fields 14 and 15)
  };
  fs.readFileSync = function readSummed(path, ...rest) {
    if (path !== target) return read.call(this, path, ...rest);
    const own = String(read.call(this, path, 'utf8'));
    let [utime, stime] = ticks(own);
    for (const pid of pids.slice(1)) {
      const [u, s] = ticks(String(read.call(this, `/proc/${pid}/stat`, 'utf8')));
      utime += u;
      stime += s;
    }
    const head = own.slice(0, own.lastIndexOf(')') + 2);
    const f = own.slice(head.length).split(' ');
    f[11] = String(utime);
    f[12] = String(stime);
    return head + f.join(' ');
  };
}
