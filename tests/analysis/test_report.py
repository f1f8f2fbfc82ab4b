import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from rich.console import Console

from analysis.report import report
from analysis.rule import DupeRule
from analysis.run_analysis import analyze, dupes_export_table


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


@pytest.fixture
def tables():
    """4 samples, 2 repeats x 2 folds; sample 3 ('b/x.png', given b) is always called 'a'."""
    classes = ["a", "b"]
    index = pd.DataFrame({"sample_id": np.arange(4), "relpath": ["a/1.png", "a/2.png", "b/3.png",
                          "b/x.png"], "label": np.array([0, 0, 1, 1], np.int16),
                          "class_name": ["a", "a", "b", "b"]})
    rows = []
    for r in range(2):
        for f, held in ((0, [0, 2]), (1, [1, 3])):
            for s in held:
                label = int(index.label[s])
                pred = 0 if s == 3 else label
                p = np.array([0.95, 0.05]) if pred == 0 else np.array([0.1, 0.9])
                rows.append((s, r, f, label, pred, float(-np.log(p[label])), p))
    s, r, f, label, pred, loss, probs = zip(*rows)
    table = pa.table({
        "sample_id": pa.array(s, pa.int64()), "repeat": pa.array(r, pa.int16()),
        "fold": pa.array(f, pa.int8()), "label": pa.array(label, pa.int16()),
        "pred": pa.array(pred, pa.int16()), "loss": pa.array(loss, pa.float32()),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(probs), pa.float32()), 2),
    })
    return index, table, classes


def test_analysis_and_report_render(tables):
    index, preds, classes = tables
    a = analyze(index, preds, classes, rule=DupeRule("2", select="votes"))
    assert a.dupes["relpath"].tolist() == ["b/x.png"]
    assert a.per_threshold == {">=10": 0, ">=9": 0, ">=8": 0, ">=2": 1}
    assert a.accuracy["accuracy"].tolist() == [1.0, 0.5, 1.0, 0.5]
    row = dupes_export_table(a.dupes).iloc[0]
    assert (row.given_class, row.suggested_class, row.votes, row.n_evals) == ("b", "a", 2, 2)
    assert row.mean_prob_given == pytest.approx(0.05)
    text = render(report(a, seconds={(0, 0): 1.5}))
    assert "1.0000 (1.5s)" in text and "0.5000" in text
    assert ">=2  <- selected" in text
    assert "b/x.png" in text and "2/2" in text and "0.050" in text
    assert "top 20 dupes (>=2, of 1)" in text


def test_analyze_rejects_incomplete_tables(tables):
    index, preds, classes = tables
    with pytest.raises(ValueError, match="probs"):
        analyze(index, preds.drop_columns(["probs"]), classes)
    with pytest.raises(ValueError, match="valid forms"):
        analyze(index, preds, classes, rule=DupeRule("most", select="votes"))


def test_report_shows_error_analysis_and_second_opinion(tables):
    index, preds, classes = tables
    a = analyze(index, preds, classes, rule=DupeRule("2", select="votes"), train_accuracy={(0, 0): 1.0})
    assert a.confusion.tolist() == [[4, 0], [2, 2]]
    assert {"self_confidence", "normalized_margin", "cl_issue", "combined"} <= set(a.votes)
    assert a.votes["combined"].idxmax() == 3  # the always-wrong sample is the most suspect
    assert a.votes.loc[3, "mean_prob_suggested"] == pytest.approx(0.95)
    assert np.isnan(a.votes.loc[0, "mean_prob_suggested"])  # never wrong: no suggestion
    text = render(report(a))
    assert "second opinion" in text and "most confused pairs over all held-out" in text
    assert "error rate per given class" in text and "fit: training vs held-out" in text


def test_html_report_is_one_valid_page_with_thumbnails_and_escaped_names(tables):
    from html.parser import HTMLParser

    from analysis.html import html_report

    index, preds, classes = tables
    index = index.assign(relpath=["a/1.png", "a/2.png", "b/3.png", "b/<x>&.png"])
    a = analyze(index, preds, classes, rule=DupeRule("2", select="votes"))
    uri = "data:image/png;base64,AAAA"
    page = html_report(a, thumbs={3: uri}, title="t<1>", sheets=["sheets/top_losses.png"])

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))
            if tag not in ("meta", "img", "br", "input"):  # void elements
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag, f"unbalanced </{tag}>"

    check = Check()
    check.feed(page)
    assert check.stack == []  # every element is closed in order
    imgs = [attrs["src"] for tag, attrs in check.tags if tag == "img"]
    assert imgs == [uri, uri]  # in the dupes table and in the top losses
    assert "b/&lt;x&gt;&amp;.png" in page and "<x>" not in page and "t&lt;1&gt;" in page
    assert sum(tag == "table" and "sortable" in attrs.get("class", "")
               for tag, attrs in check.tags) == 5
    assert 'href="sheets/top_losses.png"' in page and "confusion matrix" in page
    with pytest.raises(ValueError, match="top"):
        html_report(a, top=0)


