"""The one model-selection rule (pixelcam.train.selection): B-CL, B-LOC with its accuracy
guard, and the tracker that keeps B-LOC checkpoints during a run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pixelcam.train.selection import BestLocTracker, best_cl_epoch, best_loc_epoch


def _history(rows: list[tuple[float | None, float | None]]) -> list[dict]:
    return [
        {"epoch": e, "valcl_acc": acc, "valpx_pxap": loc, "valpx_pxap_m": loc}
        for e, (acc, loc) in enumerate(rows)
    ]


def test_b_cl_is_the_best_accuracy_later_on_ties():
    assert best_cl_epoch(_history([(50, 1), (80, 1), (80, 1), (70, 1)])) == 2
    assert best_cl_epoch(_history([(None, 1), (None, 1)])) == 1  # no classifier: latest


def test_b_loc_guard_compares_with_the_whole_runs_best_accuracy():
    # epoch 1: untrained classifier (acc 50) with a lucky PxAP; the run reaches 95 later
    history = _history([(50, 60), (50, 90), (95, 70), (96, 75), (60, 99)])
    assert best_loc_epoch(history, margin=10) == 3  # 1 and 4 are too far below 96
    assert best_loc_epoch(history, margin=10, guard=False) == 4
    assert best_loc_epoch(history, margin=50) == 4
    assert best_loc_epoch(_history([(50, 80)])) == 0  # a 0-epoch run
    assert best_loc_epoch(_history([(50, None), (60, None)])) is None


def _write_last(out: Path, epoch: int) -> None:
    for ext in (".safetensors", ".json"):
        (out / f"last{ext}").write_text(str(epoch))


rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 10).map(lambda v: v * 10.0)),
        st.one_of(st.none(), st.integers(0, 10).map(lambda v: v * 10.0)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, margin=st.sampled_from([0.0, 10.0, 25.0]), guard=st.booleans())
def test_tracker_files_always_hold_the_rules_choice(rows, margin, guard):
    """After every epoch, the tracked checkpoint is the model of the epoch that the
    hindsight rule picks over the history so far, and only Pareto candidates are kept."""
    history = _history(rows)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tracker = BestLocTracker(out, {"m": "best_loc"}, margin, guard=guard)
        for i, row in enumerate(history):
            _write_last(out, i)
            tracker.update(row)
            want = best_loc_epoch(history[: i + 1], "valpx_pxap_m", margin, guard)
            if want is None and i == 0:
                want = 0  # epoch 0's model is the fallback until epoch 1 is in
            if want is not None and (out / "best_loc.json").exists():
                assert (out / "best_loc.json").read_text() == str(want)
                assert (out / "best_loc.safetensors").read_text() == str(want)
            elif want is not None:
                raise AssertionError(f"no best_loc after epoch {i} (want {want})")
        if tracker.store.exists():
            assert len(list(tracker.store.iterdir())) <= 2 * len(history)
        # a resumed run rebuilds the same choice from the history alone
        again = BestLocTracker(out, {"m": "best_loc"}, margin, guard=guard)
        again.replay(history)
        assert again.chosen == tracker.chosen
