"""The triage page driven by keyboard: in a real headless Chromium through the DevTools
protocol (Chromium's own remote-debugging socket, spoken with aiohttp's websocket client: no
driver to install; skipped where no chromium is installed, as the report's browser test), and
its script alone under node with a minimal DOM (skipped without node)."""
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.review.files import export_review, import_review
from orchestrator.review.server import ReviewServer
from tests.review.test_review import make_run
from tests.review.test_review_serve import file_manager

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow

WRONG8 = {"0/img0.png": "1", "0/img1.png": "cat", "1/img2.png": "0", "cat/sub/img3.png": "0",
          "cat/img1.png": "1", "0/img2.png": "1", "1/img0.png": "cat", "1/sub/img3.png": "0"}
# the decision per image, as (key presses, decision for the file-manager route)
PLAN = {"0/img0.png": ("k", ("confirm", None)), "0/img1.png": ("a", ("accept", None)),
        "1/img2.png": ("c2", ("relabel", "cat")),  # classes other than "1": 0, cat
        "cat/sub/img3.png": ("r", ("remove", None)), "cat/img1.png": ("u", ("unsure", None)),
        "0/img2.png": ("s", ("relabel", "cat")),  # the second choice: neither 0 nor 1
        "1/img0.png": ("a", ("accept", None)),
        "1/sub/img3.png": ("k", ("confirm", None))}


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def send(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def eval(self, expr: str):
        res = await self.send("Runtime.evaluate", expression=expr, returnByValue=True)
        return res.get("result", {}).get("value")

    async def until(self, expr: str, timeout: float = 20):
        end = time.time() + timeout
        while time.time() < end:
            if await self.eval(expr):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expr}")

    async def key(self, k: str):
        codes = {"ArrowRight": 39, "ArrowLeft": 37, "Enter": 13}
        vk = codes.get(k, ord(k.upper()) if len(k) == 1 else 0)
        text = k if len(k) == 1 else ("\r" if k == "Enter" else "")
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=k,
                            windowsVirtualKeyCode=vk, **({"text": text} if text and
                                                         kind == "keyDown" else {}))


async def triage(devtools_port: int, url: str, n: int, shot: Path | None = None) -> list[str]:
    """Open `url`, decide `n` images by keyboard; returns the files decided."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{devtools_port}/json/new?about:blank") as r:
            target = await r.json()
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Page.navigate", url=url)
            await page.until("document.getElementById('progress').dataset.decided !== undefined")
            done = []
            for _ in range(n):
                rel = await page.eval("document.getElementById('relpath').textContent")
                before = int(await page.eval("document.getElementById('progress').dataset.decided"))
                keys, _ = PLAN[rel]
                for k in keys:
                    await page.key(k)
                await page.until(f"+document.getElementById('progress').dataset.decided > {before}")
                done.append(rel)
            if shot is not None:
                data = await page.send("Page.captureScreenshot", format="png")
                import base64
                shot.write_bytes(base64.b64decode(data["data"]))
        await http.get(f"http://127.0.0.1:{devtools_port}/json/close/{target['id']}")
    return done


@pytest.mark.skipif(not BROWSER, reason="no chromium (apt-get install chromium)")
def test_keyboard_triage_with_a_reload_gives_the_file_managers_manifest(tmp_path):
    _, run = make_run(tmp_path, WRONG8)
    web, fm = tmp_path / "web", tmp_path / "fm"
    export_review(run, web, threshold=">=2")
    export_review(run, fm, threshold=">=2")
    server = ReviewServer(web, port=0, ledger=tmp_path / "web-ledger.csv").start()
    profile = Path(tempfile.mkdtemp())
    chrome = subprocess.Popen(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1200,900",
         "about:blank"], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in chrome.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/..."
            if m := re.search(r"ws://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
                break
        assert port, "chromium did not open its DevTools port"
        first = asyncio.run(triage(port, server.url, 5))
        # a reload (a new tab on the same URL) goes on with the images not decided yet
        rest = asyncio.run(triage(port, server.url, 3, shot=tmp_path / "review_page.png"))
        assert not set(first) & set(rest) and set(first) | set(rest) == set(PLAN)
        assert (tmp_path / "review_page.png").stat().st_size > 10_000
    finally:
        chrome.kill()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
    for rel, (_, (decision, label)) in PLAN.items():
        file_manager(fm, rel, decision, label)
    expected, problems = import_review(fm, ledger=tmp_path / "fm-ledger.csv")
    assert problems == []
    got = pd.read_csv(web / "manifest.csv", dtype=str, keep_default_na=False)
    assert got.equals(pd.read_csv(fm / "manifest.csv", dtype=str, keep_default_na=False))
    assert json.loads((web / ".dupes" / "decisions.json").read_text()).keys() == {
        p for p in pd.read_csv(web / ".dupes" / "exported.csv")["review_path"]}


NODE = shutil.which("node")


@pytest.mark.skipif(not NODE, reason="no node")
def test_the_pages_script_triages_by_keyboard_with_a_reload_and_an_undo(tmp_path):
    """The page's script (no browser: node with a minimal DOM) against the real server."""
    _, run = make_run(tmp_path, WRONG8)
    web = tmp_path / "web"
    export_review(run, web, threshold=">=2")
    server = ReviewServer(web, port=0, ledger=tmp_path / "ledger.csv").start()
    harness = Path(__file__).resolve().parents[1] / "review_page_harness.js"
    page = Path(__file__).resolve().parents[2] / "orchestrator" / "review" / "page.html"

    def visit(n: int, after=()):
        plan = {"n": n, "keys": {rel: list(keys) for rel, (keys, _) in PLAN.items()},
                "after": list(after)}
        res = subprocess.run([NODE, str(harness), str(page), server.url, json.dumps(plan)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    try:
        first = visit(5)
        assert [d for _, d, _, _ in first] == [1, 2, 3, 4, 5]
        rest = visit(3, after=["z"])  # the next visit goes on; z undoes its last decision
        assert [d for _, d, _, _ in rest] == [6, 7, 8, 7]
        assert {r for r, *_ in first} | {r for r, *_ in rest[:3]} == set(PLAN)
        assert not any(err for _, _, err, _ in first + rest)
    finally:
        server.stop()
    manifest = pd.read_csv(web / "manifest.csv", dtype=str, keep_default_na=False)
    undone = rest[2][0]
    assert len(manifest) == 7 and undone not in set(manifest["relpath"])
    for row in manifest.itertuples():
        decision, label = PLAN[row.relpath][1]
        assert row.action == {"accept": "relabel"}.get(decision, decision)
        if decision == "relabel":
            assert row.new_label == label
