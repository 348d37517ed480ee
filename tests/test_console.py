"""What commands print (a2mae.console): bars with count, throughput and ETA; quiet and JSON modes."""

from __future__ import annotations

import io
import json
import re

from a2mae import console
from a2mae.console import Output


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_bar_final_line_has_count_unit_rate_and_duration():
    err = io.StringIO()
    out = Output("normal", io.StringIO(), err, final_lines=True)
    with console.use(out), console.progress("tile", 30, "sets") as bar:
        for _ in range(3):
            bar.advance(10)
    (line,) = err.getvalue().splitlines()
    assert line.startswith("tile") and "30/30 sets" in line
    assert "sets/s" in line or "s/set" in line  # throughput
    assert "in 0:00:0" in line  # the time it took, once finished


def test_bars_only_where_someone_looks():
    plain = io.StringIO()
    with console.use(Output("normal", io.StringIO(), plain)), console.progress("x", 2, "items") as bar:
        bar.advance(2)
    assert plain.getvalue() == ""  # no terminal, no final_lines: nothing
    tty = Terminal()
    with console.use(Output("normal", io.StringIO(), tty)), console.progress("x", 2, "items") as bar:
        bar.advance(2)
    assert "2/2 items" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.getvalue())  # drawn, in colour
    off = Terminal()
    with console.use(Output("normal", io.StringIO(), off)), console.progress("x", 2, "u", enabled=False) as b:
        b.advance(2)
    assert off.getvalue() == ""


def test_total_known_late_and_fields_shown():
    err = io.StringIO()
    out = Output("normal", io.StringIO(), err, final_lines=True)
    with console.use(out), console.progress("pretrain", None, "steps") as bar:
        bar.update(5, total=20, extra="loss 0.5000")
        bar.update(20, extra="loss 0.2500")
    line = err.getvalue().strip()
    assert "20/20 steps" in line and "loss 0.2500" in line


def test_nested_bars_share_one_display_and_both_are_shown():
    err = io.StringIO()
    out = Output("normal", io.StringIO(), err, final_lines=True)
    with console.use(out), console.progress("outer", 2, "arms") as outer:
        with console.progress("inner", 3, "steps") as inner:
            inner.advance(3)
        outer.advance(2)
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("outer") and lines[1].startswith("inner")


def test_quiet_and_json_modes_print_only_what_they_promise():
    for mode in ("quiet", "json"):
        out, err = io.StringIO(), Terminal()
        o = Output(mode, out, err, final_lines=True)
        with console.use(o), console.progress("x", 2, "items") as bar:
            bar.advance(2)
        o.line("a human line")
        o.json({"b": 1, "a": [1, 2]})
        assert err.getvalue() == ""
        if mode == "quiet":
            assert out.getvalue() == ""
        else:
            assert json.loads(out.getvalue()) == {"a": [1, 2], "b": 1}
    out = io.StringIO()
    o = Output("normal", out, io.StringIO())
    o.line("shown")
    o.json({"not": "shown"})
    assert out.getvalue() == "shown\n"


def test_lines_without_a_command_are_silent_and_use_restores():
    assert console.current() is None
    console.line("nobody asked")  # library use: no output
    o = Output("normal", io.StringIO(), io.StringIO())
    with console.use(o):
        assert console.current() is o
        console.line("stage")
    assert console.current() is None and o.out.getvalue() == "stage\n"


def test_a_finetune_bar_ends_at_its_total(tmp_path):
    """The demo's last fine-tune line read "ft pretrained 4/5 steps": steps count from 0."""
    import io

    from a2mae import console
    from a2mae.finetune.tracking import step_progress

    out, err = io.StringIO(), io.StringIO()
    with (
        console.use(console.Output("normal", out, err, final_lines=True)),
        step_progress(5, "ft x", True) as step,
    ):
        for i in range(5):
            step(i, 0.5)
    assert "5/5" in err.getvalue() and "4/5" not in err.getvalue().splitlines()[-1]
