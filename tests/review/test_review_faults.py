"""Faults of the review loop, on real folders and a real server: one server per folder, a
decision that cannot be written is reported (to the page too) and loses nothing, and the
browser refuses a folder the file manager has changed."""
import json
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.review.files import ReviewError, import_review
from orchestrator.review.server import ReviewServer
from tests.review.test_review import at
from tests.review.test_review_serve import decide, two_reviews  # noqa: F401 - a fixture

NODE = shutil.which("node")


def test_a_second_server_or_an_import_on_a_served_folder_is_refused(two_reviews, tmp_path,
                                                                   capsys):
    web, _ = two_reviews
    server = ReviewServer(web, port=0).start()
    try:
        decide(server, web, "0/img1.png", "accept")
        with pytest.raises(ReviewError, match="being triaged by pid"):
            ReviewServer(web, port=0)
        with pytest.raises(ReviewError, match="being triaged by pid"):
            import_review(web)
        # a second process, as a user starting `dupes review serve` again in another terminal
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "review", "serve",
                              str(web), "--port", "0"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 2 and "being triaged by" in out.stdout, out
        assert "Traceback" not in out.stdout + out.stderr
    finally:
        server.stop()
    saved = json.loads((web / ".dupes" / "decisions.json").read_text())
    assert list(saved) == [at(web, "0/img1.png").relative_to(web).as_posix()]  # not wiped
    ReviewServer(web, port=0).start().stop()  # the lock went with the first server


def test_a_decision_that_cannot_be_written_says_so_and_loses_nothing(two_reviews, tmp_path):
    web, _ = two_reviews
    server = ReviewServer(web, port=0).start()
    moved = tmp_path / "moved-away"
    try:
        assert decide(server, web, "0/img1.png", "accept")["decided"] == 1
        web.rename(moved)  # the folder moved (or its disk filled) while the page is open
        with pytest.raises(urllib.error.HTTPError) as e:
            decide(server, moved, "1/img2.png", "relabel", "cat")
        body = json.loads(e.value.read())
        assert e.value.code == 507 and body["saved"] is False
        assert body["error"].startswith("not saved:") and "decide again" in body["error"]
        moved.rename(web)
        assert server.triage.decisions.keys() == {at(web, "0/img1.png").relative_to(web)
                                                  .as_posix()}  # the failed one is not counted
        assert decide(server, web, "1/img2.png", "relabel", "cat")["decided"] == 2
    finally:
        server.stop()
    assert len(json.loads((web / ".dupes" / "decisions.json").read_text())) == 2


@pytest.mark.skipif(not NODE, reason="no node")
def test_the_page_shows_a_decision_that_was_not_saved(two_reviews, tmp_path):
    """The page's own script (node, a minimal DOM) against the real server."""
    web, _ = two_reviews
    server = ReviewServer(web, port=0).start()
    root = Path(__file__).resolve().parents[2]
    harness = root / "tests" / "review_page_harness.js"
    page = root / "orchestrator" / "review" / "page.html"
    keys = {r: ["a"] for r in server.triage.before["relpath"]}
    try:
        web.rename(tmp_path / "away")
        res = subprocess.run([NODE, str(harness), str(page), server.url,
                              json.dumps({"n": 1, "keys": keys})],
                             capture_output=True, text=True, timeout=60)
        (tmp_path / "away").rename(web)
    finally:
        server.stop()
    assert res.returncode == 0, res.stderr
    [(_, decided, error, _)] = json.loads(res.stdout)
    assert decided == 0 and error.startswith("not saved:"), error


def test_the_browser_refuses_a_folder_changed_in_a_file_manager(two_reviews, capsys):
    web, _ = two_reviews
    src = at(web, "1/img2.png")
    shutil.move(src, web / "cat" / src.name)
    with pytest.raises(ReviewError, match="dupes review import"):
        ReviewServer(web, port=0)
    assert main(["review", "serve", str(web), "--port", "0"]) == 2
    assert "moved, deleted or added since the export" in capsys.readouterr().out
    manifest, problems = import_review(web, accept_untouched=True)  # that route still works
    assert problems == [] and "cat" in set(manifest["new_label"])
