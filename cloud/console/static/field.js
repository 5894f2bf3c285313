// The field worker's app (DESIGN §15): works offline. The day's tasks and the queue of
// readings are kept in localStorage; a service worker (/field/sw.js) keeps the page.
// Money is computed in integers (fen), never in floating point.
"use strict";
(function () {
  const TEXT = JSON.parse(document.getElementById("field-text").textContent);
  const MAX_PHOTO = Number(document.getElementById("field-config").dataset.maxPhoto);
  const KEY = { token: "field.token", book: "field.book", queue: "field.queue", sales: "field.sales" };
  const load = (k, d) => JSON.parse(localStorage.getItem(k) || "null") ?? d;
  const save = (k, v) => localStorage.setItem(k, JSON.stringify(v));
  const $ = (id) => document.getElementById(id);
  const lang = document.documentElement.lang.startsWith("zh") ? "zh_CN" : "en";
  let uploading = false;

  // "12.345" → 12345n (thousandths); "1.0000" → 10000n (ten-thousandths)
  function scaled(text, places) {
    const [whole, frac = ""] = String(text).split(".");
    return BigInt(whole + frac.padEnd(places, "0").slice(0, places));
  }
  function yuan(fen) {
    const neg = fen < 0n;
    const a = neg ? -fen : fen;
    return (neg ? "-¥" : "¥") + (a / 100n).toString() + "." + (a % 100n).toString().padStart(2, "0");
  }
  // (reading − last) × price, rounded half up to the fen
  function estimate(task, total) {
    if (task.unit_price === null || task.last_total === null) return null;
    const used = scaled(total, 3) - scaled(task.last_total, 3);
    if (used < 0n) return "lower";
    const exact = used * scaled(task.unit_price, 4); // 1e-7 yuan
    return yuan((exact + 50000n) / 100000n);
  }

  function net() {
    $("net").textContent = navigator.onLine ? "" : TEXT.offline;
  }

  function show() {
    const token = localStorage.getItem(KEY.token);
    $("login").hidden = !!token;
    $("work").hidden = !token;
    const queue = load(KEY.queue, []);
    $("queue-count").textContent = String(queue.length);
    const book = load(KEY.book, null);
    const list = $("tasks");
    list.replaceChildren();
    if (!book) {
      $("who").textContent = TEXT.no_book;
      return;
    }
    $("who").textContent = `${book.worker} · ${TEXT.downloaded} ${book.day}`;
    const queued = new Map(queue.map((q) => [q.point, q]));
    for (const task of book.tasks) list.append(card(task, queued.get(task.point)));
  }

  function card(task, queued) {
    const li = $("task-template").content.firstElementChild.cloneNode(true);
    li.querySelector(".name").textContent = `${task.book}-${task.position} ${task.name}`;
    li.querySelector(".meta").textContent =
      `${TEXT.account} ${task.account || "—"} · ${TEXT.last} ${task.last_total ?? "—"}` +
      (task.last_at ? ` (${task.last_at})` : "") + ` · ${TEXT.balance} ${task.balance_text}`;
    const form = li.querySelector("form");
    li.setAttribute("aria-label", task.name);
    const err = form.querySelector(".error");
    const est = form.querySelector(".estimate");
    const total = form.elements.total;
    total.addEventListener("input", () => {
      err.hidden = true;
      const v = total.value.trim();
      if (!/^[0-9]+(\.[0-9]{1,3})?$/.test(v)) { est.textContent = ""; return; }
      const e = estimate(task, v);
      est.textContent = e === null ? TEXT.no_estimate : e === "lower" ? TEXT.lower : `${TEXT.estimate} ${e}`;
    });
    if (queued || task.done) {
      form.hidden = true;
      li.querySelector(".result").textContent = queued ? `${TEXT.saved}` : TEXT.done;
      if (queued && queued.refused) li.querySelector(".result").textContent = `${TEXT.refused}: ${queued.refused}`;
      li.classList.add("done");
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.elements.save;
      if (button.disabled) return; // a double tap saves once
      button.disabled = true;
      try {
        const item = await read(task, form);
        if (typeof item === "string") { err.textContent = item; err.hidden = false; button.disabled = false; return; }
        const queue = load(KEY.queue, []);
        if (!queue.some((q) => q.point === task.point)) queue.push(item);
        save(KEY.queue, queue);
        show();
        if (navigator.onLine) upload();
      } catch (e) {
        button.disabled = false;
        throw e;
      }
    });
    const sale = li.querySelector("form.collect");
    const saleNote = li.querySelector(".sale");
    const mine = load(KEY.sales, []).filter((x) => x.account === task.account);
    if (mine.length) saleNote.textContent = mine.map((x) => x.receipt_no ? `${TEXT.sale_done} ${x.receipt_no} ¥${x.amount}` : `${TEXT.sale_queued} ¥${x.amount}`).join("; ");
    sale.hidden = !task.account;
    sale.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const button = sale.elements.collect;
      if (button.disabled) return; // a double tap collects once
      const amount = sale.elements.amount.value.trim();
      if (!amount) return; // (the second tap of a double tap, on the fresh form)
      if (!/^[0-9]+(\.[0-9]{1,2})?$/.test(amount) || Number(amount) === 0) { saleNote.textContent = TEXT.bad_amount; return; }
      button.disabled = true;
      const sales = load(KEY.sales, []);
      sales.push({ key: crypto.randomUUID(), account: task.account, amount, receipt_no: null });
      save(KEY.sales, sales);
      show();
      if (navigator.onLine) upload();
    });
    return li;
  }

  // queued sales go up one by one, each under its own key (sent twice, sold once)
  async function sell() {
    const sales = load(KEY.sales, []);
    for (const s of sales) {
      if (s.receipt_no) continue;
      const r = await api("/field/api/sales", {
        method: "POST", body: JSON.stringify({ key: s.key, account: s.account, amount: s.amount }),
      });
      s.receipt_no = r.receipt_no;
      save(KEY.sales, sales);
    }
  }

  async function read(task, form) {
    const v = form.elements.total.value.trim();
    const anomaly = form.elements.anomaly.value || null;
    const note = form.elements.note.value.trim() || null;
    if (v.startsWith("-")) return TEXT.negative;
    if (v && !/^[0-9]+(\.[0-9]{1,3})?$/.test(v)) return TEXT.need_value;
    if (!v && !anomaly) return TEXT.need_value;
    if (anomaly === "other" && !note) return TEXT.need_note;
    let photo = null;
    const file = form.elements.photo.files[0];
    if (file) {
      if (file.size > MAX_PHOTO) return TEXT.photo_big;
      photo = await new Promise((ok) => {
        const r = new FileReader();
        r.onload = () => ok(String(r.result));
        r.readAsDataURL(file);
      });
    }
    return {
      id: crypto.randomUUID(), point: task.point, measured_at: new Date().toISOString(),
      total: v || null, anomaly, note, photo,
    };
  }

  async function api(path, options = {}) {
    const token = localStorage.getItem(KEY.token);
    const r = await fetch(`${path}${path.includes("?") ? "&" : "?"}lang=${lang}`, {
      ...options,
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    });
    if (r.status === 401) { localStorage.removeItem(KEY.token); show(); }
    if (!r.ok) throw new Error(String(r.status));
    return r.json();
  }

  async function download() {
    const button = $("download");
    button.disabled = true;
    try {
      save(KEY.book, await api("/field/api/book"));
      $("status").textContent = TEXT.downloaded;
      show();
    } catch (e) {
      $("status").textContent = TEXT.upload_failed;
    } finally {
      button.disabled = false;
    }
  }

  async function upload() {
    const queue = load(KEY.queue, []).filter((q) => !q.refused);
    const selling = load(KEY.sales, []).some((s) => !s.receipt_no);
    if (uploading || (!queue.length && !selling)) return;
    uploading = true;
    $("upload").disabled = true;
    try {
      const answer = queue.length ? await api("/field/api/readings", {
        method: "POST",
        body: JSON.stringify({ items: queue.map(({ refused, ...q }) => q) }),
      }) : { results: [] };
      const byId = new Map(answer.results.map((r) => [r.id, r]));
      const left = [];
      for (const q of load(KEY.queue, [])) {
        const r = byId.get(q.id);
        if (!r) left.push(q);
        else if (r.status === "refused") left.push({ ...q, refused: r.message });
      }
      save(KEY.queue, left);
      const book = load(KEY.book, null);
      if (book) {
        for (const t of book.tasks) {
          if (queue.some((q) => q.point === t.point && byId.get(q.id)?.status !== "refused")) t.done = true;
        }
        save(KEY.book, book);
      }
      $("status").textContent = `${TEXT.uploaded}: ${answer.results.filter((r) => r.status !== "refused").length}`;
      await sell();
    } catch (e) {
      $("status").textContent = TEXT.upload_failed;
    } finally {
      uploading = false;
      $("upload").disabled = false;
      show();
    }
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const r = await fetch("/api/v1/auth/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tenant: f.tenant.value, username: f.username.value, password: f.password.value }),
    });
    if (!r.ok) { $("login-error").textContent = TEXT.login_failed; $("login-error").hidden = false; return; }
    localStorage.setItem(KEY.token, (await r.json()).access_token);
    show();
    download();
  });
  $("download").addEventListener("click", download);
  $("upload").addEventListener("click", upload);
  window.addEventListener("online", () => { net(); upload(); });
  window.addEventListener("offline", net);
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/field/sw.js", { scope: "/field/" });
  net();
  show();
})();