def test_the_html_report_lists_every_dupe_with_links_and_filters():
    from analysis.html import html_report

    a = analyze(*_random_run(300, 2, accuracy=0.3), rule=DupeRule("2", min_ratio=0))
    assert len(a.dupes) > 20
    page = html_report(a, top=5, link_base="/data/my set")
    dupes_table = page[page.index('id="dupes"'):page.index("held-out losses")]
    assert dupes_table.count("<tr data-votes=") == len(a.dupes)  # not cut at `top`
    first = a.dupes["relpath"].iloc[0]
    assert f'href="file:///data/my%20set/{first}"' in page
    assert 'class="filters" data-table="dupes"' in page and "hide confirmed" in page
    assert "href=\"file://" not in html_report(a, top=5)  # a bucket dataset: no links


def test_contact_sheet_grid_captions_and_placeholders():
    from PIL import Image

    from analysis.sheets import contact_sheet, dupe_pairs

    red = Image.new("RGB", (8, 8), (255, 0, 0))
    sheet = contact_sheet([red, None, red], [["a -> b", "votes 9/10", "p 0.1"]] * 3,
                          columns=2, tile=64, title="x")
    assert sheet.width == 2 * (64 + 6) + 6
    px = np.asarray(sheet)
    assert (px == [255, 0, 0]).all(-1).sum() == 2 * 64 * 64  # small images enlarged, not blurred
    assert (px == [200, 200, 200]).all(-1).sum() > 0.8 * 64 * 64  # the missing one
    with pytest.raises(ValueError, match="captions"):
        contact_sheet([red], [])
    dupes = pd.DataFrame({"given_class": ["a", "a", "b"], "suggested_class": ["b", "b", "a"]})
    assert [(g, s, len(d)) for g, s, d in dupe_pairs(dupes)] == [("a", "b", 2), ("b", "a", 1)]


def test_every_tile_names_its_file_and_no_caption_runs_into_the_next_tile():
    from PIL import ImageFont

    from analysis.sheets import fit_line, tile_caption

    row = pd.DataFrame({"relpath": ["plankton/very/deep/folder/structure/IFCB_D2019_0042.png"],
                        "given_class": ["Chaetoceros_socialis_with_a_long_name"],
                        "suggested_class": ["Guinardia_delicatula"], "top_wrong_votes": [9],
                        "n_evals": [10], "mean_loss": [3.21], "mean_prob_given": [0.021]})
    caption = tile_caption(next(row.itertuples()))
    assert caption[0].endswith("IFCB_D2019_0042.png") and "votes 9/10" in caption[2]
    font = ImageFont.load_default(size=11)
    for i, line in enumerate(caption):
        fitted = fit_line(line, font, 128, keep_end=i == 0)
        assert font.getlength(fitted) <= 128, fitted
    assert fit_line(caption[0], font, 128, keep_end=True).endswith("0042.png")
    assert fit_line("short", font, 128) == "short"


def states(d: dict) -> dict:
    """Training states as the board keeps them, from progress.json's form."""
    from orchestrator.run.records import TrainingState
    return {k: TrainingState.from_dict(v) for k, v in d.items()}


def test_progress_shows_the_current_top_held_out_losses():
    from orchestrator.pipeline.progress import RunProgress, live_top_losses, progress_table

    progress = states({(0, 0): {"status": "running", "epoch": 3, "epochs": 6, "loss": 0.5,
                                "heldout_loss": 0.71, "top": [(7, 4.2), (3, 1.0)]},
                       (0, 1): {"status": "running", "epoch": 2, "epochs": 6, "loss": 0.6,
                                "top": [(9, 2.5)]},
                       (1, 0): {"status": "done", "top": [(5, 9.9)], "heldout_accuracy": 0.9}})
    names = {7: "cat/7.png", 9: "dog/9.png"}
    text = render(live_top_losses(progress, names=names, k=2))
    assert text.index("cat/7.png") < text.index("dog/9.png") and "4.20" in text
    assert "#3" not in text and "9.90" not in text  # top k, running trainings only
    assert "0.710" in render(progress_table(sorted(progress), progress))
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    RunProgress(console, sorted(progress), names=names).update(progress)
    plain = console.file.getvalue()
    assert "highest held-out loss now: cat/7.png 4.20; dog/9.png 2.50; #3 1.00" in plain
    assert live_top_losses(states({(0, 0): {"status": "running"}})) is None


