"""Train page in a real browser: a compact training starts, its loss chart grows, Stop ends it.

The project's training set is built through the library (shared face photos
with their true boxes, a few augmented copies each). On the page: choose the
compact backbone, a few epochs, Start; the plotly loss chart (read from the
DOM, ``.js-plotly-plot``'s ``data``) must gain points as epochs end; then
Stop (or the end of the run); the run folder's ``history.csv`` has a row per
epoch shown.
"""

from __future__ import annotations

import csv
import time

import pytest
from conftest import open_page, require_shared_faces, screenshot, wait_idle, wait_until
from fakecam import make_face_project
from playwright.sync_api import expect

from facetrack import runs as run_files

PROJECT = "e2e-train"
EPOCHS = 12

# x points of each plotly chart on the page, by title
CHART_POINTS = """els => els.map(el => [
    (el.layout && el.layout.title && (el.layout.title.text || el.layout.title)) || '',
    (el.data || []).map(t => (t.x || []).length),
])"""


def loss_points(page) -> int:
    """Points in the first loss chart's first trace (0 when there is no chart yet)."""
    charts = page.locator(".js-plotly-plot").evaluate_all(CHART_POINTS)
    for title, counts in charts:
        if "Loss" in str(title) and counts:  # titles come back wrapped in <b>
            return int(counts[0])
    return 0


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_compact_training_chart_grows_and_stop_keeps_history(page, app_server, e2e_workspace):
    require_shared_faces()
    project = make_face_project(e2e_workspace, PROJECT, n_faces=16, n_empty=4, copies=20, output_size=128)

    open_page(page, app_server, "train", PROJECT)
    expect(page.get_by_role("heading", name="4. Train")).to_be_visible()
    expect(page.get_by_text("Training set:")).to_be_visible()
    page.get_by_text("Compact (small and fast, works offline)").click()
    wait_idle(page)
    epochs = page.get_by_label("Epochs (rounds)", exact=True)
    epochs.fill(str(EPOCHS))
    epochs.press("Enter")
    wait_idle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Batch size").click()
    page.get_by_role("option", name="8", exact=True).click()  # more steps per epoch: a visible progress
    wait_idle(page)
    page.get_by_role("button", name="Start training").click()

    stop = page.get_by_role("button", name="Stop training")
    expect(stop).to_be_visible(timeout=60_000)
    runs = project.runs()
    assert len(runs) == 1, runs
    run_dir = runs[0]

    # the loss chart appears after the first epoch and gains a point per epoch
    seen: list[int] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        n = loss_points(page)
        if n and (not seen or n != seen[-1]):
            seen.append(n)
        if len(seen) >= 3 or not run_files.run_state(run_dir).active:
            break
        time.sleep(0.3)
    assert len(seen) >= 2 and seen == sorted(seen), f"loss chart points seen over time: {seen}"
    screenshot(page, "train", docs_name="train")

    if run_files.run_state(run_dir).active:
        stop.click()
    state = wait_until(
        lambda: (s := run_files.run_state(run_dir)).state in ("stopped", "finished") and not s.active and s,
        90,
        message="the training to stop",
    )
    assert (run_dir / "model.keras").is_file(), "stop must keep the best model"
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= seen[-1], (len(rows), seen)
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(float(r["loss"]) > 0 for r in rows)
    if state.state == "stopped":
        assert len(rows) < EPOCHS

    # the page shows the ended run with the whole history in its chart
    wait_idle(page)
    label = "Stopped" if state.state == "stopped" else "Finished"
    expect(page.get_by_text(f"— {label}")).to_be_visible(timeout=30_000)
    wait_until(
        lambda: loss_points(page) == len(rows), 30, message=f"{len(rows)} points in the past run's chart"
    )
    expect(page.get_by_role("button", name="Start training")).to_be_enabled()
