// The field app's service worker: the page and its files come from the network when
// there is a signal (and are kept), from the cache when there is none. The JSON calls are
// never cached: the page keeps its data in localStorage.
"use strict";
const CACHE = "field-v1";
const FILES = ["/field/", "/console/static/field.js", "/console/static/field.css"];

self.addEventListener("install", (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (ev) => ev.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (ev) => {
  const url = new URL(ev.request.url);
  if (ev.request.method !== "GET" || url.pathname.startsWith("/field/api/")) return;
  if (url.pathname !== "/field/" && !FILES.includes(url.pathname)) return;
  ev.respondWith(
    fetch(ev.request)
      .then((r) => {
        if (r.ok) {
          const copy = r.clone();
          caches.open(CACHE).then((c) => c.put(url.pathname, copy));
        }
        return r;
      })
      .catch(() => caches.match(url.pathname))
  );
});
