"""The browser triage's server on real files: its decisions give the file-manager route's
manifest and ledger, survive a restart, can be undone, and need the session's token."""
import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.run.ledger import read_ledger
from orchestrator.review.files import ReviewError, export_review, import_review
from orchestrator.review.server import ReviewServer
from tests.review.test_review import WRONG, at, make_run

# one decision per exported image, as the browser sends them (decision, label), and the same
# decision as a file-manager move
DECISIONS = {"0/img0.png": ("confirm", None), "0/img1.png": ("accept", None),
             "1/img2.png": ("relabel", "cat"), "cat/sub/img3.png": ("remove", None),
             "cat/img1.png": ("unsure", None)}


def file_manager(review: Path, rel: str, decision: str, label: str | None) -> None:
    src = at(review, rel)
    if decision == "confirm":
        src.unlink()
    elif decision == "relabel":
        shutil.move(src, review / label)
    elif decision in ("remove", "unsure"):
        shutil.move(src, review / f"_{decision}")


def call(server: ReviewServer, path: str, body: dict | None = None, token: str | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-Token": server.token if token is None else token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def decide(server, review: Path, rel: str, decision, label=None):
    path = at(review, rel).relative_to(review).as_posix()
    return json.loads(call(server, "/api/decide", {"review_path": path, "decision": decision,
                                                   "label": label})[1])


@pytest.fixture
def two_reviews(tmp_path):
    _, run = make_run(tmp_path, WRONG)
    web, fm = tmp_path / "web", tmp_path / "fm"
    export_review(run, web, threshold=">=2")
    export_review(run, fm, threshold=">=2")
    return web, fm


def test_browser_decisions_give_the_file_managers_manifest_and_ledger(two_reviews, tmp_path):
    web, fm = two_reviews
    server = ReviewServer(web, port=0, ledger=tmp_path / "web-ledger.csv").start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        state = json.loads(call(server, "/api/state")[1])
        assert state["total"] == 5 and state["decided"] == 0
        assert {it["relpath"] for it in state["items"]} == set(DECISIONS)
        status, png = call(server, "/img/0")
        assert status == 200 and png[:4] == b"\x89PNG"
        for rel, (decision, label) in list(DECISIONS.items())[:2]:
            decide(server, web, rel, decision, label)
    finally:
        server.stop()
    # a closed page and a stopped server lose nothing: the next one goes on from there
    server = ReviewServer(web, port=0, ledger=tmp_path / "web-ledger.csv").start()
    try:
        state = json.loads(call(server, "/api/state")[1])
        assert state["decided"] == 2
        for rel, (decision, label) in list(DECISIONS.items())[2:]:
            assert decide(server, web, rel, decision, label)["decided"] <= 5
    finally:
        server.stop()

    for rel, (decision, label) in DECISIONS.items():
        file_manager(fm, rel, decision, label)
    expected, problems = import_review(fm, ledger=tmp_path / "fm-ledger.csv")
    assert problems == []
    got = pd.read_csv(web / "manifest.csv", dtype=str, keep_default_na=False)
    assert got.equals(pd.read_csv(fm / "manifest.csv", dtype=str, keep_default_na=False))
    assert set(got["action"]) == {"confirm", "relabel", "remove", "unsure"}
    cols = ["sha1", "class_name", "relpath"]
    assert read_ledger(tmp_path / "web-ledger.csv")[cols].equals(
        read_ledger(tmp_path / "fm-ledger.csv")[cols])


def test_undo_withdraws_from_the_manifest_and_the_ledger(two_reviews, tmp_path):
    web, _ = two_reviews
    ledger = tmp_path / "ledger.csv"
    server = ReviewServer(web, port=0, ledger=ledger).start()
    try:
        decide(server, web, "0/img0.png", "confirm")
        assert read_ledger(ledger)["relpath"].tolist() == ["0/img0.png"]
        assert decide(server, web, "0/img0.png", None) == {"decided": 0, "total": 5}
        assert read_ledger(ledger).empty
        assert pd.read_csv(web / "manifest.csv").empty
        decide(server, web, "0/img0.png", "accept")
        manifest = pd.read_csv(web / "manifest.csv", dtype=str)
        assert manifest[["relpath", "action", "new_label"]].values.tolist() == [
            ["0/img0.png", "relabel", "1"]]
    finally:
        server.stop()


def test_the_server_refuses_strangers_and_bad_decisions(two_reviews):
    web, _ = two_reviews
    server = ReviewServer(web, port=0).start()
    try:
        status, page = call(server, "/")
        assert status == 200 and b"keydown" in page and b"http" not in page.split(b"<script>")[1]
        with pytest.raises(urllib.error.HTTPError) as e:
            call(server, "/api/state", token="guess")
        assert e.value.code == 403
        for body, why in [({"decision": "keep"}, "valid choices"),
                          ({"decision": "relabel", "label": "dog"}, "choose one of the classes"),
                          ({"decision": "relabel", "label": "0"}, "other than its given")]:
            path = at(web, "0/img0.png").relative_to(web).as_posix()
            with pytest.raises(urllib.error.HTTPError) as e:
                call(server, "/api/decide", {"review_path": path, **body})
            assert e.value.code == 400 and why in json.loads(e.value.read())["error"]
        # loopback only: the machine's other addresses do not answer
        with socket.socket() as s:
            s.settimeout(2)
            other = socket.gethostbyname(socket.gethostname())
            if not other.startswith("127."):
                assert s.connect_ex((other, server.port)) != 0
    finally:
        server.stop()
    with pytest.raises(ReviewError, match="another --port"):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            ReviewServer(web, port=taken.getsockname()[1]).start()


def test_a_folder_triaged_in_the_browser_is_not_imported_as_untouched(two_reviews):
    web, _ = two_reviews
    server = ReviewServer(web, port=0).start()
    try:
        decide(server, web, "0/img0.png", "accept")
    finally:
        server.stop()
    with pytest.raises(ReviewError, match="reviewed in the browser.*apply .*manifest.csv"):
        import_review(web)


def test_the_page_gets_the_second_choice_and_the_runs_warnings(tmp_path):
    from orchestrator.run import rundir
    from orchestrator.run.records import Summary

    _, run = make_run(tmp_path, WRONG)
    warning = "the models disagree: two trainings name the same class for an image 41% ..."
    rundir.write_json(run / "summary.json", Summary(
        "data", str(run), 12, 3, 4, 4, 0, 24, 5, ">=2", {}, [warning], 0.5, 1.0, 1, {},
        1.0).to_dict())
    web = tmp_path / "web"
    export_review(run, web, threshold=">=2")
    server = ReviewServer(web, port=0, ledger=tmp_path / "ledger.csv").start()
    try:
        state = json.loads(call(server, "/api/state")[1])
    finally:
        server.stop()
    assert state["warnings"] == [warning]
    for it in state["items"]:
        second, prob = it["second"]  # three classes: the one neither given nor suggested
        assert second not in (it["given"], it["suggested"]) and 0 <= prob <= 1
