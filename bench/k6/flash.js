// k6 flash sale: a constant arrival rate of distinct shoppers buying one
// item with per-user limit 1. Thresholds: P99 of purchases under P99_MS,
// every check passes, and exactly STOCK orders are accepted (run long
// enough that RATE x DURATION exceeds STOCK).
//
//   k6 run -e RATE=2000 -e DURATION=10s -e STOCK=1000 bench/k6/flash.js
//
// Env: TARGET (public listener), ADMIN (admin listener), ADMIN_TOKEN,
// RATE (purchases/s), DURATION, STOCK, P99_MS.
import http from 'k6/http';
import exec from 'k6/execution';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const ADMIN = __ENV.ADMIN || 'http://127.0.0.1:6060';
const RATE = parseInt(__ENV.RATE || '2000', 10);
const DURATION = __ENV.DURATION || '10s';
const STOCK = parseInt(__ENV.STOCK || '1000', 10);
const P99_MS = __ENV.P99_MS || '5';

const json = { 'Content-Type': 'application/json' };
const orders = new Counter('orders');

export const options = {
  scenarios: {
    flash: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 200,
      maxVUs: 2000,
    },
  },
  thresholds: {
    'http_req_duration{name:purchase}': [`p(99)<${P99_MS}`],
    checks: ['rate==1'],
    orders: [`count==${STOCK}`],
  },
};

export function setup() {
  const item = `k6-${Date.now()}`;
  const headers = Object.assign({}, json);
  if (__ENV.ADMIN_TOKEN) headers.Authorization = `Bearer ${__ENV.ADMIN_TOKEN}`;
  const body = JSON.stringify({ name: 'k6 flash sale', price_cents: 100, stock: STOCK, per_user_limit: 1 });
  const res = http.put(`${ADMIN}/api/v1/items/${item}`, body, { headers });
  if (res.status !== 201) fail(`cannot create item ${item}: ${res.status} ${res.body}`);
  return { item };
}

export default function (data) {
  const n = exec.scenario.iterationInTest; // unique per iteration: one shopper each
  const body = JSON.stringify({ user_id: `k6-${n}`, request_id: `r-${n}` });
  const res = http.post(`${TARGET}/api/v1/items/${data.item}/purchase`, body, {
    headers: json,
    tags: { name: 'purchase' },
  });
  check(res, {
    'answer is 201 or 409': (r) => r.status === 201 || r.status === 409,
    'a 409 is sold_out': (r) => r.status !== 409 || r.json('error.code') === 'sold_out',
    'a 201 has an order id': (r) => r.status !== 201 || /^[0-9]+$/.test(r.json('order_id')),
  });
  if (res.status === 201) orders.add(1);
}

export function teardown(data) {
  const res = http.get(`${TARGET}/api/v1/items/${data.item}`);
  check(res, { 'stock_left is 0 after the sale': (r) => r.json('stock_left') === 0 });
}
