"""The browser triage of a review folder (`dupes review serve REVIEW`): a local page, bound to
127.0.0.1, that shows every exported image large with its labels, votes and scores and
takes a decision per image from the keyboard.

Every decision is written at once, atomically, to `REVIEW/.dupes/decisions.json`, and the
manifest and ledger follow from it (`analysis.review_plan.decisions_manifest`: the same
manifest the file-manager route gives for the same decisions), so a closed browser loses
nothing and the next visit goes on where it stopped. The server is aiohttp (Ray's own
dashboard server, installed with it); the page is one self-contained file, no build step,
nothing fetched from the network.
"""
from __future__ import annotations

import asyncio
import secrets
import sys
import threading
from pathlib import Path

import pandas as pd
from aiohttp import web

from analysis.columns import shown
from analysis.review_plan import DECISIONS, decisions_manifest
from orchestrator.review.files import (META_DIR, ReviewError, _read_meta, list_review_tree,
                                       read_exported, review_ledger, review_specials, serve_lock)
from orchestrator.run import ledger as ledger_mod
from orchestrator.run import rundir, storage
from orchestrator.run.directory import Run

DECISIONS_FILE = "decisions.json"
PAGE = Path(__file__).with_name("page.html")
# the scores the page shows beside an image, labelled as the reports label them
SCORE_COLUMNS = {c.name: c.label for c in shown(("mean_loss", "mean_prob_given",
                                                 "mean_prob_suggested"))}


class NotSaved(OSError):
    """A decision could not be written; the message says where and what to do."""


def refuse_moved(review: Path, before: pd.DataFrame) -> None:
    """The browser route starts from the folder as exported: files moved or deleted in a file
    manager are decisions of the other route, which `dupes review import` reads; the browser
    would silently leave them out of manifest.csv."""
    after = set(list_review_tree(review, hashes=False)["review_path"])
    exported = set(before["review_path"])
    changed = sorted((exported - after) | (after - exported))
    if changed:
        raise ReviewError(
            f"{review} has {len(changed)} file(s) moved, deleted or added since the export "
            f"(e.g. {changed[0]}): it is being reviewed in a file manager. Finish that with "
            f"`dupes review import {review}`, or put the files back to triage it in the "
            "browser")


class Triage:
    """One review folder's triage: its exported rows, the decisions so far, and what they
    imply (manifest.csv, the ledger's confirmations), kept on disk after every decision."""

    def __init__(self, review: Path, *, ledger: Path | None = None):
        self.review = Path(review).resolve()
        meta = _read_meta(self.review)
        self.classes = [str(c) for c in meta["classes"]]
        self.specials = review_specials(meta)
        self.before = read_exported(self.review)
        refuse_moved(self.review, self.before)
        self.ledger = review_ledger(self.review, meta, ledger)
        run = _local_run(meta.get("run_dir"))
        self.scores = _scores(run, self.before)
        self.warnings = _run_warnings(run)
        path = self.review / META_DIR / DECISIONS_FILE
        self.decisions: dict = rundir.read_json(path) if path.exists() else {}
        self.lock = threading.Lock()

    def items(self) -> list[dict]:
        out = []
        for i, row in enumerate(self.before.itertuples(index=False)):
            p_suggested, second = _choices(row)
            out.append({"i": i, "review_path": row.review_path, "relpath": row.relpath,
                        "given": row.given_class, "suggested": row.suggested_class,
                        "votes": int(row.votes), "n_evals": int(row.n_evals),
                        "scores": self.scores.get(int(row.sample_id), {}),
                        "p_suggested": p_suggested, "second": second,
                        "decision": self.decisions.get(row.review_path)})
        return out

    def state(self) -> dict:
        return {"review": str(self.review), "classes": self.classes, "items": self.items(),
                "warnings": self.warnings,
                "decided": len(self.decisions), "total": len(self.before),
                "manifest": str(self.review / "manifest.csv"), "ledger": str(self.ledger),
                "actions": {k: v.replace("_remove", self.specials[0])
                            .replace("_unsure", self.specials[1]) for k, v in DECISIONS.items()}}

    def image(self, i: int) -> Path:
        if not 0 <= i < len(self.before):
            raise KeyError(i)
        return self.review / self.before["review_path"].iloc[i]

    def decide(self, review_path: str, decision: str | None, label: str | None = None) -> dict:
        """Record (or, with `decision` None, withdraw) the decision for one image; then the
        manifest and the ledger are brought in line. ValueError for an invalid decision."""
        with self.lock:
            new = dict(self.decisions)
            if decision is None:
                new.pop(review_path, None)
            else:
                new[review_path] = {"decision": decision, "label": label}
            manifest = decisions_manifest(self.before, new, self.classes,
                                          specials=self.specials)  # validates
            old_confirmed = self._confirmed(self.decisions)
            path = self.review / META_DIR / DECISIONS_FILE
            try:
                rundir.write_json(path, new)
                rundir.write_csv(self.review / "manifest.csv", manifest)
            except OSError as e:  # a full disk, a folder moved away: the page must say so
                try:  # what was acknowledged stays as it was, where it can be written back
                    rundir.write_json(path, self.decisions)
                except OSError:
                    pass
                raise NotSaved(f"not saved: {e.strerror or e} writing {e.filename or path}; "
                               "free space or fix the review folder, then decide again "
                               "(every earlier decision is kept)") from None
            self.decisions = new
            now = self._confirmed(new)
            if len(now):
                ledger_mod.add_confirmed(self.ledger, now, str(self.review))
            undone = old_confirmed[~old_confirmed["sha1"].isin(now["sha1"])]
            if len(undone):
                ledger_mod.withdraw_confirmed(self.ledger, undone, str(self.review))
            return {"decided": len(new), "total": len(self.before)}

    def _confirmed(self, decisions: dict) -> pd.DataFrame:
        keep = [p for p, d in decisions.items() if d.get("decision") == "confirm"]
        rows = self.before[self.before["review_path"].isin(keep)]
        return rows.rename(columns={"given_class": "class_name"})[
            ["sha1", "class_name", "relpath"]]


