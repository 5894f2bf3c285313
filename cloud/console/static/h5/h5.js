/* The tenants' H5 page: log in by phone, bind an account, see the balance, the supply and
   the usage, top up with WeChat Pay and watch the supply come back. Plain script on the
   /miniapp/v1 API; a weak signal is retried, a tap never pays twice. */
(function () {
  "use strict";
  var W = JSON.parse(document.getElementById("words").textContent);
  var GROUP = document.body.dataset.group;
  var API = "/miniapp/v1";
  var KEY = "prepay_h5_token_" + GROUP;
  var token = localStorage.getItem(KEY);
  var accounts = [];
  var current = localStorage.getItem(KEY + "_account");
  var period = "day";
  var paying = false;
  var refreshTimer = null;

  function $(id) { return document.getElementById(id); }
  function fmt(s, vars) {
    return s.replace(/%\((\w+)\)s/g, function (_, k) { return vars[k] === undefined ? "" : vars[k]; });
  }
  function yuan(s) { return "¥" + s; }
  function show(id) {
    ["login", "bind", "home"].forEach(function (x) { $(x).hidden = x !== id; });
  }
  function status(text) {
    var el = $("status");
    el.textContent = text || "";
    el.hidden = !text;
  }
  function error(id, text) {
    var el = $(id);
    el.textContent = text || "";
    el.hidden = !text;
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  /* One request: a timeout, retried on a lost signal (GETs and the idempotent ones). */
  async function api(method, path, body, opts) {
    opts = opts || {};
    var tries = opts.retries === undefined ? (method === "GET" ? 5 : 2) : opts.retries;
    for (var attempt = 0; ; attempt++) {
      var ctl = new AbortController();
      var timer = setTimeout(function () { ctl.abort(); }, 8000);
      try {
        var headers = { "Accept": "application/json" };
        if (body !== undefined) headers["Content-Type"] = "application/json";
        if (token) headers["Authorization"] = "Bearer " + token;
        var lang = document.body.dataset.lang;
        var r = await fetch(API + path + (path.indexOf("?") < 0 ? "?" : "&") + "lang=" + lang, {
          method: method, headers: headers, signal: ctl.signal,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        clearTimeout(timer);
        status("");
        var data = null;
        if (r.status !== 204) { try { data = await r.json(); } catch (e) { data = null; } }
        if (r.status === 401 && path.indexOf("/login") !== 0) {
          token = null; localStorage.removeItem(KEY);
          show("login"); error("login-error", W.expired);
          throw new Error("expired");
        }
        return { ok: r.ok, status: r.status, data: data };
      } catch (e) {
        clearTimeout(timer);
        if (e.message === "expired") throw e;
        if (attempt + 1 >= tries) { status(W.offline); throw e; }
        status(W.offline);
        await sleep(Math.min(4000, 500 * Math.pow(2, attempt)));
      }
    }
  }
  function said(res) {
    return (res.data && (res.data.message || res.data.detail)) || W.error;
  }

  /* --- login -------------------------------------------------------------------------- */
  var countdown = 0;
  $("send-code").addEventListener("click", async function () {
    error("login-error", "");
    var phone = $("phone").value.trim();
    if (!/^\+?[0-9 ()-]{6,20}$/.test(phone)) { error("login-error", W.phone); $("phone").focus(); return; }
    var btn = this;
    btn.disabled = true;
    try {
      var res = await api("POST", "/login/sms", { tenant: GROUP, phone: phone });
      if (!res.ok) { error("login-error", said(res)); btn.disabled = false; return; }
      if (res.data.dev_code) { $("dev-code").textContent = fmt(W.dev_code, { code: res.data.dev_code }); $("dev-code").hidden = false; }
      $("code").focus();
      countdown = 60;
      var tick = setInterval(function () {
        countdown -= 1;
        btn.textContent = countdown > 0 ? fmt(W.resend_in, { s: countdown }) : W.send_code;
        if (countdown <= 0) { clearInterval(tick); btn.disabled = false; }
      }, 1000);
    } catch (e) { btn.disabled = false; }
  });
  $("login-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    error("login-error", "");
    var btn = $("login-button");
    if (btn.disabled) return;
    btn.disabled = true;
    try {
      var res = await api("POST", "/login/phone", {
        tenant: GROUP, phone: $("phone").value.trim(), code: $("code").value.trim(),
      });
      if (!res.ok) { error("login-error", said(res)); return; }
      token = res.data.token;
      localStorage.setItem(KEY, token);
      await home();
    } catch (e) { /* status shows it */ } finally { btn.disabled = false; }
  });

  /* --- binding ------------------------------------------------------------------------ */
  $("bind-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    error("bind-error", "");
    var btn = $("bind-button");
    if (btn.disabled) return;
    btn.disabled = true;
    try {
      var res = await api("POST", "/bindings", {
        account: $("bind-account").value.trim(), phone: $("bind-phone").value.trim(),
      });
      if (!res.ok) { error("bind-error", said(res)); return; }
      current = res.data.number;
      localStorage.setItem(KEY + "_account", current);
      await home();
    } catch (e) { /* status */ } finally { btn.disabled = false; }
  });
  $("add-account").addEventListener("click", function () { show("bind"); });
  $("unbind").addEventListener("click", async function () {
    if (!current || !window.confirm(W.unbind_confirm)) return;
    var res = await api("DELETE", "/bindings/" + encodeURIComponent(current));
    if (res.ok) { current = null; localStorage.removeItem(KEY + "_account"); await home(); }
  });
  $("logout").addEventListener("click", async function () {
    try { await api("POST", "/logout", undefined, { retries: 1 }); } catch (e) { /* gone anyway */ }
    token = null; localStorage.removeItem(KEY);
    show("login");
  });

  /* --- the account -------------------------------------------------------------------- */
  function supplyText(p) {
    if (p.keep_power) return W.keep_power;
    if (p.pending) return p.supply === "off" ? W.restoring : W.cutting;
    if (p.supply === "on") return W.supply_on;
    if (p.supply === "off") return W.supply_off;
    return W.supply_unknown;
  }
  function renderAccount(a) {
    var el = $("account");
    el.innerHTML = "";
    var h = document.createElement("h2");
    h.textContent = a.customer + " · " + a.number;
    el.appendChild(h);
    var bal = document.createElement("p");
    bal.className = "balance" + (Number(a.balance) <= 0 ? " low" : "");
    bal.innerHTML = "";
    var label = document.createElement("span");
    label.textContent = W.balance;
    var value = document.createElement("strong");
    value.id = "balance";
    value.textContent = yuan(a.balance);
    bal.appendChild(label); bal.appendChild(value);
    el.appendChild(bal);
    var days = document.createElement("p");
    days.className = "hint";
    days.textContent = Number(a.balance) <= 0 ? W.no_credit
      : (a.days_left === null ? W.days_unknown : fmt(W.days_left, { d: a.days_left }));
    el.appendChild(days);
    var ul = document.createElement("ul");
    ul.className = "points";
    a.points.forEach(function (p) {
      var li = document.createElement("li");
      var state = p.pending ? "pending" : (p.supply || "unknown");
      li.className = "point " + state;
      li.dataset.supply = p.supply || "";
      var name = document.createElement("span");
      name.textContent = (p.utility === "water" ? W.water : W.electricity) + " · " + (p.premises || p.name);
      var s = document.createElement("span");
      s.className = "state";
      s.textContent = supplyText(p) + (p.alarm_level > 0 && p.supply === "on" ? " · " + W.alarm : "");
      li.appendChild(name); li.appendChild(s);
      ul.appendChild(li);
    });
    el.appendChild(ul);
    var quick = $("quick");
    quick.innerHTML = "";
    a.quick_amounts.forEach(function (q) {
      var b = document.createElement("button");
      b.type = "button"; b.className = "secondary"; b.textContent = yuan(q);
      b.addEventListener("click", function () { $("amount").value = q; checkAmount(); });
      quick.appendChild(b);
    });
    checkAmount();
  }
  function cents(text) {
    if (!/^\d{1,7}(\.\d{1,2})?$/.test(text)) return null;
    var parts = text.split(".");
    return Number(parts[0]) * 100 + Number(((parts[1] || "") + "00").slice(0, 2));
  }
  function currentAccount() {
    return accounts.filter(function (a) { return a.number === current; })[0];
  }
  function checkAmount() {
    var a = currentAccount();
    var btn = $("pay-button");
    var text = $("amount").value.trim();
    var c = cents(text);
    var ok = a && c !== null && c >= cents(a.topup_min) && c <= cents(a.topup_max);
    btn.textContent = fmt(W.pay, { a: ok ? yuan((c / 100).toFixed(2)) : "" });
    btn.disabled = !ok || paying;
    error("pay-error", text && !ok && a ? fmt(W.amount_range, { min: a.topup_min, max: a.topup_max }) : "");
    return ok ? (c / 100).toFixed(2) : null;
  }
  $("amount").addEventListener("input", checkAmount);

  function renderTabs() {
    var tabs = $("account-tabs");
    tabs.innerHTML = "";
    tabs.hidden = accounts.length < 2;
    accounts.forEach(function (a) {
      var b = document.createElement("button");
      b.type = "button"; b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(a.number === current));
      b.textContent = a.number;
      b.addEventListener("click", function () { select(a.number); });
      tabs.appendChild(b);
    });
  }
  async function select(number) {
    current = number;
    localStorage.setItem(KEY + "_account", number);
    renderTabs();
    renderAccount(currentAccount());
    await Promise.all([usage(), topups()]);
  }
  async function refresh() {
    var res = await api("GET", "/accounts/" + encodeURIComponent(current));
    if (!res.ok) return null;
    accounts = accounts.map(function (a) { return a.number === current ? res.data : a; });
    renderAccount(res.data);
    return res.data;
  }
  async function home() {
    var res = await api("GET", "/accounts");
    if (!res.ok) { show("login"); return; }
    accounts = res.data;
    if (!accounts.length) { show("bind"); return; }
    if (!currentAccount()) current = accounts[0].number;
    show("home");
    await select(current);
    await resume();
    if (refreshTimer === null) {
      refreshTimer = setInterval(function () {
        if (!document.hidden && current && !paying) refresh().catch(function () {});
      }, 10000);
    }
  }

  /* --- usage and top-ups -------------------------------------------------------------- */
  async function usage() {
    var res = await api("GET", "/accounts/" + encodeURIComponent(current) + "/usage?period=" + period);
    if (!res.ok) return;
    var rows = res.data;
    var a = currentAccount();
    var unit = a && a.points.length && a.points[0].utility === "water" ? W.m3 : W.kwh;
    var max = Math.max.apply(null, rows.map(function (r) { return Number(r.used); }).concat([0.001]));
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    var w = 320, h = 140, bw = w / rows.length;
    svg.setAttribute("viewBox", "0 0 " + w + " " + (h + 18));
    svg.setAttribute("preserveAspectRatio", "none");
    rows.forEach(function (r, i) {
      var v = Number(r.used);
      var bh = Math.round((v / max) * h);
      var rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * bw + 1)); rect.setAttribute("width", String(Math.max(bw - 2, 1)));
      rect.setAttribute("y", String(h - bh)); rect.setAttribute("height", String(bh));
      var t = document.createElementNS(ns, "title");
      t.textContent = r.period + ": " + r.used + " " + unit + " · " + W.spent + " " + yuan(r.spent);
      rect.appendChild(t);
      svg.appendChild(rect);
      if (i === 0 || i === rows.length - 1) {
        var lab = document.createElementNS(ns, "text");
        lab.setAttribute("x", String(i === 0 ? 0 : w)); lab.setAttribute("y", String(h + 14));
        lab.setAttribute("text-anchor", i === 0 ? "start" : "end");
        lab.textContent = period === "day" ? r.period.slice(5) : r.period;
        svg.appendChild(lab);
      }
    });
    var chart = $("chart");
    chart.innerHTML = "";
    chart.setAttribute("aria-label", W.usage + " (" + unit + ")");
    chart.appendChild(svg);
    var total = rows.reduce(function (s, r) { return s + Number(r.used); }, 0);
    var spent = rows.reduce(function (s, r) { return s + cents(r.spent); }, 0);
    var sum = document.createElement("p");
    sum.className = "hint";
    sum.textContent = total.toFixed(2) + " " + unit + " · " + W.spent + " " + yuan((spent / 100).toFixed(2));
    chart.appendChild(sum);
  }
  function setPeriod(p) {
    period = p;
    $("by-day").setAttribute("aria-pressed", String(p === "day"));
    $("by-month").setAttribute("aria-pressed", String(p === "month"));
    usage().catch(function () {});
  }
  $("by-day").addEventListener("click", function () { setPeriod("day"); });
  $("by-month").addEventListener("click", function () { setPeriod("month"); });

  var LOCAL = new Intl.DateTimeFormat(document.documentElement.lang || "zh-CN", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  });
  async function topups() {
    var res = await api("GET", "/accounts/" + encodeURIComponent(current) + "/topups");
    if (!res.ok) return;
    var ul = $("topups");
    ul.innerHTML = "";
    if (!res.data.length) {
      var li0 = document.createElement("li"); li0.textContent = W.none_yet; ul.appendChild(li0);
    }
    res.data.forEach(function (t) {
      var li = document.createElement("li");
      var left = document.createElement("span");
      left.textContent = (t.at ? LOCAL.format(new Date(t.at)) : "") + " · " + (W[t.channel] || t.channel)
        + (t.status !== "paid" ? " · " + (W[t.status] || t.status) : "");
      var right = document.createElement("strong");
      right.textContent = yuan(t.amount);
      li.appendChild(left); li.appendChild(right);
      var link = document.createElement("button");
      link.type = "button"; link.className = "link"; link.textContent = W.receipt;
      link.addEventListener("click", function () { receipt(t.reference); });
      li.appendChild(link);
      ul.appendChild(li);
    });
  }

  /* A top-up's receipt: the PDF fetched with the session, opened as a file. */
  async function receipt(ref) {
    var path = "/accounts/" + encodeURIComponent(current) + "/receipts/" + encodeURIComponent(ref);
    try {
      var r = await fetch(API + path, { headers: { "Authorization": "Bearer " + token } });
      if (!r.ok) { status(W.error); return; }
      var url = URL.createObjectURL(await r.blob());
      var a = document.createElement("a");
      a.href = url; a.download = "receipt-" + ref + ".pdf";
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
    } catch (e) { status(W.offline); }
  }

  /* --- paying ------------------------------------------------------------------------- */
  $("pay-button").addEventListener("click", async function () {
    var amount = checkAmount();
    if (!amount || paying) return;
    paying = true;
    this.disabled = true;
    error("pay-error", "");
    $("pay-result").hidden = true;
    try {
      var res = await api("POST", "/orders", { account: current, amount: amount }, { retries: 1 });
      if (!res.ok) { error("pay-error", said(res)); return; }
      var order = res.data;
      sessionStorage.setItem(KEY + "_pending", order.out_trade_no);
      if (order.pay && order.pay.paySign && window.WeixinJSBridge) {
        window.WeixinJSBridge.invoke("getBrandWCPayRequest", order.pay, function () { resume(); });
        return;
      }
      if (order.pay && order.pay.h5_url) {
        var back = location.href.split("#")[0];
        location.href = order.pay.h5_url + (order.pay.h5_url.indexOf("?") < 0 ? "?" : "&")
          + "redirect_url=" + encodeURIComponent(back);
        return;
      }
      await resume();
    } catch (e) { /* status */ } finally { paying = false; checkAmount(); }
  });

  /* After WeChat Pay: wait for the order to be paid, then for the supply to come back. */
  async function resume() {
    var no = sessionStorage.getItem(KEY + "_pending");
    if (!no) return;
    paying = true;
    checkAmount();
    status(W.paying);
    try {
      var order = null;
      for (var i = 0; i < 240; i++) {
        var res = await api("GET", "/orders/" + encodeURIComponent(no));
        if (res.status === 404) break;
        order = res.data;
        if (order.status !== "created") break;
        await sleep(i < 40 ? 250 : 1000);
      }
      sessionStorage.removeItem(KEY + "_pending");
      status("");
      if (!order || order.status !== "paid") { error("pay-error", W.order_closed); return; }
      if (order.account !== current) await select(order.account);
      var done = $("pay-result");
      done.textContent = fmt(W.paid, { a: yuan(order.amount), b: yuan(order.balance) });
      done.hidden = false;
      $("amount").value = "";
      for (var j = 0; j < 120; j++) {
        var a = await refresh();
        var settled = a && a.points.every(function (p) { return !p.pending; });
        if (settled) {
          if (a.points.some(function (p) { return p.supply === "on"; }) && Number(a.balance) > 0) {
            done.textContent += " · " + W.supply_back;
          }
          break;
        }
        await sleep(j < 20 ? 250 : 1000);
      }
      await topups();
    } finally { paying = false; checkAmount(); }
  }

  if (token) { home().catch(function () { show("login"); }); } else { show("login"); }
})();