def test_live_sheet_draws_the_running_trainings_top_losses(tmp_path):
    from PIL import Image

    from orchestrator.data.prepare import Prepared
    from orchestrator.visual import live_sheet

    rng = np.random.default_rng(0)
    index = pd.DataFrame({"sample_id": np.arange(6), "relpath": [f"c/{i}.png" for i in range(6)],
                          "label": np.array([0, 1, 0, 1, 0, 1], np.int16)})
    prep = Prepared(index=index, classes=["a", "b"],
                    images=rng.integers(0, 255, (6, 8, 8, 1), dtype=np.uint8),
                    folds=np.zeros((1, 6), np.int8))
    live_sheet(tmp_path, states({(0, 0): {"status": "done", "top": [(1, 9.0)]}}), prep)
    assert not (tmp_path / "sheets").exists()  # nothing running: nothing drawn
    state = states({(0, 0): {"status": "running", "epoch": 3, "top": [(1, 2.5), (4, 1.5)]},
                    (0, 1): {"status": "running", "epoch": 2, "top": [(2, 3.0)]}})
    live_sheet(tmp_path, state, prep)
    sheet = Image.open(tmp_path / "sheets" / "live_top_losses.png")
    assert sheet.width > 3 * 128 and sheet.height > 128  # three tiles in one row


def test_thumbnails_scale_images_as_the_sheet_tiles_do():
    import base64
    import io

    from PIL import Image

    from analysis.sheets import contact_sheet, fit
    from orchestrator.visual import thumbnail_uri

    checker = Image.fromarray((np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8))
    uri = thumbnail_uri(checker, px=64)
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert thumb.shape == (64, 64)
    assert set(np.unique(thumb)) == {0, 255}  # enlarged 2x+: crisp pixels, no smoothing
    tile = np.asarray(contact_sheet([checker], [["x"]], columns=1, tile=64))[6:70, 6:70, 0]
    np.testing.assert_array_equal(tile, thumb)  # the HTML shows what the sheets show
    assert len(np.unique(np.asarray(fit(checker, 40)))) > 2  # 1.4x: smoothed, not blocky


def _random_run(n: int, classes: int, accuracy: float, seed: int = 0, noise: float = 0.0,
                repeats: int = 2):
    """n samples, `repeats` x 2 folds, predictions of the true class with probability
    `accuracy`; a share `noise` of the given labels is wrong (another class at random)."""
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(classes)]
    truth = rng.integers(0, classes, n)
    flip = rng.random(n) < noise
    labels = np.where(flip, (truth + 1 + rng.integers(0, classes - 1, n)) % classes, truth)
    index = pd.DataFrame({"sample_id": np.arange(n), "relpath": [f"x/{i}.png" for i in range(n)],
                          "label": labels.astype(np.int16),
                          "class_name": [names[c] for c in labels]})
    cols = {k: [] for k in ("sample_id", "repeat", "fold", "label", "pred", "loss", "probs")}
    for r in range(repeats):
        fold = rng.integers(0, 2, n)
        for s in range(n):
            right = rng.random() < accuracy
            pred = truth[s] if right else (truth[s] + 1 + rng.integers(0, classes - 1)) % classes
            p = np.full(classes, 0.2 / (classes - 1))
            p[pred] = 0.8
            for k, v in zip(cols, (s, r, fold[s], labels[s], pred, -np.log(p[labels[s]]), p)):
                cols[k].append(v)
    table = pa.table({
        "sample_id": pa.array(cols["sample_id"], pa.int64()),
        "repeat": pa.array(cols["repeat"], pa.int16()), "fold": pa.array(cols["fold"], pa.int8()),
        "label": pa.array(cols["label"], pa.int16()), "pred": pa.array(cols["pred"], pa.int16()),
        "loss": pa.array(cols["loss"], pa.float32()),
        "probs": pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(cols["probs"]), pa.float32()), classes)})
    return index, table, names


