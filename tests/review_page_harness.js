// The review page's own script, run by node against the real server with a minimal DOM:
// where no browser is installed, its keyboard logic is still tested end to end.
//   node review_page_harness.js PAGE.html URL '{"n": N, "keys": {relpath: [key, ...]}, "after": [key, ...]}'
// decides N images (the keys for the image shown), then presses `after`; prints one
// [relpath, decided, error, position] row per step as JSON.
const fs = require("fs");
const [,, pagePath, url, keysJson] = process.argv;
const html = fs.readFileSync(pagePath, "utf8");
const script = html.split("<script>")[1].split("</script>")[0];
const els = {};
function el(id) {
  if (!els[id]) els[id] = {id, textContent: "", dataset: {}, value: "", className: "", src: "",
    options: [], children: [], listeners: {},
    add(o) { this.options.push(o); },
    addEventListener(k, f) { this.listeners[k] = f; }, blur() {},
    replaceChildren(...c) { this.children = c; }};
  return els[id];
}
el("f-pair").value = ""; el("f-votes").value = "0"; el("f-status").value = "all";
const listeners = {};
global.document = {getElementById: el, addEventListener: (k, f) => { listeners[k] = f; },
  createElement: () => ({className: "", title: "", textContent: ""})};
global.Option = function (t, v) { this.text = t; this.value = String(v); };
const u = new URL(url);
global.location = {search: u.search};
const realFetch = fetch;
global.fetch = (p, o) => realFetch(u.origin + p, o);
eval(script);
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
(async () => {
  for (let i = 0; i < 100 && el("progress").dataset.decided === undefined; i++) await sleep(50);
  const out = [];
  const plan = JSON.parse(keysJson);
  for (let step = 0; step < plan.n; step++) {
    const rel = el("relpath").textContent;
    const keys = plan.keys[rel];
    const before = +el("progress").dataset.decided;
    for (const k of keys) listeners.keydown({key: k, target: {tagName: "BODY"}, preventDefault() {}});
    for (let i = 0; i < 100 && +el("progress").dataset.decided === before; i++) await sleep(20);
    out.push([rel, +el("progress").dataset.decided, el("error").textContent, el("pos").textContent]);
  }
  for (const k of plan.after || []) {
    const before = +el("progress").dataset.decided;
    listeners.keydown({key: k, target: {tagName: "BODY"}, preventDefault() {}});
    for (let i = 0; i < 100 && +el("progress").dataset.decided === before; i++) await sleep(20);
    out.push([el("relpath").textContent, +el("progress").dataset.decided, el("error").textContent,
              el("pos").textContent]);
  }
  console.log(JSON.stringify(out));
})();
