"""Plotly figures for the pages (no Streamlit calls here: pages pass them to ``st.plotly_chart``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

# (history column, legend name, colour, dashed)
_LOSS_SERIES = (
    ("loss", "total (train)", "#1f77b4", False),
    ("class_loss", "face / no face (train)", "#ff7f0e", False),
    ("bbox_loss", "box (train)", "#2ca02c", False),
    ("val_loss", "total (validation)", "#1f77b4", True),
    ("val_class_loss", "face / no face (validation)", "#ff7f0e", True),
    ("val_bbox_loss", "box (validation)", "#2ca02c", True),
)
_SCORE_SERIES = (
    ("val_ap50", "AP@0.5 over every face", "#d62728"),
    ("val_score", "validation score", "#9467bd"),
    ("val_mean_iou", "mean box overlap (IoU)", "#17becf"),
    ("val_presence_accuracy", "face / no face accuracy", "#8c564b"),
)


def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _epochs(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [_number(r.get("epoch")) or float(i + 1) for i, r in enumerate(rows)]


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title="epoch",
        yaxis_title=y_title,
        height=340,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0},
        hovermode="x unified",
    )
    fig.update_xaxes(rangemode="tozero", dtick=None)
    return fig


def loss_figure(history_rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Loss per epoch: total, class and box loss, solid for train and dashed for validation.

    ``history_rows``: rows of a run's ``history.csv`` (:func:`facetrack.jobs.read_history`).
    A column that is missing (or has no number in any row) gets no trace, so a
    history with both train and validation columns gives 6 traces.
    """
    fig = go.Figure()
    x = _epochs(history_rows)
    for column, name, colour, dashed in _LOSS_SERIES:
        y = [_number(r.get(column)) for r in history_rows]
        if not any(v is not None for v in y):
            continue
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=name,
                mode="lines+markers",
                line={"color": colour, "dash": "dash" if dashed else "solid"},
            )
        )
    return _layout(fig, "Loss (lower is better)", "loss")


def score_figure(history_rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Validation AP@0.5 over every face, score, mean IoU and presence accuracy per epoch (0..1, higher is better).

    The score is left out when it is the AP itself (the checkpoint score of runs trained before the
    score became the mean of the AP and the presence accuracy).
    """
    fig = go.Figure()
    x = _epochs(history_rows)
    ap = [_number(r.get("val_ap50")) for r in history_rows]
    for column, name, colour in _SCORE_SERIES:
        y = [_number(r.get(column)) for r in history_rows]
        if not any(v is not None for v in y) or (column == "val_score" and y == ap):
            continue
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": colour}))
    fig = _layout(fig, "Validation (higher is better)", "0 to 1")
    fig.update_yaxes(range=[0, 1.02])
    return fig