def test_the_quality_gate_fires_on_near_chance_models_and_stays_quiet_on_good_ones():
    from analysis.quality import quality_warnings

    weak = analyze(*_random_run(400, 10, accuracy=0.2),
                   rule=DupeRule("2", min_ratio=0, select="votes"))
    warnings = quality_warnings(weak)
    assert len(warnings) == 2, warnings
    assert "held-out accuracy 0.2" in warnings[0] and "disagree" in warnings[1]
    assert "--mode frozen" in warnings[0]  # the advice for an unknown kind of model
    assert "train longer" not in " ".join(warnings)  # measured not to help
    # a threshold of one vote flags a third of the images, where confident learning
    # estimates 1% wrong labels: the threshold, not the labels, is the likelier cause
    flagged = quality_warnings(analyze(*_random_run(400, 10, accuracy=0.8),
                                       rule=DupeRule("1", min_ratio=0, select="votes")))
    assert len(flagged) == 1 and "are flagged" in flagged[0], flagged
    text = render(report(weak))
    assert text.index("may not be trustworthy") < text.index("held-out accuracy per training")
    from analysis.html import html_report
    page = html_report(weak, top=5)  # where people look: the HTML report, before the cards
    assert page.index("may not be trustworthy") < page.index('class="cards"')
    assert "the models disagree" in page and "votes for one wrong class" in page
    good = analyze(*_random_run(400, 10, accuracy=0.95), rule=DupeRule("2", min_ratio=0))
    assert quality_warnings(good) == []
    assert "trustworthy" not in render(report(good))
    assert "trustworthy" not in html_report(good, top=5)
    with pytest.raises(ValueError, match="min_lift"):
        quality_warnings(good, min_lift=2)


@pytest.mark.parametrize("noise", [0.05, 0.2, 0.4])
def test_the_verdict_follows_the_models_not_the_label_noise(noise):
    """Good models under heavy label noise score low against the given labels (0.57 at 40%),
    and are not called weak; models near chance are, at every noise level."""
    from analysis.quality import quality_warnings

    good = analyze(*_random_run(2000, 10, accuracy=0.95, noise=noise, repeats=4, seed=1),
                   rule=DupeRule())
    accuracy = float(good.accuracy["accuracy"].mean())
    assert accuracy < 0.95 * (1 - noise) + 0.02  # the given labels hold the accuracy down
    assert quality_warnings(good) == [], (accuracy, good.agreement)
    weak = analyze(*_random_run(2000, 10, accuracy=0.3, noise=noise, repeats=4, seed=1),
                   rule=DupeRule())
    warnings = quality_warnings(weak, mode="scratch")
    assert any("disagree" in w for w in warnings), (weak.agreement, warnings)
    assert all("--mode frozen" in w for w in warnings)  # advice for models from scratch


def test_model_agreement_counts_pairs_of_predictions():
    from analysis.run_analysis import model_agreement

    # image 0: predictions 1, 1, 2 -> 1 agreeing pair of 3; image 1: 0, 0 -> 1 of 1; image 2:
    # one prediction, left out
    got = model_agreement(np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 2, 0, 0, 1]),
                          num_samples=3, num_classes=3)
    assert got == pytest.approx((1 / 3 + 1) / 2)
    assert model_agreement(np.array([0]), np.array([1]), num_samples=1, num_classes=2) is None


def test_the_report_says_what_was_trained_and_why():
    from analysis.report import trained_settings

    config = {"hyp": {"model": "smallcnn", "width": 16, "epochs": 12, "batch_size": 128,
                      "lr": 0.2, "flip": False, "translate": 2},
              "hyp_set": ["translate"],
              "hyp_chosen": {"flip": "off: mirroring changes the labels (...)",
                             "epochs": "12: about 60,000 images seen per training"}}
    rows = dict(trained_settings(config, {"image_size": 28, "channels": 1, "aspect": "pad"}))
    assert rows["model"] == "smallcnn (width 16)" and rows["image size"] == "28x28x1, pad"
    assert rows["flip"].startswith("off: mirroring") and rows["given"] == "translate"
    from analysis.html import html_report

    a = analyze(*_random_run(60, 2, accuracy=0.5), rule=DupeRule("2", min_ratio=0))
    page = html_report(a, top=5, settings=list(rows.items()))
    assert "what was trained" in page and "mirroring changes the labels" in page
    assert "what was trained" not in html_report(a, top=5)