def _local_run(run_dir: str | None) -> Run | None:
    """The review's run when it is on this machine; None otherwise (a review folder moved to
    another machine, a run gone): the triage works without."""
    if not run_dir or storage.parse_location(run_dir) != Path(run_dir):
        return None
    try:
        return Run.open(run_dir)
    except Exception:  # gone, moved, or not a run any more
        return None


def _scores(run: Run | None, before: pd.DataFrame) -> dict[int, dict]:
    """{sample_id: {score name: value}} from the run's dupes table, when there is one."""
    if run is None:
        return {}
    try:
        table = run.dupes(columns=["sample_id", *SCORE_COLUMNS])
    except Exception:  # gone, moved, or written by an older version: no scores then
        return {}
    table = table[table["sample_id"].isin(before["sample_id"])]
    return {int(r["sample_id"]): {SCORE_COLUMNS[k]: round(float(r[k]), 4) for k in SCORE_COLUMNS}
            for r in table.to_dict("records")}


def _choices(row) -> tuple[float | None, list | None]:
    """p(suggested) and [second choice, its probability] of an exported row (None in a
    review exported before they were recorded, or where there is no second choice)."""
    def prob(name):
        try:
            v = float(getattr(row, name, ""))
        except ValueError:
            return None
        return round(v, 4) if v == v else None
    second = getattr(row, "second_class", "")
    p2 = prob("mean_prob_second")
    return prob("mean_prob_suggested"), ([second, p2] if second and p2 is not None else None)


def _run_warnings(run: Run | None) -> list[str]:
    """The run's model-quality warnings (summary.json), so the technician sees them where
    the decisions are made; [] without the run or a summary."""
    try:
        summary = run.summary() if run is not None else None
    except Exception:  # an unreadable summary: the triage works without
        return []
    return list(summary.quality_warnings) if summary is not None else []


def make_app(triage: Triage, token: str):
    """The aiohttp application: the page, the state, the images and the decisions; every
    request but the page's needs the session's token (other local users and web pages the
    browser has open must not decide for the technician)."""
    def checked(handler):
        async def wrapped(request):
            if request.headers.get("X-Token", request.query.get("token")) != token:
                raise web.HTTPForbidden(text="wrong or missing token: open the URL printed by "
                                             "`dupes review serve`")
            return await handler(request)
        return wrapped

    async def page(request):
        return web.Response(text=PAGE.read_text(), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def state(request):
        return web.json_response(triage.state())

    async def image(request):
        try:
            path = triage.image(int(request.match_info["i"]))
        except (KeyError, ValueError):
            raise web.HTTPNotFound() from None
        if not path.is_file():
            raise web.HTTPNotFound(text=f"{path} is gone from the review folder")
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def decide(request):
        try:
            body = await request.json()
            result = await asyncio.to_thread(triage.decide, str(body["review_path"]),
                                             body.get("decision"), body.get("label"))
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        except OSError as e:  # NotSaved: told to the page and the terminal, no traceback
            print(f"warning: {e}", file=sys.stderr, flush=True)
            return web.json_response({"error": str(e), "saved": False}, status=507)
        return web.json_response(result)

    app = web.Application()
    app.add_routes([web.get("/", page), web.get("/api/state", checked(state)),
                    web.get("/img/{i}", checked(image)),
                    web.post("/api/decide", checked(decide))])
    return app


class ReviewServer:
    """The triage page served from a background thread, on 127.0.0.1 only."""

    def __init__(self, review: Path, *, port: int = 0, ledger: Path | None = None):
        _read_meta(Path(review).resolve())  # a review folder, before its lock is made there
        self._lock = serve_lock(Path(review).resolve()).__enter__()  # one server per folder
        try:
            self.triage = Triage(review, ledger=ledger)
        except BaseException:
            self._lock.__exit__()
            raise
        self.token = secrets.token_urlsafe(16)
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="review-serve")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def start(self) -> "ReviewServer":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self._lock.__exit__()
            raise ReviewError(f"cannot serve on 127.0.0.1:{self.port} ({self._error}): pass "
                              "another --port, or 0 for a free one") from None
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(make_app(self.triage, self.token), access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]  # the port the OS chose for --port 0
        except BaseException as e:  # a port in use: told to the caller, not swallowed
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._lock.__exit__()