def test_weak_models_select_by_ranking_and_the_report_says_why():
    from rich.console import Console

    reachable = DupeRule(">=2", min_ratio=0)  # 2 predictions per image in these runs
    weak = analyze(*_random_run(400, 10, accuracy=0.6), rule=reachable)
    assert weak.selected_by == "ranking" and "under 0.8" in weak.selected_why
    by_votes = analyze(*_random_run(400, 10, accuracy=0.6),
                       rule=DupeRule(">=2", min_ratio=0, select="votes"))
    # how many: the smallest of confident learning's count of the mean, the images it flags
    # in >= 2 of their trainings' own predictions, and the votes' count
    steady = int((weak.votes["confident_votes"] >= 2).sum())
    assert len(weak.dupes) == min(weak.num_confident, len(by_votes.dupes), steady) > 0
    assert weak.num_confident <= weak.num_issues  # before calibration: fewer
    assert "the smallest of" in weak.selected_why and f"({steady:,})" in weak.selected_why
    # a run recorded before the trainings' thresholds: the two estimates it has
    from analysis.run_analysis import prediction_arrays
    index, table, classes = _random_run(400, 10, accuracy=0.6)
    cols = prediction_arrays(table)
    del cols["confident"]
    from analysis.probs import mean_probs_of
    cols["mean_probs"] = mean_probs_of(table, num_samples=len(index))
    old = analyze(index, cols, classes, rule=reachable)
    assert "confident_votes" not in old.votes and "the smaller of" in old.selected_why
    assert len(old.dupes) == min(old.num_confident, len(by_votes.dupes))
    # which: the most suspect first, and only images some model predicted wrong
    sc = weak.dupes["self_confidence"].to_numpy()
    assert (np.diff(sc) >= 0).all() and (weak.dupes["top_wrong_class"] >= 0).all()
    console = Console(record=True, width=200)
    console.print(report(weak))
    text = console.export_text()
    assert "dupes: the" in text and "most suspect images by combined" in text, text
    assert f"top 20 dupes (top {len(weak.dupes)} by combined" in text
    # forced votes, and strong models: the votes, as before
    assert by_votes.selected_by == "votes" and by_votes.set_name == ">=2"
    strong = analyze(*_random_run(400, 10, accuracy=0.95), rule=reachable)
    assert strong.selected_by == "votes" and "0.9" in strong.selected_why


def test_votes_that_cannot_reach_the_threshold_give_way_to_the_ranking():
    # 2 predictions per image and >= 8 votes: no image could ever be a dupe by votes
    few = analyze(*_random_run(400, 10, accuracy=0.85))
    assert few.selected_by == "ranking" and "cannot reach >=8 votes" in few.selected_why
    assert len(few.dupes) == few.num_confident > 0
    assert "counts as confidently mislabelled" in few.selected_why
    kept = analyze(*_random_run(400, 10, accuracy=0.85), rule=DupeRule(select="votes"))
    assert kept.selected_by == "votes" and len(kept.dupes) == 0


def test_a_threshold_given_without_a_selection_means_the_votes():
    from analysis.rule import implied
    assert implied({"threshold": "7"}) == {"threshold": "7", "select": "votes"}
    assert implied({"min_ratio": 0.0})["select"] == "votes"
    assert implied({"threshold": "7", "select": "ranking"})["select"] == "ranking"
    assert implied({"rank": "mean_loss"}) == {"rank": "mean_loss"}
    with pytest.raises(ValueError, match="valid choices"):
        DupeRule(select="most")


def test_the_training_row_says_whether_the_heads_were_pruned():
    from analysis.report import model_and_training

    frozen = {"mode": "frozen", "backbone": "efficientnet_lite0", "embed_size": 192,
              "head_l2": 1000.0, "head_hidden": 0}
    (_, model), (_, pruned) = model_and_training({**frozen, "head_prune": True})
    assert model.startswith("frozen efficientnet_lite0 features at 192 px")
    assert pruned == ("a head per training: logistic regression, L2 1000.0, fit again "
                      "without what a cross-fit on its half flags")
    # a run recorded before the prune (config.json without it) was fit once
    assert model_and_training(frozen)[1][1] == ("a head per training: logistic regression, "
                                                "L2 1000.0")


def test_count_mean_takes_confident_learnings_count_of_the_mean_alone():
    run = _random_run(1000, 10, accuracy=0.6, noise=0.1, repeats=10)
    smallest = analyze(*run, rule=DupeRule())
    mean = analyze(*run, rule=DupeRule(count="mean"))
    assert mean.selected_by == "ranking" and "--count mean" in mean.selected_why
    assert len(mean.dupes) == mean.num_confident != len(smallest.dupes)
    # the same ranking: the smaller set is the top of the larger
    top = min(len(mean.dupes), len(smallest.dupes))
    assert (mean.dupes["sample_id"].to_numpy()[:top]
            == smallest.dupes["sample_id"].to_numpy()[:top]).all()
    with pytest.raises(ValueError, match="valid choices are"):
        DupeRule(count="most")
    assert DupeRule(count="mean").with_threshold("9").count == "mean"
